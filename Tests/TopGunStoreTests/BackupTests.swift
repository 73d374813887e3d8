import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@Suite(.timeLimit(.minutes(1)))
struct BackupTests {
    /// A backup taken while a writer runs restores to a database that passes `check`,
    /// holds every write acknowledged before the backup began, and has a new node id.
    @Test func aBackupDuringWritesRestoresWithEveryEarlierWriteAndAFreshID() async throws {
        try await withTemporaryDirectory { root in
            let db = try Database(path: root + "/live", options: .init(durability: .noSync))
            let writer = Task {
                var n = 0
                while !Task.isCancelled {
                    try await db.map("m", of: Int.self).set("k\(n)", n)
                    n += 1
                }
                return n
            }
            // Some writes are acknowledged before the backup begins.
            while try db.store.count(map: "m") < 200 { await Task.yield() }
            let acknowledged = try db.store.count(map: "m")
            let backup = try db.store.backup(to: root + "/backup")
            writer.cancel()
            let written = try await writer.value
            #expect(backup.check.isConsistent && backup.nodeID == db.store.nodeID)
            let restored = try Store.restore(from: root + "/backup", to: root + "/restored")
            #expect(restored.check.isConsistent)
            #expect(restored.nodeID != db.store.nodeID, "a restored copy takes a fresh id")
            let copy = try Store(path: root + "/restored", options: .init(readOnly: true))
            for i in 0..<acknowledged {
                #expect(try copy.state(map: "m", key: "k\(i)") != nil, "write \(i) of \(written)")
            }
            #expect(throws: StoreError.self) { try db.store.backup(to: root + "/backup") }
            let same = try Store.restore(from: root + "/backup", to: root + "/same", keepNodeID: true)
            #expect(same.nodeID == db.store.nodeID)
        }
    }

    /// A changed byte in a stored value is a corruption error naming the record, never
    /// a wrong value.
    @Test func aCorruptedValueIsAnErrorOnEveryRead() throws {
        try withTemporaryDirectory { dir in
            let canary = "CANARY-VALUE-0123456789"
            do {
                let store = try Store(path: dir, options: .init(durability: .durable))
                _ = try store.apply([Mutation.set(map: "users", key: "k", value: .string(canary), ttlMillis: nil)])
            }
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/data.mdb")))
            let needle = Array(canary.utf8)
            let at = try #require((0..<(bytes.count - needle.count)).first { Array(bytes[$0..<$0 + needle.count]) == needle })
            bytes[at + 7] ^= 0x01  // still valid UTF-8, still MessagePack: only the digest knows
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
            let store = try Store(path: dir, options: .init(readOnly: true))
            let error = #expect(throws: StoreError.self) { try store.state(map: "users", key: "k") }
            #expect(error?.code == .corruptRecord && error?.message.contains("users/k") == true, "\(String(describing: error))")
            #expect(throws: StoreError.self) { try store.scan(map: "users") { _, _ in true } }
            #expect(!(try store.check().isConsistent))
        }
    }

    @Test func readOnlyOpensCreateNothing() throws {
        try withTemporaryDirectory { dir in
            let error = #expect(throws: StoreError.self) { try Store(path: dir + "/missing", options: .init(readOnly: true)) }
            #expect(error?.code == .notFound)
            #expect(!FileManager.default.fileExists(atPath: dir + "/missing"))
            let empty = dir + "/empty"
            try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
            #expect(throws: StoreError.self) { try Store(path: empty, options: .init(readOnly: true)) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: empty).isEmpty)
        }
    }
}
