import Logging
import NIOCore
import Synchronization
import TopGunCore
import TopGunStore

/// The serving side of one connection: authenticates the peer, then streams its op
/// log after the peer's cursor, repairs by Merkle digests when the log was truncated,
/// and tails new entries.
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
            var repairPending = false
        }
        let values = Mutex(Values())
    }

    func run() async throws {
        let state = State()
        let (outbox, out) = AsyncStream.makeStream(of: Frame.self)
        let (subscribed, subscribe) = AsyncStream.makeStream(of: Subscription.self)
        // Slow or silent peers: no handshake within the deadline closes the connection.
        let raw = channel.channel
        let timeout = node.configuration.handshakeTimeout.components
        let deadline = raw.eventLoop.scheduleTask(in: .nanoseconds(timeout.seconds * 1_000_000_000 + timeout.attoseconds / 1_000_000_000)) {
            if state.values.withLock({ $0.peer == nil }) { raw.close(promise: nil) }
        }
        defer { deadline.cancel() }
        try await channel.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask {
                    for await frame in outbox {
                        try await outbound.write(frame)
                        node.stats.withLock { $0.bytesSent += frame.body.count + 5 }
                        if frame.kind == .error { return }
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

    /// Handles one inbound frame; false ends the session.
    func handle(
        _ frame: Frame, _ state: State, _ out: AsyncStream<Frame>.Continuation,
        _ subscribe: AsyncStream<Subscription>.Continuation
    ) async throws -> Bool {
        let peer = state.values.withLock { $0.peer }
        if peer == nil {
            // The first frame must be a valid HELLO with the right token.
            do {
                let hello = try Hello(frame)
                guard hello.version == Frame.protocolVersion else {
                    throw ReplicationError(.unsupportedVersion, "protocol \(hello.version); this node speaks \(Frame.protocolVersion)")
                }
                guard constantTimeEquals(hello.token, node.configuration.token) else {
                    throw ReplicationError(.unauthorized, "wrong token")
                }
                state.values.withLock { $0.peer = hello.node }
                node.logger.info("peer connected", metadata: ["peer": "\(hello.node)"])
                out.yield(.welcome(node.store.nodeID))
                return true
            } catch {
                node.stats.withLock { $0.handshakesRefused += 1 }
                node.logger.warning("refused peer", metadata: ["reason": "\(error)"])
                out.yield(.error("\(error)"))
                return false
            }
        }
        switch frame.kind {
        case .subscribe:
            let subscription = try Subscription(frame)
            let head = try node.store.lastSequence()
            var cursor = subscription.cursor
            if let truncated = try node.store.logTruncatedThrough(), cursor == nil || cursor! < truncated {
                // The log no longer holds everything after the cursor: repair by digests,
                // then continue from the current head.
                state.values.withLock { $0.repairPending = true }
                let maps = subscription.maps.isEmpty ? Array(node.store.maps.keys).sorted() : subscription.maps
                var body: [UInt8] = []
                body.appendBE(UInt16(maps.count))
                for m in maps {
                    body.appendBE(UInt16(m.utf8.count))
                    body.append(contentsOf: m.utf8)
                }
                out.yield(Frame(.needDigests, body))
                cursor = head
            }
            subscribe.yield(Subscription(cursor: cursor, maps: subscription.maps, partitions: subscription.partitions))
            state.values.withLock { $0.subscription = subscription }
        case .ack:
            let cursor = try frame.stamp()
            state.values.withLock { $0.acked += 1 }
            if let peer { node.acknowledged.withLock { $0[peer] = max($0[peer] ?? .zero, cursor) } }
        case .digests:
            let digests = try Digests(frame)
            let subscription = state.values.withLock { $0.subscription } ?? Subscription()
            try repair(digests, subscription, out)
            let head = try node.store.lastSequence()
            if let head, state.values.withLock({ $0.repairPending }) { out.yield(.stamp(.resume, head)) }
            state.values.withLock { $0.repairPending = false }
        default:
            throw ReplicationError(.protocolViolation, "unexpected frame \(frame.kind.rawValue) from a subscriber")
        }
        return true
    }

    /// Sends the records of every bucket whose digest differs from the peer's.
    func repair(_ digests: Digests, _ subscription: Subscription, _ out: AsyncStream<Frame>.Continuation) throws {
        let maps = subscription.maps.isEmpty ? Array(digests.maps.keys) : subscription.maps.filter { digests.maps[$0] != nil }
        let ops = try node.store.repairOperations(theirs: digests.maps, maps: maps, partitions: subscription.partitions)
        var sequence: UInt64 = 0
        for start in stride(from: 0, to: ops.count, by: node.configuration.segmentSize) {
            let chunk = ops[start..<min(start + node.configuration.segmentSize, ops.count)].map { op in
                sequence += 1
                return LoggedOperation(sequence: HLCTimestamp(millis: sequence, counter: 0, node: node.store.nodeID), operation: op)
            }
            out.yield(Frame(.repair, Segment(origin: node.store.nodeID, entries: chunk).encoded()))
        }
        node.stats.withLock { $0.repairsSent += ops.count }
    }

    /// Streams the op log after the subscription's cursor, then tails it.
    func stream(_ subscription: Subscription, _ state: State, _ out: AsyncStream<Frame>.Continuation) async throws {
        var cursor = subscription.cursor
        let peer = state.values.withLock { $0.peer }
        let config = node.configuration
        while !Task.isCancelled {
            let (pending, inFlight) = state.values.withLock { ($0.repairPending, $0.sent - $0.acked) }
            if pending || inFlight >= config.maxInFlightSegments {
                try await Task.sleep(for: .milliseconds(2))
                continue
            }
            let entries = try node.store.operations(after: cursor, limit: config.segmentSize)
            guard let last = entries.last else {
                try await Task.sleep(for: config.pollInterval)
                continue
            }
            cursor = last.sequence
            // Ops that originated at the subscriber already live there.
            let wanted = entries.filter { $0.operation.timestamp.node != peer && subscription.accepts($0.operation) }
            guard !wanted.isEmpty else { continue }
            let segment = Segment(origin: node.store.nodeID, entries: wanted)
            let bytes = segment.encoded()
            state.values.withLock { $0.sent += 1 }
            node.stats.withLock {
                $0.segmentsSent += 1
                $0.rawBytesSent += wanted.reduce(0) { $0 + $1.operation.rawSize }
            }
            out.yield(Frame(.segment, bytes))
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
