import Testing
import TopGunCore
import TopGunQuery
import TopGunTestSupport

@testable import TopGunStore

/// A damaged index entry never drops or invents a row: the query answers from the
/// records and says so.
struct DamagedIndexTests {
    static func withIndexedStore(_ body: (Store) throws -> Void) throws {
        try withTemporaryDirectory { dir in
            let store = try Store(path: dir, options: .init(durability: .noSync, nodeID: NodeID(1)))
            _ = try store.apply((0..<200).map { Mutation.set(map: "m", key: "k\($0)", value: ["n": .int(Int64($0))], ttlMillis: nil) })
            try store.createIndex(map: "m", path: "n", kind: .range)
            try body(store)
        }
    }

    /// The entry's value (the record it names) damaged: the row was dropped.
    @Test func anEntryNamingAnotherRecordFallsBackToTheRecords() throws {
        try Self.withIndexedStore { store in
            let expected = try Query(store: store, map: "m").where(Field("n").between(50, 59)).run().rows.map(\.key)
            #expect(expected.count == 10)
            try store.write { txn in
                var target: ([UInt8], [UInt8])?
                try txn.forEach(in: store.dbs.index) { k, v in
                    let value = v.withUnsafeBytes { Array($0) }
                    if String(decoding: value[2...], as: UTF8.self) == "k55" { target = (k.withUnsafeBytes { Array($0) }, value) }
                    return target == nil
                }
                var (key, value) = try #require(target)
                value[value.count - 1] ^= 0x01
                try txn.put(value, forKey: key, in: store.dbs.index)
            }
            let result = try Query(store: store, map: "m").where(Field("n").between(50, 59)).run()
            #expect(result.rows.map(\.key).sorted() == expected.sorted())
            #expect(result.explanation.indexDamaged)
            #expect(store.counters.snapshot.indexEntriesDamaged == 1)
        }
    }

    /// The entry's indexed value damaged so that it lands inside another range: the
    /// record it names holds another value, and no row is invented.
    @Test func anEntryFiledUnderAnotherValueFallsBackToTheRecords() throws {
        try Self.withIndexedStore { store in
            let index = try #require(store.indexes(of: "m").first)
            try store.write { txn in
                let key = Layout.indexKey(index, value: .int(150), partition: Partitioner.partition(of: "k150"), key: "k150")
                let value = try #require(try txn.value(forKey: key, in: store.dbs.index))
                _ = try txn.delete(key, in: store.dbs.index)
                try txn.put(value, forKey: Layout.indexKey(index, value: .int(55), partition: Partitioner.partition(of: "k150"), key: "k150"), in: store.dbs.index)
            }
            let result = try Query(store: store, map: "m").where(Field("n").between(50, 59)).run()
            #expect(result.rows.map(\.key).sorted() == (50...59).map { "k\($0)" }.sorted())
            #expect(result.explanation.indexDamaged)
            #expect(try store.check().problems.isEmpty == false)
        }
    }
}
