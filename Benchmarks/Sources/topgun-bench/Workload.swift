import CBaselines
import Foundation
import TopGunCore
import TopGunStore

/// One workload, generated up front (outside the timings) in both forms: C ops for
/// the baselines and TopGun replicated operations, pre-split into batches.
struct Workload {
    enum Kind { case lww, counter, orSet }

    let id: String
    let title: String
    let kind: Kind
    let keys: Int
    let batch: Int
    let durable: Bool
    var lww: [tg_lww_op] = []
    var counters: [tg_counter_op] = []
    var orSet: [tg_orset_op] = []
    var topgun: [[ReplicatedOperation]] = []

    var count: Int {
        switch kind {
        case .lww: lww.count
        case .counter: counters.count
        case .orSet: orSet.count
        }
    }

    /// The LWW value: a 98-character string, 100 bytes of canonical MessagePack.
    static let encodedValue: [UInt8] = [0xd9, 98] + [UInt8](repeating: 0x61, count: 98)
    /// Key names, made once for the largest key count asked for (`--keys`).
    nonisolated(unsafe) static var keyNames: [String] = (0..<100_000).map { "key-\($0)" }

    /// Makes sure `keyNames` holds at least `count` names.
    static func reserveKeys(_ count: Int) {
        if keyNames.count < count { keyNames += (keyNames.count..<count).map { "key-\($0)" } }
    }
    static let base: UInt64 = 1_700_000_000_000

    static let ids = ["W1", "W2", "W3", "W4", "W5", "W6"]

    /// Generates workload `id`; each has its own generator seeded from the run's seed.
    static func make(_ id: String, _ config: Config) -> Workload {
        let n = config.ops ?? (config.quick ? 100_000 : 1_000_000)
        let k = config.keys ?? (config.quick ? 10_000 : 100_000)
        reserveKeys(k)
        var rng = SplitMix64(seed: config.seed &+ UInt64(ids.firstIndex(of: id) ?? 0) &* 0x9e37_79b9)
        switch id {
        case "W1":
            return lww(id: "W1", title: "LWW merge: \(n) ops, \(k) uniform keys, 100-byte values, 1,000 ops/txn, no fsync",
                n: n, k: k, zipf: false, durable: false, rng: &rng)
        case "W2":
            return lww(id: "W2", title: "LWW merge, Zipf(0.99) keys: \(n) ops, \(k) keys, no fsync",
                n: n, k: k, zipf: true, durable: false, rng: &rng)
        case "W3": return counters(n: n, k: k, rng: &rng)
        case "W4": return orSet(n: config.quick ? 20_000 : 200_000, k: 10_000, rng: &rng)
        case "W5":
            return lww(id: "W5", title: "LWW merge, durable: \(n / 5) ops, \(k) keys, fsync per 1,000-op batch",
                n: n / 5, k: k, zipf: false, durable: true, rng: &rng)
        default: return replay(n: n, k: k, rng: &rng)
        }
    }

    static func stamp(_ millis: UInt64, node: UInt64) -> HLCTimestamp {
        HLCTimestamp(millis: base + millis, counter: 0, node: NodeID(node))
    }

    static func cStamp(_ t: HLCTimestamp) -> (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) {
        var out: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &out) { t.store(to: $0.baseAddress!) }
        return out
    }

    static func batched(_ ops: [ReplicatedOperation], _ size: Int) -> [[ReplicatedOperation]] {
        stride(from: 0, to: ops.count, by: size).map { Array(ops[$0..<min($0 + size, ops.count)]) }
    }

    /// Origin stamps drift forward with jitter of 8 × the mean gap between two writes
    /// of one key, so about half of the ops lose to an earlier but newer write.
    static func lww(id: String, title: String, n: Int, k: Int, zipf: Bool, durable: Bool, rng: inout SplitMix64) -> Workload {
        var w = Workload(id: id, title: title, kind: .lww, keys: k, batch: 1_000, durable: durable)
        let sampler = zipf ? ZipfSampler(count: k, exponent: 0.99, rng: &rng) : nil
        var ops: [ReplicatedOperation] = []
        ops.reserveCapacity(n)
        w.lww.reserveCapacity(n)
        for i in 0..<n {
            let key = sampler?.next(&rng) ?? Int.random(in: 0..<k, using: &rng)
            let t = stamp(UInt64(i) + UInt64.random(in: 0..<UInt64(k) * 8, using: &rng), node: UInt64.random(in: 1...8, using: &rng))
            w.lww.append(tg_lww_op(key: UInt32(key), hlc: cStamp(t)))
            ops.append(ReplicatedOperation(map: "bench", key: keyNames[key], timestamp: t, payload: .lww(encodedValue: encodedValue, ttlMillis: nil)))
        }
        w.topgun = batched(ops, w.batch)
        return w
    }

    /// Eight simulated nodes increment and decrement; each op carries one node's new
    /// running totals for one key (the state-based delta replicas exchange).
    static func counters(n: Int, k: Int, rng: inout SplitMix64) -> Workload {
        var w = Workload(id: "W3", title: "PN-Counter: \(n) increments/decrements from 8 nodes over \(k) keys", kind: .counter, keys: k, batch: 1_000, durable: false)
        var totals = [UInt64](repeating: 0, count: k * 16)
        var ops: [ReplicatedOperation] = []
        ops.reserveCapacity(n)
        for i in 0..<n {
            let key = Int.random(in: 0..<k, using: &rng)
            let node = Int.random(in: 0..<8, using: &rng)
            let delta = Int.random(in: 1...5, using: &rng)
            let slot = key * 16 + node * 2 + (Bool.random(using: &rng) ? 0 : 1)
            totals[slot] += UInt64(delta)
            let p = totals[key * 16 + node * 2]
            let m = totals[key * 16 + node * 2 + 1]
            w.counters.append(tg_counter_op(key: UInt32(key), node: UInt32(node), p: p, n: m))
            let id = NodeID(UInt64(node + 1))
            ops.append(ReplicatedOperation(
                map: "bench", key: keyNames[key], timestamp: stamp(UInt64(i), node: UInt64(node + 1)),
                payload: .counter(PNCounter(positive: [id: p], negative: [id: m]))))
        }
        w.topgun = batched(ops, w.batch)
        return w
    }

    /// Adds (about 65 %) and observed removes of earlier tags, over `k` keys.
    static func orSet(n: Int, k: Int, rng: inout SplitMix64) -> Workload {
        var w = Workload(id: "W4", title: "OR-Map: \(n) adds/removes over \(k) keys", kind: .orSet, keys: k, batch: 1_000, durable: false)
        var live = [[HLCTimestamp]](repeating: [], count: k)
        var ops: [ReplicatedOperation] = []
        ops.reserveCapacity(n)
        for i in 0..<n {
            let key = Int.random(in: 0..<k, using: &rng)
            if !live[key].isEmpty && Int.random(in: 0..<100, using: &rng) < 35 {
                let tag = live[key].remove(at: Int.random(in: 0..<live[key].count, using: &rng))
                w.orSet.append(tg_orset_op(key: UInt32(key), tag: cStamp(tag), remove: 1, value: 0))
                ops.append(ReplicatedOperation(map: "bench", key: keyNames[key], timestamp: stamp(UInt64(i), node: 9), payload: .orSet(ORSet(tombstones: [tag]))))
            } else {
                let tag = stamp(UInt64(i), node: UInt64(i % 8 + 1))
                let value = UInt64.random(in: 0..<1_000, using: &rng)
                live[key].append(tag)
                w.orSet.append(tg_orset_op(key: UInt32(key), tag: cStamp(tag), remove: 0, value: value))
                var delta = ORSet()
                delta.add(.int(Int64(value)), tag: tag)
                ops.append(ReplicatedOperation(map: "bench", key: keyNames[key], timestamp: tag, payload: .orSet(delta)))
            }
        }
        w.topgun = batched(ops, w.batch)
        return w
    }

    /// A store takes `n` local writes over `k` keys; its op log, read back with
    /// `operations(after:)` (each key's latest write: superseded ones are not read), is
    /// what every system then applies (the replication path).
    static func replay(n: Int, k: Int, rng: inout SplitMix64) -> Workload {
        let dir = NSTemporaryDirectory() + "topgun-bench-source-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log: [ReplicatedOperation]
        do {
            let source = try Store(path: dir, options: .init(durability: .noSync, nodeID: NodeID(42)))
            for start in stride(from: 0, to: n, by: 1_000) {
                let mutations = (start..<min(start + 1_000, n)).map { _ in
                    Mutation.setEncoded(map: "bench", key: keyNames[Int.random(in: 0..<k, using: &rng)], encodedValue: encodedValue, ttlMillis: nil)
                }
                _ = try source.apply(mutations)
            }
            log = try source.operations(after: nil).map(\.operation)
        } catch {
            fatalError("W6 source store: \(error)")
        }
        var w = Workload(
            id: "W6", title: "Replay: apply the log of a store that took \(n) writes over \(k) keys (\(log.count) entries to ship)",
            kind: .lww, keys: k, batch: 1_000, durable: false)
        for op in log {
            w.lww.append(tg_lww_op(key: UInt32(op.key.dropFirst(4))!, hlc: cStamp(op.timestamp)))
        }
        w.topgun = batched(log, w.batch)
        return w
    }
}

/// Samples ranks 0..<count with probability ∝ 1/(rank+1)^s, mapped to shuffled keys.
struct ZipfSampler {
    let cdf: [Double]
    let keys: [Int]

    init(count: Int, exponent: Double, rng: inout SplitMix64) {
        var sum = 0.0
        var cdf = [Double](repeating: 0, count: count)
        for i in 0..<count {
            sum += 1 / pow(Double(i + 1), exponent)
            cdf[i] = sum
        }
        self.cdf = cdf.map { $0 / sum }
        self.keys = Array(0..<count).shuffled(using: &rng)
    }

    func next(_ rng: inout SplitMix64) -> Int {
        let u = Double.random(in: 0..<1, using: &rng)
        var lo = 0
        var hi = cdf.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        return keys[lo]
    }
}

/// SplitMix64: a fast seeded generator, so every run draws the same workload.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
