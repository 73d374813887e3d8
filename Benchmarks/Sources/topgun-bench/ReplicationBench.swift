import CBaselines
import Foundation
import TopGunCore
import TopGunReplication
import TopGunStore

/// Catch-up between two local nodes over TCP: node A holds N LWW writes (100-byte
/// values over K keys); node B pulls A's whole log. Reports ops applied per second,
/// wire bytes per op against the raw key + value + HLC bytes, and the local merge
/// rate of the same ops for comparison.
struct ReplicationBench {
    let config: Config

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
        let head = try a.lastSequence()!

        // Local merge of the same log, for the ratio.
        let log = try a.operations(after: nil).map(\.operation)
        let local = try Store(path: root + "/local", options: .init(durability: .noSync, nodeID: NodeID(3)))
        let t0 = tg_now()
        for start in stride(from: 0, to: log.count, by: 1_000) { _ = try local.apply(Array(log[start..<min(start + 1_000, log.count)])) }
        let localRate = Double(log.count) / (tg_now() - t0)

        let b = try Store(path: root + "/b", options: .init(durability: .noSync, nodeID: NodeID(2)))
        let token = Array("bench".utf8)
        let server = try ReplicaNode(store: a, configuration: .init(listen: .init(host: "127.0.0.1", port: 0), token: token, antiEntropyInterval: nil))
        let serverTask = Task { try await server.run() }
        while server.listeningPort == nil { try await Task.sleep(for: .milliseconds(5)) }
        let puller = try ReplicaNode(
            store: b, configuration: .init(listen: nil, peers: [.init(host: "127.0.0.1", port: server.listeningPort!)], token: token, antiEntropyInterval: nil))
        let start = tg_now()
        let pullTask = Task { try await puller.run() }
        while try b.peerCursor(NodeID(1)) != head { try await Task.sleep(for: .milliseconds(2)) }
        let seconds = tg_now() - start
        pullTask.cancel()
        serverTask.cancel()
        _ = await pullTask.result
        _ = await serverTask.result
        let stats = server.statistics
        // The caught-up node must hold what the source holds.
        guard try a.bucketDigests(map: "bench") == b.bucketDigests(map: "bench") else {
            FileHandle.standardError.write(Data("replication: the caught-up node's digests differ from the source's\n".utf8))
            exit(1)
        }
        let shipped = stats.repairsSent + (stats.segmentsSent > 0 ? n : 0)
        let rate = Double(n) / seconds
        let wirePerOp = Double(stats.bytesSent) / Double(n)
        let rawPerOp = Double(stats.rawBytesSent) / Double(n)
        if config.json {
            print(#"{"ops":\#(n),"catch_up_ops_per_sec":\#(Int(rate)),"local_merge_ops_per_sec":\#(Int(localRate)),"ratio_to_local":\#(round3(rate / localRate)),"wire_bytes_per_op":\#(round3(wirePerOp)),"records_repaired":\#(stats.repairsSent),"raw_bytes_per_op":\#(round3(rawPerOp)),"wire_to_raw":\#(round3(wirePerOp / rawPerOp))}"#)
        } else {
            print("Replication catch-up: \(n) ops over \(k) keys, 100-byte values, two nodes on 127.0.0.1")
            print("catch-up".padding(26) + String(format: "%.0f ops/s (%.2f s)", rate, seconds))
            print("local merge of same log".padding(26) + String(format: "%.0f ops/s → ratio %.2f", localRate, rate / localRate))
            if stats.segmentsSent > 0 {
                print("wire bytes per op".padding(26) + String(format: "%.1f (raw key+value+HLC %.1f) → %.2f of raw", wirePerOp, rawPerOp, wirePerOp / rawPerOp))
            }
            print("wire bytes per record".padding(26) + String(format: "%.1f (%d records and ops shipped)", Double(stats.bytesSent) / Double(max(1, shipped)), shipped))
            print("segments".padding(26) + "\(stats.segmentsSent)")
            print("records shipped by repair".padding(26) + "\(stats.repairsSent) (log entries behind: \(n); a subscriber that far behind gets current state)")
        }
    }
}
