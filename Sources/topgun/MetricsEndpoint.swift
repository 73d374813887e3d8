import CoreMetrics
import Foundation
import Metrics
import Prometheus
import TopGunCore
import TopGunReplication
import TopGunStore

/// Keeps the Prometheus metrics of a node current (its HTTP listener serves them on
/// `GET /metrics`): merge ops, commit latency histogram, op-log size, per-peer lag,
/// bytes in and out, rejected segments, sessions by principal, refused writes and
/// tokens by reason.
struct MetricsEndpoint {
    let registry: PrometheusCollectorRegistry
    let node: ReplicaNode

    /// Installs the Prometheus backend for swift-metrics.
    static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(100), .milliseconds(500), .seconds(1),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// Copies node and store counters into swift-metrics once a second.
    func publish() async throws {
        let mergeOps = Counter(label: "topgun_merge_ops_total")
        let offered = Counter(label: "topgun_ops_offered_total")
        let batch = Timer(label: "topgun_batch_duration_seconds", preferredDisplayUnit: .seconds)
        let oplog = Gauge(label: "topgun_oplog_entries")
        let bytesIn = Counter(label: "topgun_replication_bytes_in_total")
        let bytesOut = Counter(label: "topgun_replication_bytes_out_total")
        let rejected = Counter(label: "topgun_replication_segments_rejected_total")
        let refused = Counter(label: "topgun_replication_handshakes_refused_total")
        let horizon = Counter(label: "topgun_replication_refused_beyond_gc_horizon_total")
        let idle = Counter(label: "topgun_replication_idle_timeouts_total")
        let duplicates = Counter(label: "topgun_replication_duplicate_node_ids_total")
        var last = (StoreCounters.Snapshot(), ReplicaNode.Statistics())
        var seenPrincipals = Set<String>()
        while !Task.isCancelled {
            let store = node.store.counters.snapshot
            let stats = node.statistics
            mergeOps.increment(by: Int64(store.applied - last.0.applied))
            offered.increment(by: Int64(store.operations - last.0.operations))
            for d in node.store.counters.drainBatchDurations() { batch.recordNanoseconds(Int64(d.components.seconds) * 1_000_000_000 + d.components.attoseconds / 1_000_000_000) }
            oplog.record(Double(try node.store.opLogCount()))
            bytesIn.increment(by: Int64(stats.bytesReceived - last.1.bytesReceived))
            bytesOut.increment(by: Int64(stats.bytesSent - last.1.bytesSent))
            rejected.increment(by: Int64(stats.segmentsRejected - last.1.segmentsRejected))
            refused.increment(by: Int64(stats.handshakesRefused - last.1.handshakesRefused))
            horizon.increment(by: Int64(store.refusedBeyondHorizon - last.0.refusedBeyondHorizon))
            idle.increment(by: Int64(stats.idleTimeouts - last.1.idleTimeouts))
            duplicates.increment(by: Int64(stats.duplicateIDsRefused - last.1.duplicateIDsRefused))
            let now = node.store.clockHighWater.millis
            let connected = node.connectedPeers
            for peer in try node.store.peers() {
                let id = [("peer", peer.node.description)]
                // Pull lag: how far behind this node is on the peer's log.
                Gauge(label: "topgun_peer_lag_ms", dimensions: id)
                    .record(Double(now > peer.cursor.millis ? now - peer.cursor.millis : 0))
                // Push lag: how far behind the peer is on this node's log.
                let acknowledged = max(peer.acknowledged, node.acknowledgedCursor(of: peer.node) ?? .zero)
                Gauge(label: "topgun_peer_acknowledged_lag_ms", dimensions: id)
                    .record(Double(now > acknowledged.millis ? now - acknowledged.millis : 0))
                Gauge(label: "topgun_peer_connected", dimensions: id).record(connected.contains(peer.node) ? 1 : 0)
                Gauge(label: "topgun_peer_last_seen_ms", dimensions: id).record(Double(peer.lastSeenMillis))
            }
            Gauge(label: "topgun_connected_peers").record(Double(connected.count))
            // Sessions by principal (zero for those that ended since the last second).
            let sessions = node.sessionsByPrincipal
            for principal in Set(sessions.keys).union(seenPrincipals) {
                Gauge(label: "topgun_sessions", dimensions: [("principal", principal)]).record(Double(sessions[principal] ?? 0))
            }
            seenPrincipals.formUnion(sessions.keys)
            for (reason, count) in stats.writesRejected {
                Counter(label: "topgun_writes_rejected_total", dimensions: [("reason", reason)])
                    .increment(by: Int64(count - (last.1.writesRejected[reason] ?? 0)))
            }
            for (reason, count) in stats.tokensRefused {
                Counter(label: "topgun_tokens_refused_total", dimensions: [("reason", reason)])
                    .increment(by: Int64(count - (last.1.tokensRefused[reason] ?? 0)))
            }
            last = (store, stats)
            try await Task.sleep(for: .seconds(1))
        }
    }
}
