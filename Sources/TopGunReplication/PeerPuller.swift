import Logging
import Synchronization
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
            } catch let error as ReplicationError where error.code == .duplicateNodeID {
                stats.withLock { $0.linksDown += 1 }
                logger.error("peer refused: duplicate node id", metadata: ["peer": "\(peer)", "error": "\(error)"])
            } catch {
                if Task.isCancelled { return }
                stats.withLock { $0.linksDown += 1 }
                logger.info("peer link down", metadata: ["peer": "\(peer)", "error": "\(error)", "retry_in": "\(backoff)"])
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    func session(with address: PeerAddress, connected: () -> Void) async throws {
        let channel = try await connect(address)
        try await channel.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            let peer = try await handshake(channel.channel, address, outbound, &frames)
            connected()
            try store.registerPeer(peer)
            _ = contacted.withLock { $0.insert(address) }
            var subscription = configuration.subscription
            subscription.cursor = try store.peerCursor(peer)
            let scope = PeerScope(maps: subscription.maps, partitions: subscription.partitions)
            // A cursor taken under a narrower subscription skipped what is now wanted:
            // backfill by digests (they cover maps this node has never seen, too).
            let covered = try store.peer(peer)?.scope
            let widened = subscription.cursor != nil && !(covered?.covers(scope) ?? false)
            try await outbound.write(Message.subscribe(subscription).frame)
            logger.info("pulling", metadata: ["peer": "\(peer)", "address": "\(address)", "cursor": "\(subscription.cursor.map { "\($0)" } ?? "start")", "backfill": "\(widened)"])
            let maps = subscription.maps
            if widened { try await outbound.write(Message.digests(self.digests(for: maps)).frame) }
            let held = Flag()
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                // Once an entry was refused, the session goes on without moving the
                // cursor; after a pause it ends, and the next one offers the entry again.
                tasks.addTask {
                    while !held.isSet { try await Task.sleep(for: .milliseconds(200)) }
                    try await Task.sleep(for: self.configuration.heldRetryInterval)
                    self.logger.info("ending the session to offer refused operations again", metadata: ["peer": "\(peer)"])
                    try await channel.channel.close()
                }
                if let interval = configuration.antiEntropyInterval {
                    tasks.addTask {
                        while true {
                            try await Task.sleep(for: interval)
                            try await outbound.write(Message.digests(self.digests(for: maps)).frame)
                        }
                    }
                }
                while let frame = try await frames.next() {
                    try await handle(frame, from: peer, scope: scope, held: held, outbound)
                }
                tasks.cancelAll()
            }
        }
    }

    /// HELLO, then WELCOME within the handshake timeout (a server that accepts but never
    /// answers is dropped), from a node that is not this one.
    func handshake(
        _ raw: any Channel, _ address: PeerAddress, _ outbound: NIOAsyncChannelOutboundWriter<Frame>,
        _ frames: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator
    ) async throws -> NodeID {
        let welcomed = Flag()
        let deadline = raw.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds(configuration.handshakeTimeout))) {
            if !welcomed.isSet { raw.close(promise: nil) }
        }
        defer { deadline.cancel() }
        try await outbound.write(Message.hello(Hello(version: Frame.protocolVersion, node: store.nodeID, token: configuration.token)).frame)
        guard let first = try await frames.next() else { throw ReplicationError(.protocolViolation, "closed during handshake") }
        let message = try Message(first)
        let (version, peer): (UInt16, NodeID)
        switch message {
        case .welcome(let v, let n): (version, peer) = (v, n)
        case .error(let text):
            let code: ReplicationError.Code = text.hasPrefix(ReplicationError.Code.duplicateNodeID.rawValue) ? .duplicateNodeID : .unauthorized
            throw ReplicationError(code, text)
        case .hello, .subscribe, .segment, .ack, .digests, .needDigests, .repair, .resume, .heartbeat:
            throw ReplicationError(.protocolViolation, "expected WELCOME, got \(message.name)")
        }
        welcomed.set()
        guard version == Frame.protocolVersion else { throw ReplicationError(.unsupportedVersion, "peer speaks \(version)") }
        guard peer != store.nodeID else {
            throw ReplicationError(
                .duplicateNodeID, "the server at \(address) has this node's own id \(peer): one of the two data directories is a copy; give it a fresh id with `topgun reset-id`")
        }
        return peer
    }

    func handle(
        _ frame: Frame, from peer: NodeID, scope: PeerScope, held: Flag, _ outbound: NIOAsyncChannelOutboundWriter<Frame>
    ) async throws {
        stats.withLock { $0.bytesReceived += frame.body.count + 5 }
        let message: Message
        do {
            message = try Message(frame)
            if case .segment(let segment) = message, segment.origin != peer {
                throw ReplicationError(.wrongOrigin, "segment claims origin \(segment.origin), peer is \(peer)")
            }
            if case .repair(let segment) = message, segment.origin != peer {
                throw ReplicationError(.wrongOrigin, "segment claims origin \(segment.origin), peer is \(peer)")
            }
        } catch {
            stats.withLock { $0.segmentsRejected += 1 }
            logger.warning("rejected segment", metadata: ["peer": "\(peer)", "error": "\(error)"])
            throw error
        }
        switch message {
        case .segment(let segment), .repair(let segment):
            let outcomes: [ApplyOutcome]
            if case .segment = message {
                outcomes = try store.apply(
                    segment.entries, fromPeer: peer, cursor: segment.lastSequence, scope: scope, holdingCursor: held.isSet)
                // The stored cursor, which stops before a refused entry.
                let cursor = try store.peerCursor(peer) ?? .zero
                try await outbound.write(Message.ack(Acknowledgement(cursor: cursor, head: try headForAcknowledgement())).frame)
            } else {
                outcomes = try store.apply(segment.entries.map(\.operation), repairFrom: peer)
            }
            let applied = outcomes.filter(\.isApplied).count
            stats.withLock {
                $0.segmentsApplied += 1
                $0.opsApplied += applied
            }
            let invalid = outcomes.compactMap { if case .rejected(.invalid(let why)) = $0 { why } else { nil } }
            if !invalid.isEmpty {
                stats.withLock { $0.opsRefusedInvalid += invalid.count }
                logger.warning("refused invalid operations; the rest of the segment applied", metadata: ["peer": "\(peer)", "count": "\(invalid.count)", "first": "\(invalid[0])"])
            }
            let horizon = outcomes.filter { if case .rejected(.beyondHorizon) = $0 { true } else { false } }.count
            if horizon > 0 {
                logger.error(
                    "refused operations older than the GC horizon for records this node no longer holds; if they are writes this node never saw, run `topgun repair` from that peer",
                    metadata: ["peer": "\(peer)", "refused": "\(horizon)"])
            }
            if outcomes.contains(where: \.holdsCursor) && !held.isSet {
                // The cursor (or, for a repair, the RESUME that would follow) stays before
                // the refused entry: later segments of this session must not move it.
                logger.info("operations refused for now; cursor held", metadata: ["peer": "\(peer)", "count": "\(outcomes.filter(\.holdsCursor).count)"])
                held.set()
            }
        case .needDigests(let maps):
            try await outbound.write(Message.digests(try digests(for: maps)).frame)
        case .resume(let head):
            if !held.isSet { try store.recordRepair(fromPeer: peer, through: head, scope: scope) }
        case .error(let text):
            if text.contains(ReplicationError.Code.duplicateNodeID.rawValue) {
                throw ReplicationError(.duplicateNodeID, "peer error: \(text)")
            }
            throw ReplicationError(.protocolViolation, "peer error: \(text)")
        case .hello, .welcome, .subscribe, .ack, .digests, .heartbeat:
            throw message.unexpected(from: "a server")
        }
    }

    func digests(for maps: [String]) throws -> Digests {
        let names = maps.isEmpty ? Array(store.maps.keys) : maps
        var out: [String: [UInt16: [UInt64]]] = [:]
        for map in names { out[map] = try store.bucketDigests(map: map) }
        return Digests(maps: out)
    }
}

/// A flag set once, read from another thread.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
