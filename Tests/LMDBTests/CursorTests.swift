import LMDB
import Testing
import TopGunTestSupport

struct CursorTests {
    func withFilledEnvironment(_ body: (Environment, Database) throws -> Void) throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: ["t"]))
            let t = env.database("t")
            try env.write { txn in
                for key in ["a", "ab", "abc", "abd", "b", "ba", "c"] {
                    try txn.put(Array(key.utf8), forKey: Array(key.utf8), in: t)
                }
                try txn.put([0xFF], forKey: [0xFF], in: t)
                try txn.put([0xFF, 0xFF, 1], forKey: [0xFF, 0xFF, 1], in: t)
            }
            try body(env, t)
        }
    }

    func keys(_ env: Environment, _ db: Database, _ range: KeyRange, reverse: Bool = false) throws -> [[UInt8]] {
        try env.read { txn in
            var out: [[UInt8]] = []
            try txn.forEach(in: db, range: range, reverse: reverse) { key, _ in
                out.append(key.withUnsafeBytes { Array($0) })
                return true
            }
            return out
        }
    }

    @Test func prefixForwardAndReverse() throws {
        try withFilledEnvironment { env, t in
            let forward = try keys(env, t, .prefix(Array("ab".utf8))).map { String(decoding: $0, as: UTF8.self) }
            #expect(forward == ["ab", "abc", "abd"])
            let backward = try keys(env, t, .prefix(Array("ab".utf8)), reverse: true)
                .map { String(decoding: $0, as: UTF8.self) }
            #expect(backward == ["abd", "abc", "ab"])
            #expect(try keys(env, t, .prefix([0xFF])) == [[0xFF], [0xFF, 0xFF, 1]])
            #expect(try keys(env, t, .prefix([0xFF, 0xFF]), reverse: true) == [[0xFF, 0xFF, 1]])
        }
    }

    @Test func fromToBounds() throws {
        try withFilledEnvironment { env, t in
            let range = KeyRange(from: Array("abc".utf8), to: Array("ba".utf8))
            let forward = try keys(env, t, range).map { String(decoding: $0, as: UTF8.self) }
            let backward = try keys(env, t, range, reverse: true).map { String(decoding: $0, as: UTF8.self) }
            let all = try keys(env, t, .all)
            let allReversed = try keys(env, t, .all, reverse: true)
            #expect(forward == ["abc", "abd", "b"])
            #expect(backward == ["b", "abd", "abc"])
            #expect(all.count == 9)
            #expect(allReversed == all.reversed())
        }
    }

    @Test func earlyStopAndDeleteThroughCursor() throws {
        try withFilledEnvironment { env, t in
            try env.write { txn in
                try txn.withCursor(on: t) { cursor in
                    var more = try cursor.seek(atLeast: Array("b".utf8))
                    while more {
                        try txn.deleteEntry(at: &cursor)
                        more = try cursor.withCurrent { key, _ in key.byteCount > 0 } && (try cursor.seek(atLeast: Array("b".utf8)))
                    }
                }
            }
            #expect(try keys(env, t, .all).map { String(decoding: $0, as: UTF8.self) } == ["a", "ab", "abc", "abd"])
        }
    }
}
