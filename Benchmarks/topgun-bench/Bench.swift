import CLMDBBaseline
import Foundation
import TopGunCore
import TopGunStore

/// `topgun-bench`: merge throughput of TopGun against a raw LMDB read-compare-write
/// loop (with and without an op log) on the same generated workload, in one run.
///
/// W1: N LWW ops over K random keys, 100-byte values, random origin HLCs (about half
/// lose), B ops per transaction, no fsync. Final states are compared key by key; a
/// mismatch fails the run.
@main
struct Bench {
    struct Config {
        var ops = 1_000_000
        var keys = 100_000
        var batch = 1_000
        var json = false
        var seed: UInt64 = 20_261_126
    }

    static func main() throws {
        var config = Config()
        var args = CommandLine.arguments.dropFirst()
        while let arg = args.popFirst() {
            switch arg {
            case "--quick": config.ops = 100_000; config.keys = 10_000
            case "--json": config.json = true
            case "--ops": config.ops = Int(args.popFirst() ?? "") ?? config.ops
            case "--keys": config.keys = Int(args.popFirst() ?? "") ?? config.keys
            case "--batch": config.batch = Int(args.popFirst() ?? "") ?? config.batch
            case "--seed": config.seed = UInt64(args.popFirst() ?? "") ?? config.seed
            default:
                print("usage: topgun-bench [--quick] [--json] [--ops N] [--keys K] [--batch B] [--seed S]")
                exit(2)
            }
        }
        try runW1(config)
    }

    struct Result {
        var system: String
        var seconds: Double
        var applied: Int
    }

    static func runW1(_ config: Config) throws {
        var rng = SplitMix64(seed: config.seed)
        let base: UInt64 = 1_700_000_000_000
        let keys = (0..<config.ops).map { _ in UInt32.random(in: 0..<UInt32(config.keys), using: &rng) }
        let stamps = (0..<config.ops).map { _ in
            HLCTimestamp(millis: base + UInt64.random(in: 0..<10_000_000, using: &rng), counter: 0, node: NodeID(UInt64.random(in: 1...8, using: &rng)))
        }
        let text = [UInt8](repeating: 0x61, count: 98)
        let encoded: [UInt8] = [0xd9, 98] + text  // 100 bytes
        let tmp = NSTemporaryDirectory() + "topgun-bench-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: tmp) }

        // Raw LMDB loop(s).
        var cOps = [tg_baseline_op](repeating: tg_baseline_op(), count: config.ops)
        for i in 0..<config.ops {
            cOps[i].key = keys[i]
            withUnsafeMutableBytes(of: &cOps[i].hlc) { stamps[i].store(to: $0.baseAddress!) }
        }
        var results: [Result] = []
        var error = [CChar](repeating: 0, count: 256)
        for (name, oplog) in [("lmdb-raw", Int32(0)), ("lmdb-raw+oplog", 1)] {
            let dir = tmp + "-" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let start = ContinuousClock.now
            let applied = tg_lmdb_rcw(dir, cOps, cOps.count, encoded, encoded.count, config.batch, 0, oplog, &error)
            let seconds = (ContinuousClock.now - start).seconds
            guard applied >= 0 else { fatalError(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
            results.append(Result(system: name, seconds: seconds, applied: applied))
            if oplog == 0 {
                var hlcs = [UInt8](repeating: 0, count: config.keys * 16)
                guard tg_lmdb_read_all(dir, UInt32(config.keys), &hlcs) == 0 else { fatalError("read back") }
                baselineHLCs = hlcs
            }
        }

        // TopGun.
        let dir = tmp + "-topgun"
        let store = try Store(path: dir, options: .init(durability: .noSync, maxClockDriftMillis: .max / 2))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let names = (0..<config.keys).map { "key-\($0)" }
        var batches: [[ReplicatedOperation]] = []
        for start in stride(from: 0, to: config.ops, by: config.batch) {
            batches.append((start..<min(start + config.batch, config.ops)).map { i in
                ReplicatedOperation(map: "w1", key: names[Int(keys[i])], timestamp: stamps[i], payload: .lww(encodedValue: encoded, ttlMillis: nil))
            })
        }
        let start = ContinuousClock.now
        var applied = 0
        for batch in batches { applied += try store.apply(batch).reduce(0) { $0 + ($1.isApplied ? 1 : 0) } }
        results.append(Result(system: "topgun", seconds: (ContinuousClock.now - start).seconds, applied: applied))

        // Equal final state: every key's winning HLC agrees with the raw loop.
        for k in 0..<config.keys {
            let expected = baselineHLCs[(k * 16)..<(k * 16 + 16)]
            let got: [UInt8]
            if case .lww(let r)? = try store.state(map: "w1", key: names[k]) { got = r.timestamp.bytes } else { got = [UInt8](repeating: 0, count: 16) }
            guard Array(expected) == got else {
                FileHandle.standardError.write(Data("final state differs at key-\(k)\n".utf8))
                exit(1)
            }
        }
        guard Set(results.map(\.applied)).count == 1 else {
            FileHandle.standardError.write(Data("systems applied different op counts: \(results.map(\.applied))\n".utf8))
            exit(1)
        }

        let lmdb = results[0].seconds
        if !config.json {
            print("W1 LWW merge: \(config.ops) ops, \(config.keys) keys, 100-byte values, \(config.batch) ops/txn, no fsync")
            print("system            ops/s      ratio_to_lmdb  applied")
        }
        for r in results {
            let opsPerSec = Double(config.ops) / r.seconds
            let ratio = lmdb / r.seconds
            if config.json {
                print(#"{"workload":"W1","system":"\#(r.system)","ops":\#(config.ops),"ops_per_sec":\#(Int(opsPerSec)),"ratio_to_lmdb":\#((ratio * 1000).rounded() / 1000),"applied":\#(r.applied)}"#)
            } else {
                print("\(r.system.padding(toLength: 16, withPad: " ", startingAt: 0))  \(String(Int(opsPerSec)).padding(toLength: 9, withPad: " ", startingAt: 0))  \(String(format: "%.2f", ratio).padding(toLength: 13, withPad: " ", startingAt: 0))  \(r.applied)")
            }
        }
    }

    nonisolated(unsafe) static var baselineHLCs: [UInt8] = []
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
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
