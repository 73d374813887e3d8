import Foundation
import LMDB
import Testing
import TopGunCore
import TopGunTestSupport

@testable import TopGunStore

/// The file verifier catches page damage that keeps every offset in bounds but breaks
/// what liblmdb relies on: keys in order, nodes that do not overlap. Such a file made
/// queries miss whole ranges of an index, and liblmdb's writes spread the damage.
struct FileVerifierTests {
    /// A database of records "k0000"… whose bytes a test changes in place.
    static func withFile(_ body: (_ dir: String, _ bytes: inout [UInt8]) throws -> Void) throws {
        try withTemporaryDirectory { dir in
            do {
                let store = try Store(path: dir, options: .init(durability: .noSync, nodeID: NodeID(1)))
                _ = try store.apply((0..<400).map { Mutation.set(map: "m", key: String(format: "k%04d", $0), value: .int(Int64($0)), ttlMillis: nil) })
            }
            #expect(Store.verifyFile(path: dir).isIntact)
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/data.mdb")))
            try body(dir, &bytes)
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
        }
    }

    /// Where record key `key` starts in leaf nodes of the records tree (every copy:
    /// pages written by earlier transactions hold older ones): after a node header
    /// whose key size is the record key's (map id 4, partition 2, then the key).
    static func recordNodes(of key: String, in bytes: [UInt8]) throws -> [Int] {
        let needle = Array(key.utf8)
        let keySize = 6 + needle.count
        let found = bytes.indices.filter { i in
            i >= 14 && bytes[i...].starts(with: needle) && Int(bytes[i - 8]) | Int(bytes[i - 7]) << 8 == keySize
        }
        #expect(!found.isEmpty)
        return found.map { $0 - 6 }
    }

    @Test func aKeyOutOfOrderIsDamage() throws {
        try Self.withFile { dir, bytes in
            // The partition bytes of k0200's record key now say 0xFFFF: it sorts after the
            // keys that follow it.
            for at in try Self.recordNodes(of: "k0200", in: bytes) {
                bytes[at + 4] = 0xFF
                bytes[at + 5] = 0xFF
            }
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
            let report = Store.verifyFile(path: dir)
            #expect(report.problems.contains { $0.contains("out of order") }, "\(report.problems)")
            #expect(throws: StoreError.self) { _ = try Store(path: dir, options: .init(verification: .full)) }
        }
    }

    @Test func nodesThatOverlapAreDamage() throws {
        try Self.withFile { dir, bytes in
            // The node header before the key holds its data size (low 16 bits first).
            for at in try Self.recordNodes(of: "k0200", in: bytes) { bytes[at - 8] &+= 64 }
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
            let report = Store.verifyFile(path: dir)
            #expect(!report.isIntact, "\(report.problems)")
            #expect(report.problems.contains { $0.contains("overlap") || $0.contains("past the page end") }, "\(report.problems)")
        }
    }
}
