import Foundation
import Testing
import TopGunTestSupport

@testable import LMDB

/// A write transaction looks keys up through a cursor, and a put of the key just
/// looked up overwrites it where the cursor rests (`MDB_CURRENT`). Random transactions
/// mixing lookups, puts, reserves, deletes, cursor deletes, nested lookups, values that
/// change size or move to overflow pages, aborted transactions and map growth must leave
/// exactly what a dictionary model holds.
@Suite(.timeLimit(.minutes(2)))
struct WriteLookupTests {
    @Test func writesAfterLookupsMatchAModel() throws {
        try withTemporaryDirectory { dir in
            let env = try Environment(path: dir, options: .init(databases: ["a", "b"], mapSize: 1 << 16, durability: .noSync))
            let dbs = [env.database("a"), env.database("b")]
            var model: [[[UInt8]: [UInt8]]] = [[:], [:]]
            var rng = SplitMix64(seed: 0x9e37_79b9_7f4a_7c15)
            func below(_ n: Int) -> Int { Int.random(in: 0..<n, using: &rng) }
            let sizes = [0, 1, 7, 16, 100, 500, 2_000, 2_100, 4_000, 9_000, 20_000]
            for round in 0..<600 {
                var pending = model
                do {
                    try env.write { txn in
                        pending = model
                        for _ in 0..<(below(40) + 1) {
                            let d = below(2)
                            let key = Array("k\(below(40))".utf8)
                            let other = Array("k\(below(40))".utf8)
                            let value = [UInt8](repeating: UInt8(truncatingIfNeeded: below(256)), count: sizes[below(sizes.count)])
                            switch below(8) {
                            case 0:  // lookup, a lookup elsewhere, then put the first key
                                #expect(try txn.value(forKey: key, in: dbs[d]) == pending[d][key])
                                if below(2) == 0 { _ = try txn.value(forKey: other, in: dbs[1 - d]) }
                                try txn.put(value, forKey: key, in: dbs[d])
                                pending[d][key] = value
                            case 1:  // lookup, then reserve and fill in place
                                #expect(try txn.value(forKey: key, in: dbs[d]) == pending[d][key])
                                try key.withUnsafeBytes { k in
                                    try txn.reserve(value.count, forKey: k, in: dbs[d]) { out in
                                        if !value.isEmpty { out.copyMemory(from: UnsafeRawBufferPointer(start: value, count: value.count)) }
                                    }
                                }
                                pending[d][key] = value
                            case 2:  // a lookup nested in another, then put the outer key
                                _ = try txn.withValue(forKey: key, in: dbs[d]) { _ in _ = try? txn.value(forKey: other, in: dbs[d]) }
                                try txn.put(value, forKey: key, in: dbs[d])
                                pending[d][key] = value
                            case 3:
                                _ = try txn.value(forKey: key, in: dbs[d])
                                try txn.delete(key, in: dbs[d])
                                pending[d][key] = nil
                            case 4:  // a put of another key between lookup and put
                                _ = try txn.value(forKey: key, in: dbs[d])
                                try txn.put(value, forKey: other, in: dbs[d])
                                try txn.put(value.reversed(), forKey: key, in: dbs[d])
                                pending[d][other] = value
                                pending[d][key] = value.reversed()
                            case 5:  // a cursor delete between lookup and put
                                _ = try txn.value(forKey: key, in: dbs[d])
                                try txn.withCursor(on: dbs[d]) { cursor in
                                    if try cursor.first() {
                                        let first = cursor.withCurrent { k, _ in k.withUnsafeBytes { Array($0) } }
                                        try txn.deleteEntry(at: &cursor)
                                        pending[d][first] = nil
                                    }
                                }
                                try txn.put(value, forKey: key, in: dbs[d])
                                pending[d][key] = value
                            case 6:  // no-overwrite on a key that may exist aborts the transaction
                                _ = try txn.value(forKey: key, in: dbs[d])
                                try txn.put(value, forKey: key, in: dbs[d], flags: .noOverwrite)
                                pending[d][key] = value
                            default:
                                try txn.put(value, forKey: key, in: dbs[d])
                                pending[d][key] = value
                            }
                        }
                    }
                    model = pending
                } catch let error as LMDBError where error.code == .keyExists {
                    // Aborted: nothing of the transaction was applied.
                }
                try env.read { txn in
                    for d in 0..<2 {
                        var seen: [[UInt8]: [UInt8]] = [:]
                        try txn.forEach(in: dbs[d]) { k, v in
                            seen[k.withUnsafeBytes { Array($0) }] = v.withUnsafeBytes { Array($0) }
                            return true
                        }
                        let differing = Set(seen.keys).union(model[d].keys).filter { seen[$0] != model[d][$0] }
                        #expect(differing.isEmpty, "database \(d) after round \(round): \(differing.map { String(decoding: $0, as: UTF8.self) }.sorted()) differ")
                    }
                }
            }
            env.close()
        }
    }
}
