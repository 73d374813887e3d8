import CBaselines
import Foundation
import TopGunCore
import TopGunQuery
import TopGunStore

/// Measures the query executor on one store of N records `{"v": 0..<100000, "w": v, "pad": …}`:
/// a 1 %-selective range on the indexed `v` against the same range on the unindexed
/// `w` (a full scan), a key-equality query against a plain `get`, and the cost of
/// maintaining one range index on an LWW merge workload.
struct QueryBench {
    let config: Config

    func run() throws {
        let n = config.quick ? 100_000 : 1_000_000
        var rng = SplitMix64(seed: config.seed)
        let dir = NSTemporaryDirectory() + "topgun-qbench-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(path: dir, options: .init(durability: .noSync))
        let pad = Value.string(String(repeating: "p", count: 60))
        for start in stride(from: 0, to: n, by: 10_000) {
            _ = try store.apply((start..<min(start + 10_000, n)).map { i -> Mutation in
                let v = Int64.random(in: 0..<100_000, using: &rng)
                return .set(map: "q", key: "key-\(i)", value: ["v": .int(v), "w": .int(v), "pad": pad], ttlMillis: nil)
            })
        }
        let buildStart = tg_now()
        try store.createIndex(map: "q", path: "v", kind: .range, chunkSize: 50_000)
        let buildSeconds = tg_now() - buildStart

        let indexed = Query(store: store, map: "q").where(Field("v").between(10_000, 10_999))
        let scanned = Query(store: store, map: "q").where(Field("w").between(10_000, 10_999))
        let (ti, ri) = try time(runs: 5) { try indexed.run() }
        let (ts, rs) = try time(runs: 3) { try scanned.run() }
        guard ri.rows.map(\.key) == rs.rows.map(\.key) else { fatalError("index and scan disagree") }

        let keys = (0..<10_000).map { _ in "key-\(Int.random(in: 0..<n, using: &rng))" }
        let (tq, _) = try time(runs: 3) { for k in keys { _ = try Query(store: store, map: "q").where("id" == .string(k)).run() } }
        let (tg, _) = try time(runs: 3) { for k in keys { _ = try store.state(map: "q", key: k) } }
        let explanation = try Query(store: store, map: "q").where("id" == .string(keys[0])).explain()

        let (plain, withIndex) = try indexUpkeep(ops: config.quick ? 100_000 : 1_000_000, keys: config.quick ? 10_000 : 100_000)

        let rows: [(String, String)] = [
            ("records", "\(n)"),
            ("index build (v, range)", String(format: "%.2f s", buildSeconds)),
            ("range 1% via index", String(format: "%.2f ms, %d rows, %@", ti * 1_000, ri.rows.count, ri.explanation.description)),
            ("range 1% via full scan", String(format: "%.2f ms (%@)", ts * 1_000, rs.explanation.description)),
            ("index speed-up", String(format: "%.0f×", ts / ti)),
            ("key query vs get", String(format: "%.2f µs vs %.2f µs per lookup: %.2f× (%@)", tq * 100, tg * 100, tq / tg, explanation.description)),
            ("W1 merge without index", String(format: "%.0f ops/s", plain)),
            ("W1 merge with 1 range index", String(format: "%.0f ops/s (%.0f%% slower)", withIndex, (1 - withIndex / plain) * 100)),
        ]
        if config.json {
            print(#"{"records":\#(n),"index_build_s":\#(round3(buildSeconds)),"range_index_ms":\#(round3(ti * 1_000)),"range_scan_ms":\#(round3(ts * 1_000)),"index_speedup":\#(round3(ts / ti)),"key_query_us":\#(round3(tq * 100)),"get_us":\#(round3(tg * 100)),"key_query_over_get":\#(round3(tq / tg)),"merge_ops_per_sec":\#(Int(plain)),"merge_ops_per_sec_with_index":\#(Int(withIndex))}"#)
        } else {
            print("Query executor (\(n) records)")
            for (k, v) in rows { print(k.padding(30) + v) }
        }
    }

    /// Best of `runs` wall-clock seconds.
    func time<R>(runs: Int, _ body: () throws -> R) throws -> (Double, R) {
        var best = Double.infinity
        var result: R?
        for _ in 0..<runs {
            let t0 = tg_now()
            result = try body()
            best = min(best, tg_now() - t0)
        }
        return (best, result!)
    }

    /// W1-shaped merge (map values with an int field) with and without a range index.
    func indexUpkeep(ops: Int, keys: Int) throws -> (Double, Double) {
        var rng = SplitMix64(seed: config.seed &+ 99)
        let pad = Value.string(String(repeating: "p", count: 80))
        var batches: [[ReplicatedOperation]] = []
        var batch: [ReplicatedOperation] = []
        for i in 0..<ops {
            let key = Int.random(in: 0..<keys, using: &rng)
            let t = HLCTimestamp(millis: Workload.base + UInt64(i) + UInt64.random(in: 0..<UInt64(keys) * 8, using: &rng), counter: 0, node: NodeID(UInt64.random(in: 1...8, using: &rng)))
            batch.append(.lww(map: "w", key: Workload.keyNames[key], value: ["v": .int(Int64.random(in: 0..<100_000, using: &rng)), "pad": pad], timestamp: t))
            if batch.count == 1_000 {
                batches.append(batch)
                batch = []
            }
        }
        var rates: [Double] = []
        for indexed in [false, true] {
            var best = 0.0
            for _ in 0..<config.runs {
                let dir = NSTemporaryDirectory() + "topgun-qbench-w-\(UUID().uuidString)"
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let store = try Store(path: dir, options: .init(durability: .noSync, maxClockDriftMillis: .max / 4))
                if indexed {
                    _ = try store.apply([ReplicatedOperation.lww(map: "w", key: "seed", value: ["v": 0], timestamp: HLCTimestamp(millis: 1, counter: 0, node: NodeID(1)))])
                    try store.createIndex(map: "w", path: "v", kind: .range)
                }
                let t0 = tg_now()
                for b in batches { _ = try store.apply(b) }
                best = max(best, Double(ops) / (tg_now() - t0))
            }
            rates.append(best)
        }
        return (rates[0], rates[1])
    }
}
