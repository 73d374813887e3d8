import Prometheus
import TopGunCore
import TopGunReplication
import TopGunStore

/// Keeps the Prometheus metrics of a node current (its HTTP listener serves them on
/// `GET /metrics`), by Prometheus conventions: every family has HELP, times are in
/// seconds, points in time are `_timestamp_seconds`, and a value that does not exist
/// (a peer that never acknowledged) has no series. Labels name node ids, never users'
/// subjects, unless `subjects` asks for them.
struct MetricsEndpoint {
    let registry: PrometheusCollectorRegistry
    let node: ReplicaNode
    /// Also export open sessions per user subject (`topgun_user_sessions{subject}`).
    var subjects = false

    static let batchBuckets: [Duration] = [
        .microseconds(250), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(100), .milliseconds(500), .seconds(1),
    ]

    /// Copies node and store counters into the registry once a second.
    func publish() async throws {
        let r = registry
        let mergeOps = r.makeCounter(descriptor: .named("topgun_merge_ops_total", help: "Operations that changed a record, local or merged."))
        let offered = r.makeCounter(descriptor: .named("topgun_ops_offered_total", help: "Operations offered to the merge, applied or not."))
        let batch = r.makeDurationHistogram(descriptor: .named("topgun_batch_duration_seconds", help: "Duration of one write transaction (a batch of operations)."), buckets: Self.batchBuckets)
        let oplog = r.makeGauge(descriptor: .named("topgun_oplog_entries", help: "Entries in the op log."))
        let bytesIn = r.makeCounter(descriptor: .named("topgun_replication_received_bytes_total", help: "Bytes of replication frames received."))
        let bytesOut = r.makeCounter(descriptor: .named("topgun_replication_sent_bytes_total", help: "Bytes of replication frames sent."))
        let rejected = r.makeCounter(descriptor: .named("topgun_replication_segments_rejected_total", help: "Frames refused whole (malformed, bad checksum, wrong origin)."))
        let refused = r.makeCounter(descriptor: .named("topgun_replication_handshakes_refused_total", help: "Connections refused during the handshake (bad credential, version, identity)."))
        let invalid = r.makeCounter(descriptor: .named("topgun_replication_ops_refused_invalid_total", help: "Merged operations refused one by one as invalid (a value too large, a counter leaving the Int64 range)."))
        let horizon = r.makeCounter(descriptor: .named("topgun_replication_refused_beyond_gc_horizon_total", help: "Operations refused as older than the garbage-collection horizon."))
        let idle = r.makeCounter(descriptor: .named("topgun_replication_idle_timeouts_total", help: "Connections closed because nothing arrived within the idle timeout."))
        let duplicates = r.makeCounter(descriptor: .named("topgun_replication_duplicate_node_ids_total", help: "Sessions refused because a node id was this node's own or already live."))
        let connectedPeers = r.makeGauge(descriptor: .named("topgun_connected_peers", help: "Peers with a live link now."))
        let openConnections = r.makeGauge(
            descriptor: .named("topgun_connections_open", help: "Accepted connections (TCP and HTTP) whose session has not ended."))
        let quarantined = r.makeCounter(descriptor: .named("topgun_records_quarantined_total", help: "Damaged records removed to be fetched again from a peer (since the store was created)."))
        let restored = r.makeCounter(descriptor: .named("topgun_records_restored_total", help: "Removed damaged records a peer's repair or a later write brought back."))
        let restamped = r.makeCounter(descriptor: .named("topgun_writes_restamped_total", help: "Users' writes taken under this node's stamps because the app's clock was ahead."))
        let helpNotices = "NOTICE frames peers sent about this node, by code (clock drift: its writes were refused for its clock)."
        let helpOffset = "The peer's wall clock minus this node's, told at its last handshake (positive: the peer is ahead)."
        let helpDrift = "Operations refused because their stamps were ahead of this clock by more than the drift bound, by peer."
        let helpLag = "How far this node's pull of the peer's log is behind this node's clock."
        let helpAckLag = "How far the peer's acknowledgement of this node's log is behind this node's clock (absent until it acknowledged)."
        let helpConnected = "1 when the peer has a live link now."
        let helpSeen = "When the peer was last heard from (Unix time)."
        let helpSessions = "Open accepted sessions by kind of principal (replica or user)."
        let helpUserSessions = "Open accepted sessions by user subject."
        let helpWrites = "Pushed writes this node refused, by reason."
        let helpTokens = "Client JWTs refused, by reason."
        var last = (StoreCounters.Snapshot(), ReplicaNode.Statistics())
        var acknowledgedLag: [NodeID: Gauge] = [:]
        var seenSubjects = Set<String>()
        func seconds(_ millis: UInt64) -> Double { Double(millis) / 1000 }
        while !Task.isCancelled {
            let store = node.store.counters.snapshot
            let stats = node.statistics
            mergeOps.increment(by: Int64(store.applied - last.0.applied))
            offered.increment(by: Int64(store.operations - last.0.operations))
            for d in node.store.counters.drainBatchDurations() { batch.record(d) }
            oplog.set(to: Double(try node.store.opLogCount()))
            bytesIn.increment(by: Int64(stats.bytesReceived - last.1.bytesReceived))
            bytesOut.increment(by: Int64(stats.bytesSent - last.1.bytesSent))
            rejected.increment(by: Int64(stats.segmentsRejected - last.1.segmentsRejected))
            refused.increment(by: Int64(stats.handshakesRefused - last.1.handshakesRefused))
            invalid.increment(by: Int64(stats.opsRefusedInvalid - last.1.opsRefusedInvalid))
            horizon.increment(by: Int64(store.refusedBeyondHorizon - last.0.refusedBeyondHorizon))
            idle.increment(by: Int64(stats.idleTimeouts - last.1.idleTimeouts))
            duplicates.increment(by: Int64(stats.duplicateIDsRefused - last.1.duplicateIDsRefused))
            quarantined.increment(by: Int64(clamping: stats.recordsQuarantined &- last.1.recordsQuarantined))
            restored.increment(by: Int64(clamping: stats.recordsRestored &- last.1.recordsRestored))
            restamped.increment(by: Int64(stats.writesRestamped - last.1.writesRestamped))
            for (code, count) in stats.notices {
                r.makeCounter(descriptor: .named("topgun_notices_received_total", help: helpNotices), labels: [("code", code)])
                    .increment(by: Int64(count - (last.1.notices[code] ?? 0)))
            }
            let now = node.store.clockHighWater.millis
            let connected = node.connectedPeers
            for peer in try node.store.peers() {
                let id = [("peer", peer.node.description)]
                r.makeGauge(descriptor: .named("topgun_peer_lag_seconds", help: helpLag), labels: id)
                    .set(to: seconds(now > peer.cursor.millis ? now - peer.cursor.millis : 0))
                let acknowledged = max(peer.acknowledged, node.acknowledgedCursor(of: peer.node) ?? .zero)
                if acknowledged > .zero {
                    let gauge = acknowledgedLag[peer.node] ?? r.makeGauge(descriptor: .named("topgun_peer_acknowledged_lag_seconds", help: helpAckLag), labels: id)
                    acknowledgedLag[peer.node] = gauge
                    gauge.set(to: seconds(now > acknowledged.millis ? now - acknowledged.millis : 0))
                }
                r.makeGauge(descriptor: .named("topgun_peer_connected", help: helpConnected), labels: id).set(to: connected.contains(peer.node) ? 1 : 0)
                if peer.lastSeenMillis > 0 {
                    r.makeGauge(descriptor: .named("topgun_peer_last_seen_timestamp_seconds", help: helpSeen), labels: id).set(to: seconds(peer.lastSeenMillis))
                }
            }
            connectedPeers.set(to: Double(connected.count))
            openConnections.set(to: Double(stats.connectionsOpen))
            for (peer, offset) in stats.clockOffsets {
                r.makeGauge(descriptor: .named("topgun_peer_clock_offset_seconds", help: helpOffset), labels: [("peer", peer.description)])
                    .set(to: Double(offset) / 1000)
            }
            for (peer, count) in stats.refusedForClockDrift {
                r.makeCounter(descriptor: .named("topgun_replication_refused_clock_drift_total", help: helpDrift), labels: [("peer", peer.description)])
                    .increment(by: Int64(count - (last.1.refusedForClockDrift[peer] ?? 0)))
            }
            let sessions = node.sessionsByPrincipal
            var byKind = ["replica": 0, "user": 0]
            for (principal, count) in sessions { byKind[principal.hasPrefix("user:") ? "user" : "replica", default: 0] += count }
            for (kind, count) in byKind { r.makeGauge(descriptor: .named("topgun_sessions", help: helpSessions), labels: [("kind", kind)]).set(to: Double(count)) }
            if subjects {
                // Zero for those that ended since the last second.
                let users = sessions.filter { $0.key.hasPrefix("user:") }
                for subject in Set(users.keys).union(seenSubjects) {
                    r.makeGauge(descriptor: .named("topgun_user_sessions", help: helpUserSessions), labels: [("subject", String(subject.dropFirst(5)))])
                        .set(to: Double(users[subject] ?? 0))
                }
                seenSubjects.formUnion(users.keys)
            }
            for (reason, count) in stats.writesRejected {
                r.makeCounter(descriptor: .named("topgun_writes_rejected_total", help: helpWrites), labels: [("reason", reason)])
                    .increment(by: Int64(count - (last.1.writesRejected[reason] ?? 0)))
            }
            for (reason, count) in stats.tokensRefused {
                r.makeCounter(descriptor: .named("topgun_tokens_refused_total", help: helpTokens), labels: [("reason", reason)])
                    .increment(by: Int64(count - (last.1.tokensRefused[reason] ?? 0)))
            }
            last = (store, stats)
            try await Task.sleep(for: .seconds(1))
        }
    }
}

extension MetricNameDescriptor {
    /// A metric named in full (`topgun_…_total`), with its HELP text.
    static func named(_ name: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
