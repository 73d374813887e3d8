import CBaselines
import Foundation
import TopGunCore
import TopGunStore

/// One engine behind the harness: runs a workload in an empty directory and
/// summarizes its final state the same way every other engine does.
protocol BenchSystem {
    var name: String { get }
    /// Applies the workload; returns the number of ops that changed state (or, for
    /// RocksDB, the number of entries read back).
    func run(_ w: Workload, dir: String, batchSeconds: inout [Double]) throws -> Int
    func summary(_ w: Workload, dir: String) throws -> tg_summary
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
}

/// Fills a `tg_run` for `w` in `dir` (batch timings into `batchSeconds`), calls `body`,
/// and turns a negative result into the baseline's error message.
func cRun(_ dir: String, _ w: Workload, _ batchSeconds: inout [Double], _ body: (inout tg_run) -> Int) throws -> Int {
    try batchSeconds.withUnsafeMutableBufferPointer { seconds in
        try dir.withCString { path in
            var run = tg_run()
            run.dir = path
            run.durable = w.durable ? 1 : 0
            run.batch = w.batch
            run.batch_seconds = seconds.baseAddress
            return try check(body(&run), run)
        }
    }
}

private func check(_ result: Int, _ run: tg_run) throws -> Int {
    guard result >= 0 else {
        throw BenchError(description: withUnsafeBytes(of: run.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
    }
    return result
}

func kindCode(_ w: Workload) -> Int32 {
    switch w.kind {
    case .lww: Int32(TG_KIND_LWW)
    case .counter: Int32(TG_KIND_COUNTER)
    case .orSet: Int32(TG_KIND_ORSET)
    }
}

func cSummary(_ f: (UnsafePointer<CChar>, Int32, UInt32, UnsafeMutablePointer<tg_summary>, UnsafeMutablePointer<CChar>) -> Int32,
              _ w: Workload, _ dir: String) throws -> tg_summary {
    var summary = tg_summary()
    var error = [CChar](repeating: 0, count: 256)
    guard f(dir, kindCode(w), UInt32(w.keys), &summary, &error) == 0 else {
        throw BenchError(description: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return summary
}

struct LMDBSystem: BenchSystem {
    let oplog: Bool
    let writeMap: Bool
    var name: String { oplog ? "lmdb-raw+oplog" : "lmdb-raw" }

    func run(_ w: Workload, dir: String, batchSeconds: inout [Double]) throws -> Int {
        try cRun(dir, w, &batchSeconds) { run in
            run.writemap = writeMap ? 1 : 0
            switch w.kind {
            case .lww: return tg_lmdb_lww(&run, w.lww, w.lww.count, Workload.encodedValue, Workload.encodedValue.count, oplog ? 1 : 0)
            case .counter: return tg_lmdb_counter(&run, w.counters, w.counters.count, oplog ? 1 : 0)
            case .orSet: return tg_lmdb_orset(&run, w.orSet, w.orSet.count, oplog ? 1 : 0)
            }
        }
    }

    func summary(_ w: Workload, dir: String) throws -> tg_summary { try cSummary(tg_lmdb_summary, w, dir) }
}

struct SQLiteSystem: BenchSystem {
    var name: String { "sqlite" }

    func run(_ w: Workload, dir: String, batchSeconds: inout [Double]) throws -> Int {
        try cRun(dir, w, &batchSeconds) { run in
            switch w.kind {
            case .lww: return tg_sqlite_lww(&run, w.lww, w.lww.count, Workload.encodedValue, Workload.encodedValue.count)
            case .counter: return tg_sqlite_counter(&run, w.counters, w.counters.count)
            case .orSet: return tg_sqlite_orset(&run, w.orSet, w.orSet.count)
            }
        }
    }

    func summary(_ w: Workload, dir: String) throws -> tg_summary { try cSummary(tg_sqlite_summary, w, dir) }
}

struct RocksDBSystem: BenchSystem {
    var name: String { "rocksdb" }

    func run(_ w: Workload, dir: String, batchSeconds: inout [Double]) throws -> Int {
        try cRun(dir, w, &batchSeconds) { run in
            let keys = UInt32(w.keys)
            switch w.kind {
            case .lww: return tg_rocksdb_lww(&run, w.lww, w.lww.count, Workload.encodedValue, Workload.encodedValue.count, keys)
            case .counter: return tg_rocksdb_counter(&run, w.counters, w.counters.count, keys)
            case .orSet: return tg_rocksdb_orset(&run, w.orSet, w.orSet.count, keys)
            }
        }
    }

    func summary(_ w: Workload, dir: String) throws -> tg_summary { try cSummary(tg_rocksdb_summary, w, dir) }
}

/// LWW only, and only when named in `--systems`: the op log as a by-sequence change
/// index that deletes each record's previous entry (the design CouchDB's by_seq uses).
struct LMDBBySeqSystem: BenchSystem {
    let writeMap: Bool
    var name: String { "lmdb-byseq" }

    func run(_ w: Workload, dir: String, batchSeconds: inout [Double]) throws -> Int {
        try cRun(dir, w, &batchSeconds) { run in
            run.writemap = writeMap ? 1 : 0
            return tg_lmdb_lww_byseq(&run, w.lww, w.lww.count, Workload.encodedValue, Workload.encodedValue.count)
        }
    }

    func summary(_ w: Workload, dir: String) throws -> tg_summary { try cSummary(tg_lmdb_summary, w, dir) }
}

/// TopGun's `Store.apply`: the merge write path with op log and Merkle digests.
struct TopGunSystem: BenchSystem {
    let writeMap: Bool
    var name: String { "topgun" }

    func options(_ w: Workload) -> Store.Options {
        .init(durability: w.durable ? .durable : .noSync, maxClockDriftMillis: .max / 4, writeMap: writeMap)
    }

    func run(_ w: Workload, dir: String, batchSeconds: inout [Double]) throws -> Int {
        let store = try Store(path: dir, options: options(w))
        var applied = 0
        for (b, batch) in w.topgun.enumerated() {
            let t0 = tg_now()
            for outcome in try store.apply(batch) where outcome.isApplied { applied += 1 }
            batchSeconds[b] = tg_now() - t0
        }
        return applied
    }

    func summary(_ w: Workload, dir: String) throws -> tg_summary {
        let store = try Store(path: dir, options: options(w))
        var summary = tg_summary()
        try store.scan(map: "bench") { key, state in
            let k = UInt64(key.dropFirst(4))!
            switch state {
            case .lww(let r):
                summary.live += 1
                summary.digest ^= tg_mix(tg_mix(k, r.timestamp.packedTime), r.timestamp.node.rawValue)
            case .counter(let c):
                summary.live += 1
                summary.digest ^= tg_mix(k, UInt64(bitPattern: c.value))
            case .orMap(let s):
                for tag in s.entries.keys {
                    summary.live += 1
                    summary.digest ^= tg_mix(tg_mix(k, tag.packedTime), tag.node.rawValue)
                }
            }
            return true
        }
        return summary
    }
}
