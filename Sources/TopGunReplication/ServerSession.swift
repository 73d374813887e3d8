import Logging
import NIOCore
import Synchronization
import TopGunCore
import TopGunStore

/// The serving side of one connection: authenticates the peer, then streams its op
/// log after the peer's cursor, repairs by Merkle digests whenever the log no longer
/// holds what the stream needs, and tails new entries.
struct ServerSession {
    let node: ReplicaNode
    let channel: NIOAsyncChannel<Frame, Frame>

    /// Shared between the reader and the streamer of this session.
    final class State: Sendable {
        struct Values {
            var peer: NodeID?
            var subscription: Subscription?
            var sent = 0
            var acked = 0
            /// The stream found the log truncated after its cursor and waits for the
            /// repair; `resumeFrom` is where it continues once the repair is sent.
            var repairPending = false
            var resumeFrom: HLCTimestamp?
        }
        let values = Mutex(Values())
    }

    func run() async throws {
        let state = State()
        defer {
            if let peer = state.values.withLock({ $0.peer }) { _ = node.liveSessions.withLock { $0.remove(peer) } }
        }
        let (outbox, out) = AsyncStream.makeStream(of: Message.self)
        let (subscribed, subscribe) = AsyncStream.makeStream(of: Subscription.self)
        // Slow or silent peers: no handshake within the deadline closes the connection.
        let raw = channel.channel
        let deadline = raw.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds(node.configuration.handshakeTimeout))) {
            if state.values.withLock({ $0.peer == nil }) { raw.close(promise: nil) }
        }
        defer { deadline.cancel() }
        try await channel.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask {
                    for await message in outbox {
                        let frame = message.frame
                        try await outbound.write(frame)
                        node.stats.withLock { $0.bytesSent += frame.body.count + 5 }
                        if case .error = message { return }
                    }
                }
                tasks.addTask {
                    defer {
                        subscribe.finish()
                        out.finish()
                    }
                    for try await frame in inbound {
                        node.stats.withLock { $0.bytesReceived += frame.body.count + 5 }
                        if try await !handle(frame, state, out, subscribe) { return }
                    }
                }
                tasks.addTask {
                    var iterator = subscribed.makeAsyncIterator()
                    guard let subscription = await iterator.next() else { return }
                    try await stream(subscription, state, out)
                }
                try await tasks.next()
                tasks.cancelAll()
            }
        }
    }

    /// Checks a HELLO: version, token, and an id that is neither this node's nor one
    /// with a live session already (two nodes sharing an id never exchange writes).
    func admit(_ frame: Frame, _ state: State) throws -> NodeID {
        guard case .hello(let hello) = try Message(frame) else {
            throw ReplicationError(.protocolViolation, "expected HELLO")
        }
        guard hello.version == Frame.protocolVersion else {
            throw ReplicationError(.unsupportedVersion, "protocol \(hello.version); this node speaks \(Frame.protocolVersion)")
        }
        guard constantTimeEquals(hello.token, node.configuration.token) else {
            throw ReplicationError(.unauthorized, "wrong token")
        }
        guard hello.node != node.store.nodeID else {
            node.stats.withLock { $0.duplicateIDsRefused += 1 }
            throw ReplicationError(
                .duplicateNodeID,
                "peer presents this node's own id \(hello.node): a copy of this data directory? give the copy a fresh id with `topgun reset-id`")
        }
        let fresh = node.liveSessions.withLock { $0.insert(hello.node).inserted }
        guard fresh else {
            node.stats.withLock { $0.duplicateIDsRefused += 1 }
            throw ReplicationError(
                .duplicateNodeID,
                "node id \(hello.node) already has a live session: two nodes share this id (a copied data directory?), or the old connection is not yet closed")
        }
        state.values.withLock { $0.peer = hello.node }
        return hello.node
    }

    /// Handles one inbound frame; false ends the session.
    func handle(
        _ frame: Frame, _ state: State, _ out: AsyncStream<Message>.Continuation,
        _ subscribe: AsyncStream<Subscription>.Continuation
    ) async throws -> Bool {
        let peer = state.values.withLock { $0.peer }
        guard let peer else {
            // The first frame must be a valid HELLO with the right token.
            do {
                let peer = try admit(frame, state)
                node.logger.info("peer connected", metadata: ["peer": "\(peer)"])
                out.yield(.welcome(version: Frame.protocolVersion, node: node.store.nodeID))
                return true
            } catch {
                node.stats.withLock { $0.handshakesRefused += 1 }
                node.logger.warning("refused peer", metadata: ["reason": "\(error)"])
                out.yield(.error("\(error)"))
                return false
            }
        }
        let message = try Message(frame)
        switch message {
        case .subscribe(let subscription):
            // From now on garbage collection waits for this subscriber, across restarts.
            try node.store.registerPeer(peer)
            state.values.withLock { $0.subscription = subscription }
            subscribe.yield(subscription)
        case .ack(let ack):
            state.values.withLock { $0.acked += 1 }
            node.acknowledged.withLock { $0[peer] = max($0[peer] ?? .zero, ack.cursor) }
            // A partial subscriber's cursor passes entries it filtered out, tombstones
            // included: its acknowledgement cannot let them go.
            if let subscription = state.values.withLock({ $0.subscription }), subscription.maps.isEmpty, subscription.partitions.isEmpty {
                node.acknowledgements.withLock { $0.record(peer, acked: ack.cursor, peerHead: ack.head) }
            }
        case .digests(let digests):
            let subscription = state.values.withLock { $0.subscription } ?? Subscription()
            // The head is read before the records: everything logged up to it is in
            // the repair, so the stream may go on after it.
            let head = try node.store.logHead()
            try repair(digests, subscription, out)
            out.yield(.resume(head))
            state.values.withLock {
                if $0.repairPending {
                    $0.resumeFrom = head
                    $0.repairPending = false
                }
            }
        case .hello, .welcome, .segment, .needDigests, .error, .repair, .resume, .heartbeat:
            throw message.unexpected(from: "a subscriber")
        }
        return true
    }

    /// Sends the records of every bucket whose digest differs from the peer's, in the
    /// subscribed maps (all maps either side has when it subscribed to everything).
    func repair(_ digests: Digests, _ subscription: Subscription, _ out: AsyncStream<Message>.Continuation) throws {
        // Maps another process created since this one loaded the table are covered too.
        try node.store.refreshMaps()
        let ops = try node.store.repairOperations(theirs: digests.maps, maps: subscription.maps, partitions: subscription.partitions)
        var sequence: UInt64 = 0
        for start in stride(from: 0, to: ops.count, by: node.configuration.segmentSize) {
            let chunk = ops[start..<min(start + node.configuration.segmentSize, ops.count)].map { op in
                sequence += 1
                return LoggedOperation(sequence: HLCTimestamp(millis: sequence, counter: 0, node: node.store.nodeID), operation: op)
            }
            out.yield(.repair(Segment(origin: node.store.nodeID, entries: chunk)))
        }
        node.stats.withLock { $0.repairsSent += ops.count }
    }

    /// Streams the op log after the subscription's cursor, then tails it. Whenever
    /// garbage collection removed entries the stream has not sent yet — at subscribe
    /// time or while the connection stalled — it asks for digests and continues after
    /// the repair instead of skipping them.
    func stream(_ subscription: Subscription, _ state: State, _ out: AsyncStream<Message>.Continuation) async throws {
        var cursor = subscription.cursor
        let peer = state.values.withLock { $0.peer }!
        let config = node.configuration
        while !Task.isCancelled {
            let (pending, inFlight, resume) = state.values.withLock { values in
                defer { values.resumeFrom = nil }
                return (values.repairPending, values.sent - values.acked, values.resumeFrom)
            }
            if let resume { cursor = max(cursor ?? .zero, resume) }
            if pending || inFlight >= config.maxInFlightSegments {
                try await Task.sleep(for: .milliseconds(2))
                continue
            }
            let entries: [LoggedOperation]
            switch try node.store.readLog(after: cursor, limit: config.segmentSize) {
            case .truncated(let through):
                node.logger.info(
                    "log truncated past the subscriber's cursor; repairing by digests",
                    metadata: ["peer": "\(peer)", "cursor": "\(cursor.map { "\($0)" } ?? "start")", "truncated": "\(through)"])
                state.values.withLock { $0.repairPending = true }
                out.yield(.needDigests(maps: subscription.maps))
                continue
            case .operations(let read):
                entries = read
            }
            guard let last = entries.last else {
                try await Task.sleep(for: config.pollInterval)
                continue
            }
            cursor = last.sequence
            // Everything the subscription covers is sent, also ops that came from the
            // subscriber: suppressing them by origin stamp misattributes OR-Map and
            // counter states repaired through a chain (stamped with one part's origin)
            // and LWW writes whose stamp was reused; an echo changes nothing there.
            let wanted = entries.filter { subscription.accepts($0.operation) }
            guard !wanted.isEmpty else { continue }
            let segment = Segment(origin: node.store.nodeID, entries: wanted)
            state.values.withLock { $0.sent += 1 }
            node.stats.withLock {
                $0.segmentsSent += 1
                $0.rawBytesSent += wanted.reduce(0) { $0 + $1.operation.rawSize }
            }
            out.yield(.segment(segment))
        }
    }
}

extension ReplicatedOperation {
    /// Key, value and HLC bytes: what a naive protocol would have to ship.
    var rawSize: Int {
        let payload: Int
        switch self.payload {
        case .lww(let v, _): payload = v?.count ?? 0
        case .orSet(let s): payload = s.state.encoded.count
        case .counter(let c): payload = c.state.encoded.count
        }
        return map.utf8.count + key.utf8.count + 16 + payload
    }
}
