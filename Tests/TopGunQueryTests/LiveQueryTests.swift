import Testing
import TopGunCore
import TopGunQuery
import TopGunStore
import TopGunTestSupport

@Suite(.timeLimit(.minutes(2)))
struct LiveQueryTests {
    @Test func deltasMatchRecomputedResultsAfterEveryBatch() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir, options: .init(durability: .noSync))
            var rng = SplitMix64(seed: 11)
            _ = try db.store.apply((0..<200).map { Mutation.set(map: "docs", key: "k\($0)", value: randomDocument($0, &rng), ttlMillis: nil) })
            let query = db.query("docs").where("age" >= 50 && Field("city").exists)
            let live = try query.live()
            var current = Dictionary(uniqueKeysWithValues: live.initial.map { ($0.key, $0.value) })
            var iterator = live.deltas.makeAsyncIterator()
            for batch in 0..<30 {
                var mutations: [Mutation] = []
                for _ in 0..<20 {
                    let key = "k\(Int.random(in: 0..<250, using: &rng))"
                    mutations.append(
                        Int.random(in: 0..<5, using: &rng) == 0
                            ? .set(map: "docs", key: key, value: nil, ttlMillis: nil)
                            : .set(map: "docs", key: key, value: randomDocument(batch, &rng), ttlMillis: nil))
                }
                mutations.append(.set(map: "other", key: "x", value: 1, ttlMillis: nil))  // another map: no delta
                _ = try db.store.apply(mutations)
                let expected = Dictionary(uniqueKeysWithValues: try query.run().rows.map { ($0.key, $0.value) })
                // Drain deltas until the model matches (each change yields at most one delta).
                var drained = 0
                while current != expected, drained < mutations.count {
                    guard let delta = await iterator.next() else { break }
                    drained += 1
                    switch delta {
                    case .enter(let row), .update(let row): current[row.key] = row.value
                    case .leave(let key): current[key] = nil
                    }
                }
                #expect(current == expected, "batch \(batch)")
            }
        }
    }

    @Test func keyLiveQueryIgnoresOtherKeysAndSeesRemoteOps() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir, options: .init(durability: .noSync))
            let live = try db.query("users").where("id" == "u1").live()
            #expect(live.initial.isEmpty)
            _ = try db.store.apply([Mutation.set(map: "users", key: "u2", value: ["age": 1], ttlMillis: nil)])
            let remote = ReplicatedOperation.lww(
                map: "users", key: "u1", value: ["age": 2], timestamp: HLCTimestamp(millis: db.store.clockHighWater.millis, counter: 9, node: NodeID(77)))
            _ = try db.store.apply([remote])
            var iterator = live.deltas.makeAsyncIterator()
            let first = await iterator.next()
            guard case .enter(let row)? = first else {
                Issue.record("expected enter, got \(String(describing: first))")
                return
            }
            #expect(row.key == "u1" && row.value[path: "age"] == 2)
        }
    }
}
