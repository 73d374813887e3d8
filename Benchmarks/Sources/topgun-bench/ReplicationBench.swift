import CBaselines
import Foundation
import TopGunCore
import TopGunReplication
import TopGunStore

/// Catch-up between two local nodes over TCP: node A took N LWW writes (100-byte values
/// over K keys); a fresh node B pulls from A twice, once as configured (that far behind,
/// by a Merkle repair of current states) and once with repair catch-up off (by the log,
/// which holds each record's latest write). Reports time, records shipped and wire
/// bytes, and the local merge rate of the same log for comparison.
struct ReplicationBench {
    let config: Config

    struct Pull {
        var seconds: Double
        var stats: ReplicaNode.Statistics
    }

    func run() async throws {
        let n = config.quick ? 100_000 : 1_000_000
        let k = config.quick ? 10_000 : 100_000
        var rng = SplitMix64(seed: config.seed)
        let root = NSTemporaryDirectory() + "topgun-rbench-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let a = try Store(path: root + "/a", options: .init(durability: .noSync, nodeID: NodeID(1)))
        for start in stride(from: 0, to: n, by: 1_000) {
            _ = try a.apply((start..<min(start + 1_000, n)).map { _ in
                Mutation.setEncoded(map: "bench", key: Workload.keyNames[Int.random(in: 0..<k, using: &rng)], encodedValue: Workload.encodedValue, ttlMillis: nil)
            })
        }

        // Local merge of the same log, for the ratio.
        let log = try a.operations(after: nil).map(\.operation)
        let local = try Store(path: root + "/local", options: .init(durability: .noSync, nodeID: NodeID(3)))
        let t0 = tg_now()
        for start in stride(from: 0, to: log.count, by: 1_000) { _ = try local.apply(Array(log[start..<min(start + 1_000, log.count)])) }
        let localRate = Double(log.count) / (tg_now() - t0)

        let byRepair = try await pull(from: a, into: root + "/b", repairAfter: 10_000)
        let byLog = try await pull(from: a, into: root + "/c", repairAfter: .max)
        if config.json {
            print(#"{"writes":\#(n),"log_entries_live":\#(log.count),"repair_seconds":\#(round3(byRepair.seconds)),"records_repaired":\#(byRepair.stats.repairsSent),"repair_wire_bytes_per_record":\#(round3(Double(byRepair.stats.bytesSent) / Double(max(1, byRepair.stats.repairsSent)))),"log_seconds":\#(round3(byLog.seconds)),"log_ops_per_sec":\#(Int(Double(log.count) / byLog.seconds)),"local_merge_ops_per_sec":\#(Int(localRate)),"log_wire_bytes_per_op":\#(round3(Double(byLog.stats.bytesSent) / Double(log.count))),"log_raw_bytes_per_op":\#(round3(Double(byLog.stats.rawBytesSent) / Double(log.count)))}"#)
        } else {
            print("Replication catch-up: a node that took \(n) writes over \(k) keys (\(log.count) records), 100-byte values, two nodes on 127.0.0.1")
            print("by repair (default)".padding(26) + String(format: "%.2f s, %d records, %.1f wire bytes each", byRepair.seconds, byRepair.stats.repairsSent, Double(byRepair.stats.bytesSent) / Double(max(1, byRepair.stats.repairsSent))))
            print("by the log".padding(26) + String(format: "%.2f s, %d entries in %d segments, %.0f ops/s (local merge of the same log %.0f ops/s, ratio %.2f)", byLog.seconds, log.count, byLog.stats.segmentsSent, Double(log.count) / byLog.seconds, localRate, Double(log.count) / byLog.seconds / localRate))
            print("log wire bytes per op".padding(26) + String(format: "%.1f (raw key+value+HLC %.1f)", Double(byLog.stats.bytesSent) / Double(log.count), Double(byLog.stats.rawBytesSent) / Double(log.count)))
        }
    }

    /// A fresh node at `path` pulls all of `source`; the source repairs a subscriber
    /// more than `repairAfter` entries behind.
    func pull(from source: Store, into path: String, repairAfter: Int) async throws -> Pull {
        let head = try source.lastSequence()!
        let b = try Store(path: path, options: .init(durability: .noSync, nodeID: NodeID(UInt64.random(in: 10...1_000_000))))
        let token = Array("benchmark-replica-secret-of-32-bytes+".utf8)
        let server = try ReplicaNode(
            store: source,
            configuration: .init(listen: .init(host: "127.0.0.1", port: 0), token: token, antiEntropyInterval: nil, catchUpByRepairAfter: repairAfter))
        let serverTask = Task { try await server.run() }
        while server.listeningPort == nil { try await Task.sleep(for: .milliseconds(5)) }
        let puller = try ReplicaNode(
            store: b, configuration: .init(listen: nil, peers: [.init(host: "127.0.0.1", port: server.listeningPort!)], token: token, antiEntropyInterval: nil))
        let start = tg_now()
        let pullTask = Task { try await puller.run() }
        while try b.peerCursor(source.nodeID) != head { try await Task.sleep(for: .milliseconds(2)) }
        let seconds = tg_now() - start
        pullTask.cancel()
        serverTask.cancel()
        _ = await pullTask.result
        _ = await serverTask.result
        // The caught-up node must hold what the source holds.
        guard try source.bucketDigests(map: "bench") == b.bucketDigests(map: "bench") else {
            FileHandle.standardError.write(Data("replication: the caught-up node's digests differ from the source's\n".utf8))
            exit(1)
        }
        b.close()
        return Pull(seconds: seconds, stats: server.statistics)
    }
}
