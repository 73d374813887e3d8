import CBaselines
import Foundation
import TopGunCore
import TopGunStore

/// `topgun-bench`: merge throughput of TopGun side by side with C baselines (raw LMDB
/// read-compare-write loops, SQLite UPSERT with an HLC guard, RocksDB with a merge
/// operator) on the same generated workloads, in one process run.
///
/// Every system's final state is summarized (live entries and an order-independent
/// digest) and compared: a system that did different work fails the run.
@main
struct Bench {
    static func main() async throws {
        var config = Config()
        var args = CommandLine.arguments.dropFirst()
        while let arg = args.popFirst() {
            switch arg {
            case "--quick": config.quick = true
            case "--json": config.json = true
            case "--runs": config.runs = max(1, Int(args.popFirst() ?? "") ?? 1)
            case "--seed": config.seed = UInt64(args.popFirst() ?? "") ?? config.seed
            case "--only": config.only = Set((args.popFirst() ?? "").split(separator: ",").map(String.init))
            case "--systems": config.systems = Set((args.popFirst() ?? "").split(separator: ",").map(String.init))
            case "--write-map": config.writeMap = true
            case "--ops": config.ops = Int(args.popFirst() ?? "").map { max(1, $0) }
            case "--keys": config.keys = Int(args.popFirst() ?? "").map { max(1, $0) }
            case "--queries": config.queries = true
            case "--replication": config.replication = true
            case "--fanout": config.fanout = max(1, Int(args.popFirst() ?? "") ?? 100)
            case "--seconds": config.seconds = max(1, Double(args.popFirst() ?? "") ?? 10)
            default:
                print(
                    """
                    usage: topgun-bench [--quick] [--json] [--runs R] [--seed S] [--only W1,W2,…] [--ops N] [--keys K]
                                        [--systems lmdb-raw,lmdb-raw+oplog,sqlite,rocksdb,topgun,lmdb-byseq] [--write-map]
                                        [--queries]   (query executor: index vs scan, key lookup vs get, index upkeep)
                                        [--replication]   (catch-up of a 1M-op log between two nodes over TCP)
                                        [--fanout N [--seconds S]]   (N apps syncing over WebSocket with one
                                            `topgun serve`; needs `swift build -c release` at the root first)
                    """)
                exit(arg == "--help" ? 0 : 2)
            }
        }
        if config.queries {
            try QueryBench(config: config).run()
            return
        }
        if let clients = config.fanout {
            try await FanoutBench(config: config, clients: clients).run()
            return
        }
        if config.replication {
            try await ReplicationBench(config: config).run()
            return
        }
        if !config.json {
            print(
                "topgun-bench: \(config.quick ? "quick" : "full") run, seed \(config.seed), \(config.runs) run(s) per system (median)"
                    + (config.writeMap ? ", LMDB and TopGun with MDB_WRITEMAP" : ""))
        }
        for id in Workload.ids where config.only.isEmpty || config.only.contains(id) {
            try Harness(config: config, workload: Workload.make(id, config)).run()
        }
    }
}

struct Config {
    var quick = false
    var json = false
    var runs = 1
    var seed: UInt64 = 20_261_126
    var only: Set<String> = []
    var systems: Set<String> = []
    var writeMap = false
    var queries = false
    var replication = false
    var fanout: Int?
    var seconds: Double = 10
    /// Ops and keys of the LWW, counter and replay workloads (the cost curve); nil:
    /// the quick or full sizes.
    var ops: Int?
    var keys: Int?
}

/// One measured run of one system.
struct Measurement {
    var seconds: Double
    var batchSeconds: [Double]
    var applied: Int
    var summary: tg_summary
    var diskBytes: Int
    var peakRSS: Int
}

/// Runs a workload on every system, checks equal final states, prints the results.
struct Harness {
    let config: Config
    let workload: Workload

    var systems: [any BenchSystem] {
        let all: [any BenchSystem] = [
            LMDBSystem(oplog: false, writeMap: config.writeMap), LMDBSystem(oplog: true, writeMap: config.writeMap),
            SQLiteSystem(), RocksDBSystem(),
            TopGunSystem(writeMap: config.writeMap),
        ]
        let bySeq: [any BenchSystem] =
            config.systems.contains("lmdb-byseq") && workload.kind == .lww ? [LMDBBySeqSystem(writeMap: config.writeMap)] : []
        return all.filter { config.systems.isEmpty || config.systems.contains($0.name) || $0.name == "lmdb-raw" } + bySeq
    }

    func run() throws {
        var results: [(String, Measurement)] = []
        for system in systems {
            var runs: [Measurement] = []
            for _ in 0..<config.runs { runs.append(try measure(system)) }
            runs.sort { $0.seconds < $1.seconds }
            results.append((system.name, runs[runs.count / 2]))
        }
        let reference = results[0].1
        for (name, m) in results where m.summary.live != reference.summary.live || m.summary.digest != reference.summary.digest {
            FileHandle.standardError.write(
                Data(
                    "\(workload.id): final state of \(name) differs from lmdb-raw (\(m.summary.live) vs \(reference.summary.live) live)\n"
                        .utf8))
            exit(1)
        }
        report(results)
    }

    func measure(_ system: any BenchSystem) throws -> Measurement {
        let dir = NSTemporaryDirectory() + "topgun-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var batchSeconds = [Double](repeating: 0, count: (workload.count + workload.batch - 1) / workload.batch)
        resetPeakRSS()
        let start = tg_now()
        let applied = try system.run(workload, dir: dir, batchSeconds: &batchSeconds)
        let seconds = tg_now() - start
        let peak = peakRSS()
        let summary = try system.summary(workload, dir: dir)
        return Measurement(
            seconds: seconds, batchSeconds: batchSeconds, applied: applied, summary: summary, diskBytes: diskUsage(dir),
            peakRSS: peak)
    }

    func report(_ results: [(String, Measurement)]) {
        let reference = results[0].1.seconds
        if !config.json {
            print("\n\(workload.id) \(workload.title)")
            print(
                "system".padding(16) + "ops/s".padding(11, left: true) + "ratio".padding(8, left: true)
                    + "p50 ms".padding(9, left: true) + "p99 ms".padding(9, left: true) + "B/record".padding(10, left: true)
                    + "peak RSS MB".padding(13, left: true) + "applied".padding(9, left: true))
        }
        for (name, m) in results {
            let sorted = m.batchSeconds.sorted()
            let p50 = sorted.isEmpty ? 0 : sorted[sorted.count / 2] * 1_000
            let p99 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * 99 / 100)] * 1_000
            let opsPerSec = Double(workload.count) / m.seconds
            let ratio = reference / m.seconds
            let perRecord = m.summary.live > 0 ? Double(m.diskBytes) / Double(m.summary.live) : 0
            if config.json {
                print(
                    #"{"workload":"\#(workload.id)","system":"\#(name)","ops":\#(workload.count),"ops_per_sec":\#(Int(opsPerSec)),"ratio_to_lmdb":\#(round3(ratio)),"p50_batch_ms":\#(round3(p50)),"p99_batch_ms":\#(round3(p99)),"bytes_per_live_record":\#(Int(perRecord)),"peak_rss_mb":\#(m.peakRSS >> 20),"applied":\#(m.applied),"live":\#(m.summary.live),"state_digest":"\#(String(m.summary.digest, radix: 16))"}"#
                )
            } else {
                print(
                    name.padding(16) + String(Int(opsPerSec)).padding(11, left: true)
                        + String(format: "%.2f", ratio).padding(8, left: true) + String(format: "%.2f", p50).padding(9, left: true)
                        + String(format: "%.2f", p99).padding(9, left: true) + String(Int(perRecord)).padding(10, left: true)
                        + String(m.peakRSS >> 20).padding(13, left: true) + String(m.applied).padding(9, left: true))
            }
        }
    }
}

func round3(_ x: Double) -> Double { (x * 1_000).rounded() / 1_000 }

extension String {
    func padding(_ width: Int, left: Bool = false) -> String {
        let pad = String(repeating: " ", count: max(0, width - count))
        return left ? pad + self : self + pad
    }
}

/// Resets the kernel's peak-RSS mark for this process (`/proc/self/clear_refs`).
func resetPeakRSS() {
    if let h = FileHandle(forWritingAtPath: "/proc/self/clear_refs") {
        h.write(Data("5".utf8))
        try? h.close()
    }
}

/// Peak resident set size in bytes since the last reset (`VmHWM`).
func peakRSS() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1_024
    }
    return 0
}

/// Bytes allocated on disk under `dir` (sparse files count only their written blocks).
func diskUsage(_ dir: String) -> Int {
    var total = 0
    let files = FileManager.default.enumerator(atPath: dir)
    while let name = files?.nextObject() as? String {
        var st = stat()
        if lstat(dir + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { total += Int(st.st_blocks) * 512 }
    }
    return total
}
