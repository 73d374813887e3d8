import Foundation
import LMDB
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

struct User: Codable, Equatable, Sendable {
    var name: String
    var age: Int
}

@Suite(.timeLimit(.minutes(2)))
struct DatabaseTests {
    @Test func typedMapCounterORMapAndReopen() async throws {
        try await withTemporaryDirectory { dir in
            do {
                let db = try Database(path: dir, options: .init(durability: .durable))
                let users = db.map("users", of: User.self)
                try await users.set("u1", User(name: "Ann", age: 31))
                try await users.set("u2", User(name: "Bo", age: 17))
                try await users.delete("u2")
                try await db.counter("likes").increment("post-1")
                try await db.counter("likes").increment("post-1", by: 4)
                try await db.counter("likes").decrement("post-1")
                try await db.orMap("tags").add("post-1", "swift")
                try await db.orMap("tags").add("post-1", "lmdb")
                try await db.orMap("tags").remove("post-1", "lmdb")
                db.close()
            }
            let db = try Database(path: dir)
            let users = db.map("users", of: User.self)
            #expect(try users.get("u1") == User(name: "Ann", age: 31))
            #expect(try users.get("u2") == nil)
            #expect(try users.all().map(\.key) == ["u1"])
            #expect(try db.counter("likes").value("post-1") == 4)
            #expect(try db.orMap("tags").values("post-1") == ["swift"])
        }
    }

    /// Regression: a NaN compared unequal to itself, so an OR-Map could never remove it.
    @Test func aNaNInAnORMapCanBeRemoved() async throws {
        try await withTemporaryDatabase { db in
            try await db.orMap("readings").add("r", .double(.nan))
            try await db.orMap("readings").add("r", 1.5)
            try await db.orMap("readings").remove("r", .double(.nan))
            #expect(try db.orMap("readings").values("r") == [1.5])
        }
    }

    /// `close()` closes the file: what was queued is committed, later calls throw
    /// `.closed` (even through handles still held), change streams end, and the
    /// directory opens again at once.
    @Test func closeIsRealAndTheDirectoryReopensAtOnce() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir)
            let notes = db.map("notes", of: String.self)
            let changes = db.changes()
            try await notes.set("a", "kept")
            db.close()
            db.close()
            let readError = #expect(throws: StoreError.self) { try notes.get("a") }
            #expect(readError?.code == .closed)
            let writeError = await #expect(throws: StoreError.self) { try await notes.set("b", "lost") }
            #expect(writeError?.code == .closed)
            var seen = 0
            for await _ in changes { seen += 1 }
            #expect(seen == 1)
            let again = try Database(path: dir)
            #expect(try again.map("notes", of: String.self).get("a") == "kept")
            #expect(try again.check().isConsistent)
        }
    }

    /// An index created before its map has any record is there for the first write.
    @Test func anIndexCanBeCreatedBeforeTheFirstWrite() async throws {
        try await withTemporaryDatabase { db in
            let index = try db.createIndex(map: "notes", path: "n", kind: .range)
            #expect(index.isReady)
            #expect(db.indexes(of: "notes").map(\.path) == ["n"])
            try await db.map("notes", of: [String: Int].self).set("k", ["n": 3])
            #expect(try db.check().indexEntriesChecked == 1)
            let refused = #expect(throws: StoreError.self) { try db.createIndex(map: "notes", path: "n", kind: .hash) }
            #expect(refused?.code == .kindMismatch)
            try await db.counter("likes").increment("p")
            #expect(throws: StoreError.self) { try db.createIndex(map: "likes", path: "n", kind: .range) }
        }
    }

    @Test func ttlExpiresOnRead() async throws {
        try await withTemporaryDirectory { dir in
            let clock = ManualWallClock(1_000_000)
            let db = try Database(path: dir, options: .init(wallClock: clock))
            let sessions = db.map("sessions", of: String.self)
            try await sessions.set("s", "token", ttl: .milliseconds(100))
            clock.advance(by: 100)
            #expect(try sessions.get("s") == "token")
            clock.advance(by: 1)
            #expect(try sessions.get("s") == nil)
        }
    }

    @Test func concurrentWritersAreGroupCommittedAndEachGetsItsResult() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir, options: .init(durability: .durable))
            let counters = db.counter("c")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        for i in 0..<50 { try await counters.increment("k\(task % 4)", by: Int64(i % 3 + 1)) }
                    }
                }
                try await group.waitForAll()
            }
            var total: Int64 = 0
            for k in 0..<4 { total += try counters.value("k\(k)") }
            var expected: Int64 = 0
            for i in 0..<50 { expected += Int64(i % 3 + 1) }
            #expect(total == 16 * expected)
            let log = try db.store.operations(after: nil)
            #expect(log.count == 16 * 50)
            // Group commit: fewer LMDB transactions than writes.
            let info = db.store.environmentInfo
            #expect(info.lastTransactionID < 16 * 50)
        }
    }

    @Test func atomicUpdateFromManyTasks() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir, options: .init(durability: .noSync))
            let counts = db.map("counts", of: Int.self)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask { for _ in 0..<25 { try await counts.update("n") { ($0 ?? 0) + 1 } } }
                }
                try await group.waitForAll()
            }
            #expect(try counts.get("n") == 200)
            struct Refuse: Error, Equatable {}
            let error = await #expect(throws: StoreError.self) { try await counts.update("n") { _ in throw Refuse() } }
            #expect(error?.code == .rejected)
            #expect((error?.underlying as? UpdateFailure)?.error is Refuse)
            #expect(try counts.get("n") == 200)
        }
    }

    @Test func changeFeedDeliversCommittedChangesInOrder() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir, options: .init(durability: .noSync))
            let stream = db.changes()
            let users = db.map("users", of: User.self)
            try await users.set("a", User(name: "A", age: 1))
            try await users.set("a", User(name: "A", age: 2))
            try await db.counter("c").increment("x")
            var received: [Change] = []
            for await change in stream {
                received.append(change)
                if received.count == 3 { break }
            }
            #expect(received.map(\.key) == ["a", "a", "x"])
            #expect(zip(received, received.dropFirst()).allSatisfy { $0.sequence < $1.sequence })
            guard case .lww(let old)? = received[1].old, case .lww(let new) = received[1].new else {
                Issue.record("expected LWW old/new")
                return
            }
            #expect(old.value?[path: "age"] == 1 && new.value?[path: "age"] == 2)
        }
    }

    @Test func slowConsumerLosesOldestAndSeesTheGap() async throws {
        try await withTemporaryDirectory { dir in
            let store = try Store(path: dir, options: .init(durability: .noSync, changeBufferSize: 10))
            let stream = store.changes()
            for i in 0..<30 { _ = try store.apply([.set(map: "m", key: "k\(i)", value: .int(Int64(i)), ttlMillis: nil)]) }
            var keys: [String] = []
            for await change in stream {
                keys.append(change.key)
                if keys.count == 10 { break }
            }
            #expect(keys == (20..<30).map { "k\($0)" })
        }
    }

    @Test func reopenWithClockGoneBackwardsNeverReissuesStamps() throws {
        try withTemporaryDirectory { dir in
            let clock = ManualWallClock(2_000_000)
            var last: HLCTimestamp
            do {
                let store = try Store(path: dir, options: .init(wallClock: clock))
                _ = try store.apply((0..<100).map { Mutation.set(map: "m", key: "k\($0)", value: 1, ttlMillis: nil) })
                last = try #require(try store.lastSequence())
            }
            clock.set(1_000)  // the wall clock jumped back
            let store = try Store(path: dir, options: .init(wallClock: clock))
            let out = try store.apply([Mutation.set(map: "m", key: "after", value: 2, ttlMillis: nil)])
            guard case .applied(let stamp) = out[0] else {
                Issue.record("not applied")
                return
            }
            #expect(stamp > last)
        }
    }

    @Test func futureSchemaVersionIsRefused() throws {
        try withTemporaryDirectory { dir in
            do {
                let env = try Environment(path: dir, options: .init(databases: ["meta"]))
                try env.write { try $0.put([0, 0, 0, 99], forKey: Array("schema".utf8), in: env.database("meta")) }
            }
            let error = #expect(throws: StoreError.self) { try Store(path: dir) }
            #expect(error?.code == .unsupportedSchema)
        }
    }

    @Test func corruptRecordBytesGiveTypedError() throws {
        try withTemporaryDirectory { dir in
            do {
                let store = try Store(path: dir)
                _ = try store.apply([Mutation.set(map: "m", key: "k", value: "v", ttlMillis: nil)])
            }
            do {
                let env = try Environment(path: dir, options: .init(databases: ["records"]))
                let records = env.database("records")
                try env.write { txn in
                    var key: [UInt8] = []
                    try txn.forEach(in: records) { k, _ in
                        key = k.withUnsafeBytes { Array($0) }
                        return false
                    }
                    var value = try #require(try txn.value(forKey: key, in: records))
                    value[value.count - 1] = 0xc1  // a reserved MessagePack byte
                    try txn.put(value, forKey: key, in: records)
                }
            }
            let store = try Store(path: dir)
            let error = #expect(throws: StoreError.self) { try store.state(map: "m", key: "k") }
            #expect(error?.code == .corruptRecord)
        }
    }
}
