import Logging
import NIOCore
import TopGunCore
import TopGunStore

extension ReplicaNode {
    /// Pulls from `peer` until cancelled, reconnecting with exponential backoff; a
    /// restart resumes from the cursor stored with the last applied segment.
    func pull(from peer: PeerAddress) async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await session(with: peer) { backoff = .milliseconds(100) }
            } catch {
                if Task.isCancelled { return }
                logger.info("peer link down", metadata: ["peer": "\(peer)", "error": "\(error)", "retry_in": "\(backoff)"])
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    func session(with address: PeerAddress, connected: () -> Void) async throws {
        let channel = try await connect(address)
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(Hello(version: Frame.protocolVersion, node: store.nodeID, token: configuration.token).frame)
            var frames = inbound.makeAsyncIterator()
            guard let first = try await frames.next() else { throw ReplicationError(.protocolViolation, "closed during handshake") }
            let (version, peer) = try first.welcome()
            guard version == Frame.protocolVersion else { throw ReplicationError(.unsupportedVersion, "peer speaks \(version)") }
            connected()
            var subscription = configuration.subscription
            subscription.cursor = try store.peerCursor(peer)
            try await outbound.write(subscription.frame)
            logger.info("pulling", metadata: ["peer": "\(peer)", "address": "\(address)", "cursor": "\(subscription.cursor.map { "\($0)" } ?? "start")"])
            let maps = subscription.maps
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                if let interval = configuration.antiEntropyInterval {
                    tasks.addTask {
                        while true {
                            try await Task.sleep(for: interval)
                            try await outbound.write(self.digests(for: maps).frame)
                        }
                    }
                }
                while let frame = try await frames.next() {
                    try await handle(frame, from: peer, outbound)
                }
                tasks.cancelAll()
            }
        }
    }

    func handle(_ frame: Frame, from peer: NodeID, _ outbound: NIOAsyncChannelOutboundWriter<Frame>) async throws {
        stats.withLock { $0.bytesReceived += frame.body.count + 5 }
        switch frame.kind {
        case .segment, .repair:
            let segment: Segment
            do {
                segment = try Segment(decoding: frame.body)
                guard segment.origin == peer else {
                    throw ReplicationError(.wrongOrigin, "segment claims origin \(segment.origin), peer is \(peer)")
                }
            } catch {
                stats.withLock { $0.segmentsRejected += 1 }
                logger.warning("rejected segment", metadata: ["peer": "\(peer)", "error": "\(error)"])
                throw error
            }
            let ops = segment.entries.map(\.operation)
            let outcomes: [ApplyOutcome]
            if frame.kind == .segment {
                outcomes = try store.apply(segment.entries, fromPeer: peer, cursor: segment.lastSequence)
                try await outbound.write(.stamp(.ack, segment.lastSequence))
            } else {
                outcomes = try store.apply(ops)
            }
            let applied = outcomes.filter(\.isApplied).count
            stats.withLock {
                $0.segmentsApplied += 1
                $0.opsApplied += applied
            }
        case .needDigests:
            try await outbound.write(try digests(for: try frame.mapList()).frame)
        case .resume:
            _ = try store.apply([], fromPeer: peer, cursor: try frame.stamp())
        case .error:
            throw ReplicationError(.protocolViolation, "peer error: \(String(decoding: frame.body, as: UTF8.self))")
        default:
            throw ReplicationError(.protocolViolation, "unexpected frame \(frame.kind.rawValue) from a server")
        }
    }

    func digests(for maps: [String]) throws -> Digests {
        let names = maps.isEmpty ? Array(store.maps.keys) : maps
        var out: [String: [UInt16: [UInt64]]] = [:]
        for map in names { out[map] = try store.bucketDigests(map: map) }
        return Digests(maps: out)
    }
}
