import Foundation
import LMDB
import Testing
import TopGunTestSupport

@Suite(.timeLimit(.minutes(2)))
struct EnvironmentTests {
    let names = ["a", "b"]

    @Test func putGetDeleteRoundTrip() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: names))
            let a = env.database("a")
            try env.write { txn in
                try txn.put([1, 2, 3], forKey: Array("k1".utf8), in: a)
                try txn.put([4], forKey: Array("k2".utf8), in: a)
            }
            try env.read { txn in
                #expect(try txn.value(forKey: Array("k1".utf8), in: a) == [1, 2, 3])
                #expect(try txn.value(forKey: Array("missing".utf8), in: a) == nil)
                let sum = try txn.withValue(forKey: Array("k1".utf8), in: a) { span in
                    (0..<span.byteCount).reduce(0) { $0 + Int(span.unsafeLoad(fromByteOffset: $1, as: UInt8.self)) }
                }
                #expect(sum == 6)
            }
            let existed = try env.write { txn in try txn.delete(Array("k1".utf8), in: a) }
            let existedAgain = try env.write { txn in try txn.delete(Array("k1".utf8), in: a) }
            #expect(existed && !existedAgain)
            #expect(try env.read { try $0.statistics(of: a).entries } == 1)
        }
    }

    @Test func throwingBodyAbortsEverything() throws {
        struct Boom: Error {}
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: names))
            let a = env.database("a")
            #expect(throws: Boom.self) {
                try env.write { txn in
                    try txn.put([1], forKey: [1], in: a)
                    try txn.put([2], forKey: [2], in: a)
                    throw Boom()
                }
            }
            #expect(try env.read { try $0.statistics(of: a).entries } == 0)
        }
    }

    @Test func reopenKeepsCommittedData() throws {
        try withTemporaryDirectory { dir in
            do {
                let env = try Environment(path: dir, options: .init(databases: names))
                try env.write { try $0.put([9], forKey: [1], in: env.database("b")) }
            }
            let env = try Environment(path: dir, options: .init(databases: names))
            #expect(try env.read { try $0.value(forKey: [1], in: env.database("b")) } == [9])
        }
    }

    /// Writes are methods of `WriteTransaction` only (a put inside `read` does not
    /// compile); a write started inside a read of the same environment on the same
    /// thread would deadlock when the map grows, so it stops the process with a message.
    @Test func aWriteInsideAReadStopsInsteadOfDeadlocking() async {
        await #expect(processExitsWith: .failure) {
            try withTemporaryDirectory { dir in
                let env = try Environment(path: dir, options: .init(databases: ["a"]))
                try env.read { _ in try env.write { txn in try txn.put([1], forKey: [1], in: env.database("a")) } }
            }
        }
    }

    @Test func aReadInsideAReadAndAWriteAfterItAreFine() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: ["a"]))
            let nested = try env.read { _ in try env.read { try $0.value(forKey: [1], in: env.database("a")) } }
            #expect(nested == nil)
            try env.write { txn in try txn.put([2], forKey: [1], in: env.database("a")) }
            #expect(try env.read { try $0.value(forKey: [1], in: env.database("a")) } == [2])
        }
    }

    @Test func aReadOnlyEnvironmentRefusesWrites() throws {
        try withTemporaryDirectory { dir in
            _ = try Environment(path: dir, options: .init(databases: ["a"]))
            let env = try Environment(path: dir, options: .init(databases: ["a"], readOnly: true))
            let error = #expect(throws: LMDBError.self) {
                try env.write { txn in try txn.put([1], forKey: [1], in: env.database("a")) }
            }
            #expect(error?.code == .readOnlyTransaction)
        }
    }

    @Test func pathThatIsAFileIsRejected() throws {
        try withTemporaryDirectory { dir in
            let file = dir + "/plain"
            _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
            let error = #expect(throws: LMDBError.self) { try Environment(path: file) }
            #expect(error?.code == .notADirectory)
        }
    }

    @Test func corruptedEnvironmentIsTypedError() throws {
        try withTemporaryDirectory { dir in
            let garbage = Data((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
            _ = FileManager.default.createFile(atPath: dir + "/data.mdb", contents: garbage)
            let error = #expect(throws: LMDBError.self) { try Environment(path: dir, options: .init(databases: ["a"])) }
            #expect(error?.code == .invalid)
        }
    }

    @Test func secondOpenInSameProcessIsRefused() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir)
            let error = #expect(throws: LMDBError.self) { try Environment(path: dir + "/.") }
            #expect(error?.code == .alreadyOpen)
            withExtendedLifetime(env) {}
        }
    }

    @Test func mapFullGrowsAndRetries() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: names, mapSize: 64 << 10))
            let a = env.database("a")
            var runs = 0
            try env.write { txn in
                runs += 1
                for i in 0..<2_000 {
                    try txn.put([UInt8](repeating: 7, count: 500), forKey: bigEndian(i), in: a)
                }
            }
            #expect(runs > 1)
            #expect(env.mapSize > 64 << 10)
            #expect(try env.read { try $0.statistics(of: a).entries } == 2_000)
        }
    }

    @Test func mapFullBeyondMaximumIsClearErrorAndWritesNothing() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(
                path: dir, options: .init(databases: names, mapSize: 64 << 10, maxMapSize: 256 << 10))
            let a = env.database("a")
            try env.write { try $0.put([1], forKey: [0, 0, 0, 0], in: a) }
            let error = #expect(throws: LMDBError.self) {
                try env.write { txn in
                    for i in 1..<5_000 { try txn.put([UInt8](repeating: 7, count: 500), forKey: bigEndian(i), in: a) }
                }
            }
            #expect(error?.code == .mapFull)
            #expect(try env.read { try $0.statistics(of: a).entries } == 1)
        }
    }

    @Test func appendRejectsOutOfOrderKeys() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: names))
            let a = env.database("a")
            try env.write { txn in
                for i in 0..<100 { try txn.put([1], forKey: bigEndian(i), in: a, flags: .append) }
            }
            let error = #expect(throws: LMDBError.self) {
                try env.write { try $0.put([1], forKey: bigEndian(5), in: a, flags: .append) }
            }
            #expect(error?.code == .keyExists)
        }
    }

    @Test func poisonedTransactionAbortsWithFirstError() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: names))
            let a = env.database("a")
            try env.write { try $0.put([1], forKey: [5], in: a) }
            let error = #expect(throws: LMDBError.self) {
                try env.write { txn in
                    try txn.put([2], forKey: [6], in: a)
                    _ = try? txn.put([1], forKey: [1], in: a, flags: .append)  // fails: out of order
                    try txn.put([3], forKey: [7], in: a)  // refused: poisoned
                }
            }
            #expect(error?.code == .keyExists)
            #expect(try env.read { try $0.statistics(of: a).entries } == 1)
        }
    }

    @Test func snapshotReadsDoNotSeeLaterCommits() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: names))
            let a = env.database("a")
            try env.write { try $0.put([1], forKey: [1], in: a) }
            try env.read { txn in
                let committed = DispatchSemaphore(value: 0)
                Thread {
                    try? env.write { try $0.put([2], forKey: [1], in: a) }
                    committed.signal()
                }.start()
                committed.wait()
                let seen = try txn.value(forKey: [1], in: a)
                #expect(seen == [1])
            }
            let after = try env.read { try $0.value(forKey: [1], in: a) }
            #expect(after == [2])
        }
    }
}

func bigEndian(_ i: Int) -> [UInt8] {
    withUnsafeBytes(of: UInt32(i).bigEndian) { Array($0) }
}
