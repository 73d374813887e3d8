import Logging
import NIOCore
import Synchronization
import TopGunCore
import TopGunStore

/// What a link reports as it goes, for sync sessions and `topgun sync --once`.
protocol LinkObserver: Sendable {
    /// The remote's log was applied through `cursor` (its head was `remoteHead` when
    /// the link opened).
    func pulled(through cursor: HLCTimestamp, remoteHead: HLCTimestamp)
    /// The remote acknowledged this node's log through `cursor`.
    func pushed(through cursor: HLCTimestamp)
    /// The remote sent a NOTICE about this node (its writes refused for its clock).
    func noticed(_ notice: ReplicationError)
}

extension LinkObserver {
    func noticed(_ notice: ReplicationError) {}
}

/// One connection after its handshake, used both ways: the publisher half serves this
/// node's log when the remote subscribes to it, the subscriber half pulls the remote's
/// log when this side subscribes. The node that dialled and the node that accepted run
/// the same code; what differs is who subscribes (see `Dialer` and `Listener`).
struct Link {
    let node: ReplicaNode
    let peer: NodeID
    /// What this side pulls of the remote's log; nil: it pulls nothing over this link.
    let subscription: Subscription?
    /// This link would pull, but another link to the same peer does: it is closed when
    /// that one ends, so that a reconnect can take the pull over.
    let couldPull: Bool
    /// The cursor was taken under a narrower subscription: backfill by digests first.
    let widened: Bool
    /// The remote may subscribe to this node's log over this link.
    let serves: Bool
    /// The remote's log head when the link opened (zero when unknown or empty).
    let remoteHead: HLCTimestamp
    let observer: (any LinkObserver)?
    /// What the remote may read and write on this node.
    let access: Access
    /// Push only writes this node made (an app syncing as a user: the server takes
    /// nothing else from it).
    let ownWritesOnly: Bool
    /// The remote starts by asking for digests (WELCOME said so): progress is reported
    /// only once that repair is in.
    var repairFirst = false
    /// This node told the remote (a user's app) in WELCOME that it starts with a repair.
    var servesRepairFirst = false
    /// The policy generation `access` was built under.
    var grantedUnder = 0

    /// State of the publisher half, shared by the reader and the stream.
    final class Publisher: Sendable {
        struct Values {
            var subscription: Subscription?
            var sent = 0
            var acked = 0
            /// The stream found the log truncated after its cursor and waits for the
            /// repair; `resumeFrom` is where it continues once the repair is sent.
            var repairPending = false
            var resumeFrom: HLCTimestamp?
        }
        let values = Mutex(Values())
        /// Bumped by new local commits (through the node), acknowledgements and repairs.
        let wake = ChangeSignal()
        /// Ops this link's subscriber half applied, by the op-log key they were logged
        /// under: the remote sent them, so the stream need not send them back (unless
        /// the logged op differs, as after a resolver's replacement). In memory, per
        /// link; entries go once the stream has passed them.
        let received = Mutex<[HLCTimestamp: ReplicatedOperation]>([:])
        /// The remote's digests not yet answered, merged: DIGESTS frames that arrive
        /// while a repair is being sent are served by one more repair, not one each, so
        /// a reader flooding DIGESTS costs this node one repair at a time.
        let pendingDigests = Mutex<Digests?>(nil)
        /// Bumped when `pendingDigests` gets digests.
        let repairWake = ChangeSignal()
    }

    /// Runs the link until the remote closes it, an error ends it, or the task is
    /// cancelled. `frames` continues after the handshake.
    func run(
        _ channel: any Channel, _ frames: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator,
        _ outbound: NIOAsyncChannelOutboundWriter<Frame>
    ) async throws {
        let publisher = Publisher()
        let held = Flag()
        let failure = Mutex<(any Error)?>(nil)
        let (outbox, out) = AsyncStream.makeStream(of: Message.self)
        let (subscribed, subscribe) = AsyncStream.makeStream(of: Subscription.self)
        let registration = node.register(publisher.wake)
        defer { node.unregister(registration) }
        let standby = subscription == nil && couldPull ? node.standBy(for: peer) { channel.close(promise: nil) } : nil
        defer { if let standby { node.endStandby(standby, for: peer) } }
        let scope = subscription.map { PeerScope(maps: $0.maps, partitions: $0.partitions) } ?? .all
        /// A helper task that fails closes the connection; the reader then ends.
        @Sendable func closing(_ body: @escaping @Sendable () async throws -> Void) -> @Sendable () async -> Void {
            {
                do { try await body() } catch {
                    if !(error is CancellationError) {
                        failure.withLock { if $0 == nil { $0 = error } }
                        channel.close(promise: nil)
                    }
                }
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            let node = self.node
            tasks.addTask(operation: closing {
                for await message in outbox {
                    let frame = message.frame
                    try await outbound.write(frame)
                    node.stats.withLock { $0.bytesSent += frame.body.count + 5 }
                    if case .error = message { channel.close(promise: nil) }
                }
            })
            if serves {
                tasks.addTask(operation: closing {
                    var iterator = subscribed.makeAsyncIterator()
                    guard let subscription = await iterator.next() else { return }
                    try await stream(subscription, publisher, out)
                })
                // Repairs go straight to the connection, a chunk at a time, each write
                // waiting while the connection is not writable: what a repair holds is
                // one partition's records, however slowly the remote reads.
                tasks.addTask(operation: closing {
                    while true {
                        let generation = publisher.repairWake.generation
                        if let digests = publisher.pendingDigests.withLock({ pending in
                            defer { pending = nil }
                            return pending
                        }) {
                            try await repair(digests, publisher, outbound)
                        } else {
                            _ = await publisher.repairWake.wait(after: generation)
                            try Task.checkCancellation()
                        }
                    }
                })
            }
            if let subscription {
                if !repairFirst { observer?.pulled(through: subscription.cursor ?? .zero, remoteHead: remoteHead) }
                out.yield(.subscribe(subscription))
                node.logger.info(
                    "pulling", metadata: ["peer": "\(peer)", "cursor": "\(subscription.cursor.map { "\($0)" } ?? "start")", "backfill": "\(widened)"])
                if widened { out.yield(.digests(try node.digests(for: subscription.maps, visibleTo: access))) }
                // Once an entry was refused, the link goes on without moving the cursor;
                // after a pause it ends, and the next one offers the entry again.
                tasks.addTask(operation: closing {
                    await held.waitUntilSet()
                    try Task.checkCancellation()
                    try await Task.sleep(for: node.configuration.heldRetryInterval)
                    node.logger.info("ending the session to offer refused operations again", metadata: ["peer": "\(peer)"])
                    channel.close(promise: nil)
                })
                // A server does not ask users' apps for repairs: they push by log.
                if let interval = node.configuration.antiEntropyInterval, access.principal.isReplica {
                    tasks.addTask(operation: closing {
                        while true {
                            try await Task.sleep(for: interval)
                            out.yield(.digests(try node.digests(for: subscription.maps, visibleTo: access)))
                        }
                    })
                }
                // Records removed as damaged are asked for at once, and at every
                // connect until they are back.
                if access.principal.isReplica {
                    let seen = node.repairWanted.generation
                    if try !node.store.quarantinedRecords().isEmpty {
                        out.yield(.digests(try node.digests(for: subscription.maps, visibleTo: access)))
                    }
                    tasks.addTask(operation: closing {
                        var seen = seen
                        while true {
                            seen = await node.repairWanted.wait(after: seen)
                            try Task.checkCancellation()
                            out.yield(.digests(try node.digests(for: subscription.maps, visibleTo: access)))
                        }
                    })
                }
            }
            defer {
                out.finish()
                subscribe.finish()
                tasks.cancelAll()
            }
            while let frame = try await frames.next() {
                if try await !handle(frame, publisher, held, scope, out, subscribe) { break }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Handles one inbound frame; false ends the link.
    func handle(
        _ frame: Frame, _ publisher: Publisher, _ held: Flag, _ scope: PeerScope,
        _ out: AsyncStream<Message>.Continuation, _ subscribe: AsyncStream<Subscription>.Continuation
    ) async throws -> Bool {
        node.stats.withLock { $0.bytesReceived += frame.body.count + 5 }
        let message: Message
        do {
            message = try Message(frame)
            switch message {
            case .segment(let segment), .repair(let segment):
                guard segment.origin == peer else {
                    throw ReplicationError(.wrongOrigin, "segment claims origin \(segment.origin), peer is \(peer)")
                }
            default: break
            }
        } catch {
            node.stats.withLock { $0.segmentsRejected += 1 }
            node.logger.warning("rejected message", metadata: ["peer": "\(peer)", "error": "\(error)"])
            throw error
        }
        switch message {
        // The publisher half: the remote pulls this node's log.
        case .subscribe(let subscription):
            guard serves else { throw ReplicationError(.protocolViolation, "this node does not offer its log on this link") }
            guard publisher.values.withLock({ $0.subscription == nil }) else {
                throw ReplicationError(.protocolViolation, "a second SUBSCRIBE on one link")
            }
            // From now on garbage collection waits for this subscriber, across restarts.
            try node.store.registerPeer(peer)
            publisher.values.withLock { $0.subscription = subscription }
            // The remote already holds this node's log through its cursor.
            observer?.pushed(through: subscription.cursor ?? .zero)
            subscribe.yield(subscription)
        case .ack(let ack):
            guard serves else { throw message.unexpected(from: "a peer this node does not serve") }
            publisher.values.withLock { $0.acked += 1 }
            // Write concern counts replicas only, and never past this log's head (a
            // hostile acknowledgement could claim anything).
            if access.principal.isReplica {
                let head = try node.store.lastSequence() ?? .zero
                node.acknowledged.withLock { $0[peer] = max($0[peer] ?? .zero, min(ack.cursor, head)) }
            }
            // A partial subscriber's cursor passes entries it filtered out, tombstones
            // included: its acknowledgement cannot let them go.
            if let subscription = publisher.values.withLock({ $0.subscription }), subscription.maps.isEmpty, subscription.partitions.isEmpty {
                node.acknowledgements.withLock { $0.record(peer, acked: ack.cursor, peerHead: ack.head) }
            }
            observer?.pushed(through: ack.cursor)
            node.acknowledgementsChanged.notify()
            publisher.wake.notify()
        case .digests(let digests):
            guard serves else { throw message.unexpected(from: "a peer this node does not serve") }
            // Only maps this node has can differ in something it can send.
            try node.store.refreshMaps()
            let known = node.store.maps
            publisher.pendingDigests.withLock { pending in
                var merged = pending ?? Digests(maps: [:])
                for (map, buckets) in digests.maps where known[map] != nil { merged.maps[map] = buckets }
                pending = merged
            }
            node.stats.withLock { $0.repairsRequested += 1 }
            publisher.repairWake.notify()

        // The subscriber half: this side pulls the remote's log.
        case .segment(let segment), .repair(let segment):
            guard subscription != nil else { throw message.unexpected(from: "a peer this node did not subscribe to") }
            try await apply(segment, isRepair: { if case .repair = message { true } else { false } }(), held, scope, publisher, out)
        case .needDigests(let maps):
            guard subscription != nil else { throw message.unexpected(from: "a peer this node did not subscribe to") }
            out.yield(.digests(try node.digests(for: maps, visibleTo: access)))
        case .resume(let head):
            guard subscription != nil else { throw message.unexpected(from: "a peer this node did not subscribe to") }
            if !held.isSet {
                try node.store.recordRepair(fromPeer: peer, through: head, scope: scope)
                observer?.pulled(through: try node.store.peerCursor(peer) ?? .zero, remoteHead: remoteHead)
            }

        case .rewind(let head):
            guard subscription != nil else { throw message.unexpected(from: "a peer this node did not subscribe to") }
            let before = try node.store.rewindCursor(ofPeer: peer, to: head)
            node.logger.warning("the peer's log ends before this node's cursor; cursor moved back", metadata: ["peer": "\(peer)", "cursor": "\(before)", "head": "\(head)"])
        case .notice(let notice):
            node.stats.withLock { $0.notices[notice.code.rawValue, default: 0] += 1 }
            node.logger.error("the peer reports a problem with this node", metadata: ["peer": "\(peer)", "code": "\(notice.code.rawValue)", "message": "\(notice.message)"])
            observer?.noticed(notice)
        case .rejected(let rejection):
            // Only a server this node pushes to, trusted as a replica, may make it
            // revert a write: a user's app must never rewrite a server's record.
            guard serves, access.principal.isReplica else { throw message.unexpected(from: "a peer that may not refuse this node's writes") }
            try reverted(rejection)
        case .error(let error):
            throw error
        case .hello, .welcome, .proof, .admitted, .heartbeat:
            throw message.unexpected(from: "a connected peer")
        }
        return true
    }

    /// Applies a segment of the remote's log (moving the cursor and acknowledging) or a
    /// repair (no cursor).
    func apply(
        _ segment: Segment, isRepair: Bool, _ held: Flag, _ scope: PeerScope, _ publisher: Publisher,
        _ out: AsyncStream<Message>.Continuation
    ) async throws {
        let store = node.store
        let outcomes: [ApplyOutcome]
        let (entries, screenedOut) = try screened(segment.entries, isRepair: isRepair)
        if access.principal.isReplica {
            // Node ids that write through replicas: a user's app may not claim them.
            node.replicaOrigins.withLock { origins in
                if origins.count < 1_000_000 { for entry in entries { origins.insert(entry.operation.timestamp.node) } }
            }
        }
        // Refusals go before the acknowledgement: a client that sees its writes
        // acknowledged has already heard which of them were refused.
        // A user's app takes its server's clock as the reference: an app whose clock
        // is behind would refuse every server write as "ahead" and never catch up.
        let followsServer = node.configuration.bearerToken != nil && access.principal.isReplica
        if !isRepair {
            outcomes = try store.apply(
                entries, fromPeer: peer, cursor: segment.lastSequence, scope: scope, holdingCursor: held.isSet, writesRejected: screenedOut.count,
                trustingStamps: followsServer, restampingDrift: !access.principal.isReplica)
            for rejection in try screenedOut + horizonRejections(outcomes, entries) { out.yield(.rejected(rejection)) }
            try restamped(outcomes, entries, out)
            // The stored cursor, which stops before a refused entry.
            let cursor = try store.peerCursor(peer) ?? .zero
            out.yield(.ack(Acknowledgement(cursor: cursor, head: serves ? try store.lastSequence() : nil)))
            observer?.pulled(through: cursor, remoteHead: remoteHead)
        } else {
            outcomes = try store.apply(entries.map(\.operation), repairFrom: peer, trustingStamps: followsServer)
            for rejection in try screenedOut + horizonRejections(outcomes, entries) { out.yield(.rejected(rejection)) }
        }
        // Only while the remote subscribes on this link: the stream prunes the map.
        if serves, publisher.values.withLock({ $0.subscription != nil }) {
            publisher.received.withLock { received in
                for (outcome, entry) in zip(outcomes, entries) {
                    if case .applied(let sequence) = outcome { received[sequence] = entry.operation }
                }
            }
        }
        let applied = outcomes.filter(\.isApplied).count
        node.stats.withLock {
            $0.segmentsApplied += 1
            $0.opsApplied += applied
        }
        let invalid = outcomes.compactMap { if case .rejected(.invalid(let why)) = $0 { why } else { nil } }
        if !invalid.isEmpty {
            node.stats.withLock { $0.opsRefusedInvalid += invalid.count }
            node.logger.warning(
                "refused invalid operations; the rest of the segment applied",
                metadata: ["peer": "\(peer)", "count": "\(invalid.count)", "first": "\(invalid[0])"])
        }
        let horizon = outcomes.filter { if case .rejected(.beyondHorizon) = $0 { true } else { false } }.count
        if horizon > 0 {
            node.logger.error(
                "refused operations older than the GC horizon for records this node no longer holds; if they are writes this node never saw, run `topgun repair` from that peer",
                metadata: ["peer": "\(peer)", "refused": "\(horizon)"])
        }
        // Stamps too far ahead of this clock: loud, with how far, and counted per peer
        // (the peer's own log says its clock is ahead, from the handshake).
        let drifted = outcomes.compactMap { if case .rejected(.clockDrift(let e)) = $0 { e } else { nil } }
        if let ahead = drifted.map({ $0.remote.millis &- $0.localMillis }).max() {
            node.stats.withLock { $0.refusedForClockDrift[peer, default: 0] += drifted.count }
            // The sender is told, with a code: its own log and status say why its
            // writes do not arrive.
            out.yield(
                .notice(
                    ReplicationError(
                        .clockDrift,
                        "\(drifted.count) operations refused: stamped \(ahead) ms ahead of this node's clock, beyond its bound of \(drifted[0].maxDriftMillis) ms; they are offered again once the clocks agree")))
            node.logger.error(
                "refused operations stamped ahead of this node's clock by more than the drift bound; they are offered again once the clocks agree",
                metadata: [
                    "peer": "\(peer)", "count": "\(drifted.count)", "ahead_ms": "\(ahead)", "max_drift_ms": "\(drifted[0].maxDriftMillis)",
                ])
        }
        // A user's write refused for the horizon is final (it was just refused to the
        // app); anything else refused for now holds the cursor.
        let holding = outcomes.contains { outcome in
            outcome.holdsCursor && (access.principal.isReplica || { if case .rejected(.beyondHorizon) = outcome { false } else { true } }())
        }
        if holding && !held.isSet {
            // The cursor (or, for a repair, the RESUME that would follow) stays before
            // the refused entry: later segments of this link must not move it.
            node.logger.warning("operations refused for now; cursor held", metadata: ["peer": "\(peer)", "count": "\(outcomes.filter(\.holdsCursor).count)"])
            held.set()
        }
    }

    /// The entries of a pushed segment this node takes (restricted to what the remote
    /// may contribute), and a rejection for each it refuses; the rest applies.
    func screened(_ entries: [LoggedOperation], isRepair: Bool) throws -> ([LoggedOperation], [WriteRejection]) {
        if access.isUnrestricted && access.principal.isReplica { return (entries, []) }
        let store = node.store
        // A map another process (the operator's CLI) created since this one loaded the
        // table is found too.
        let screen = WriteScreen(access: access, peer: peer) { map in
            if let kind = store.kind(ofMap: map) { return kind }
            try? store.refreshMaps()
            return store.kind(ofMap: map)
        }
        var taken: [LoggedOperation] = []
        var rejections: [WriteRejection] = []
        taken.reserveCapacity(entries.count)
        for entry in entries {
            switch screen.screen(entry.operation, isRepair: isRepair) {
            case .take(let op): taken.append(LoggedOperation(sequence: entry.sequence, operation: op))
            case .ignore: continue
            case .reject(let reason):
                rejections.append(try rejection(of: entry.operation, reason))
            }
        }
        if !rejections.isEmpty {
            node.stats.withLock { for r in rejections { $0.writesRejected[r.category, default: 0] += 1 } }
            node.logger.warning(
                "refused pushed writes; the rest of the segment applied",
                metadata: ["peer": "\(peer)", "principal": "\(access.principal)", "count": "\(rejections.count)", "first": "\(rejections[0].reason)"])
        }
        return (taken, rejections)
    }

    /// A user's writes the merge refused for good — older than the GC horizon (a
    /// collected tombstone may have superseded them, or the add's tag was collected), a
    /// value that cannot be stored — refused to the app like a policy refusal, so it
    /// returns to the server's state. (A replica's are logged, or retried.)
    func horizonRejections(_ outcomes: [ApplyOutcome], _ entries: [LoggedOperation]) throws -> [WriteRejection] {
        guard !access.principal.isReplica else { return [] }
        var out: [WriteRejection] = []
        for (outcome, entry) in zip(outcomes, entries) {
            let reason: String
            switch outcome {
            case .rejected(.beyondHorizon(let horizon)):
                reason = "beyond the GC horizon: older than \(horizon), and this server may have collected what superseded it"
            case .rejected(let why) where !outcome.holdsCursor:
                reason = "refused: \(why)"
            default:
                continue
            }
            out.append(try rejection(of: entry.operation, reason))
        }
        if !out.isEmpty { node.stats.withLock { for r in out { $0.writesRejected[r.category, default: 0] += 1 } } }
        return out
    }

    /// A user's writes taken under this server's stamps because the app's clock is
    /// ahead: the app is told (REJECTED with the stored state, so it returns to the
    /// server's stamp and its later writes are judged against it) and warned (NOTICE).
    func restamped(_ outcomes: [ApplyOutcome], _ entries: [LoggedOperation], _ out: AsyncStream<Message>.Continuation) throws {
        var count = 0
        var ahead: UInt64 = 0
        let now = node.store.now
        for (outcome, entry) in zip(outcomes, entries) {
            guard case .restamped = outcome else { continue }
            count += 1
            let by = entry.operation.timestamp.millis &- now
            ahead = max(ahead, by)
            out.yield(.rejected(try rejection(of: entry.operation, "restamped: stamped \(by) ms ahead of the server's clock")))
        }
        guard count > 0 else { return }
        node.stats.withLock { $0.writesRestamped += count }
        node.logger.warning(
            "took a user's writes under this server's stamps: the app's clock is ahead", metadata: ["peer": "\(peer)", "count": "\(count)", "ahead_ms": "\(ahead)"])
        out.yield(
            .notice(
                ReplicationError(
                    .clockDrift,
                    "\(count) writes were stamped \(ahead) ms ahead of the server's clock: the server took them under its own stamps; fix this device's clock")))
    }

    /// The REJECTED frame for `op`: with the server's state of the record when the
    /// remote may read it, so the app can return to it.
    func rejection(of op: ReplicatedOperation, _ reason: String) throws -> WriteRejection {
        let current = access.mayRead(map: op.map, key: op.key) ? try node.store.stateOperation(map: op.map, key: op.key) : nil
        return WriteRejection(reason: reason, operation: op, current: current.flatMap { $0.payload.kind == op.payload.kind ? $0 : nil })
    }

    /// A server refused a write this node pushed: the record returns to the server's
    /// state here, and sync sessions hear of it.
    func reverted(_ rejection: WriteRejection) throws {
        try node.store.revert(rejection.operation, serverState: rejection.current)
        node.stats.withLock { $0.rejectionsReceived += 1 }
        node.logger.warning(
            "the server refused a write; reverted it here",
            metadata: ["peer": "\(peer)", "map": "\(rejection.map)", "key": "\(rejection.key)", "reason": "\(rejection.reason)"])
        for observer in node.rejectionObservers.withLock({ Array($0.values) }) { observer(rejection) }
    }

    /// Sends the records of every bucket whose digest differs from the remote's, in the
    /// subscribed maps (all maps either side has when it subscribed to everything), one
    /// partition at a time, then RESUME.
    /// The raw bytes of records one REPAIR frame carries at most (64 KiB; one larger
    /// record goes alone).
    static let repairChunkBytes = 64 << 10

    func repair(_ digests: Digests, _ publisher: Publisher, _ outbound: NIOAsyncChannelOutboundWriter<Frame>) async throws {
        let subscription = publisher.values.withLock { $0.subscription } ?? Subscription()
        // The head is read before the records: everything logged up to it is in the
        // repair, so the stream may go on after it.
        let head = try node.store.logHead()
        // Maps another process created since this one loaded the table are covered too.
        try node.store.refreshMaps()
        let access = self.access
        let visible: (@Sendable (String) -> Store.RecordFilter)? = access.isUnrestricted ? nil : { @Sendable map in access.readable(in: map) }
        let plan = try node.store.repairPlan(theirs: digests.maps, maps: subscription.maps, partitions: subscription.partitions, visible: visible)
        let node = self.node
        func send(_ message: Message) async throws {
            let frame = message.frame
            try await outbound.write(frame)
            node.stats.withLock { $0.bytesSent += frame.body.count + 5 }
        }
        // Chunks bounded by count and by bytes, small enough that a hundred readers
        // that do not read hold little: each holds the chunk being encoded and the one
        // waiting on its connection (an op larger than the budget goes alone).
        let budget = max(1, min(node.configuration.maxFrameBytes / 4, Self.repairChunkBytes))
        var sequence: UInt64 = 0
        var chunk: [LoggedOperation] = []
        var chunkBytes = 0
        var sent = 0
        func flush() async throws {
            guard !chunk.isEmpty else { return }
            let segment = Segment(origin: node.store.nodeID, entries: chunk)
            chunk = []
            chunkBytes = 0
            try await send(.repair(segment))
        }
        for part in plan {
            for op in try node.store.repairOperations(part, visible: visible) {
                let size = op.rawSize
                if !chunk.isEmpty && (chunk.count >= node.configuration.segmentSize || chunkBytes + size > budget) { try await flush() }
                sequence += 1
                chunk.append(LoggedOperation(sequence: HLCTimestamp(millis: sequence, counter: 0, node: node.store.nodeID), operation: op))
                chunkBytes += size
                sent += 1
            }
        }
        try await flush()
        try await send(.resume(head))
        node.stats.withLock {
            $0.repairsSent += sent
            $0.repairsServed += 1
        }
        // Under the policy this link's access was built with (a reload closes it).
        let generation = grantedUnder
        node.repairedUnder.withLock { $0[peer] = generation }
        publisher.values.withLock {
            if $0.repairPending {
                $0.resumeFrom = head
                $0.repairPending = false
            }
        }
        publisher.wake.notify()
    }

    /// True when a subscriber at `cursor` is so far behind that the current state of
    /// the records ships less than the log after its cursor (see
    /// `Configuration.catchUpByRepairAfter`).
    func lagsFarBehind(_ cursor: HLCTimestamp?) throws -> Bool {
        let threshold = node.configuration.catchUpByRepairAfter
        guard try node.store.opLogCount() > threshold else { return false }
        let behind = try node.store.logEntryCount(after: cursor)
        let records = try node.store.recordCount()
        return behind > threshold && behind > 2 * records
    }

    /// Streams the op log after the subscription's cursor, then tails it, waking on new
    /// commits rather than polling. Whenever garbage collection removed entries the
    /// stream has not sent yet — at subscribe time or while the connection stalled — it
    /// asks for digests and continues after the repair instead of skipping them.
    func stream(_ subscription: Subscription, _ publisher: Publisher, _ out: AsyncStream<Message>.Continuation) async throws {
        var cursor = subscription.cursor
        let config = node.configuration
        // A cursor past this log's head names entries this log never had (it was
        // restored from a backup, or a damaged key put an entry in the future and a
        // heal removed it): the subscriber moves its cursor back to the head and
        // compares digests for what its cursor skipped.
        let head = try node.store.logHead()
        if let from = cursor, from > head {
            node.logger.warning(
                "the subscriber's cursor is past this log's head; rewinding it and repairing by digests",
                metadata: ["peer": "\(peer)", "cursor": "\(from)", "head": "\(head)"])
            out.yield(.rewind(head))
            cursor = head
            publisher.values.withLock { $0.repairPending = true }
            out.yield(.needDigests(maps: subscription.maps))
        }
        // A user's app whose grants may have changed since it was last brought up to
        // date (first session since this process started or the policy was reloaded):
        // compare digests over what it may read first, so records a wider grant now
        // shows reach it even though its cursor passed them.
        let farBehind = try lagsFarBehind(cursor)
        if servesRepairFirst || farBehind {
            publisher.values.withLock { $0.repairPending = true }
            out.yield(.needDigests(maps: subscription.maps))
        }
        while !Task.isCancelled {
            let generation = publisher.wake.generation
            let (pending, inFlight, resume) = publisher.values.withLock { values in
                defer { values.resumeFrom = nil }
                return (values.repairPending, values.sent - values.acked, values.resumeFrom)
            }
            if let resume { cursor = max(cursor ?? .zero, resume) }
            if pending || inFlight >= config.maxInFlightSegments {
                _ = await publisher.wake.wait(after: generation)
                continue
            }
            // What the subscription covers is sent, except ops this link received from
            // the subscriber itself (by where they were logged, not by origin stamp:
            // that misattributes OR-Map and counter states repaired through a chain and
            // LWW writes whose stamp was reused). An echo that slips through changes
            // nothing there. Reading goes on past echoes until a segment is full.
            // A segment holds at most `segmentSize` ops and a quarter of the frame limit
            // in bytes (one larger op goes alone), so it always fits in a frame.
            var wanted: [LoggedOperation] = []
            var wantedBytes = 0
            var truncated: HLCTimestamp?
            var read = 0
            let budget = max(1, config.maxFrameBytes / 4)
            reading: while wanted.count < config.segmentSize && read < 64 * config.segmentSize {
                let entries: [LoggedOperation]
                let readThrough: HLCTimestamp?
                switch try node.store.readLog(after: cursor, limit: config.segmentSize) {
                case .truncated(let through):
                    truncated = through
                    entries = []
                    readThrough = nil
                case .operations(let batch, let through):
                    entries = batch
                    readThrough = through
                }
                guard let readThrough else { break }
                let echoes = publisher.received.withLock { $0 }
                for entry in entries {
                    let op = entry.operation
                    let covered =
                        subscription.accepts(op) && access.mayRead(map: op.map, key: op.key)
                        && (!ownWritesOnly || op.timestamp.node == node.store.nodeID)
                    if covered && echoes[entry.sequence] != entry.operation {
                        let size = entry.operation.rawSize
                        if !wanted.isEmpty && (wantedBytes + size > budget || wanted.count >= config.segmentSize) { break reading }
                        wanted.append(entry)
                        wantedBytes += size
                    }
                    cursor = entry.sequence
                    read += 1
                }
                // Superseded entries after the last operation were read too.
                if readThrough > cursor ?? .zero {
                    cursor = readThrough
                    read += 1
                }
            }
            if let cursor, read > 0 {
                publisher.received.withLock { received in
                    if !received.isEmpty { received = received.filter { $0.key > cursor } }
                }
            }
            // The segment's cursor end is where the log was read: past echoes and past
            // what the subscription or the read grant left out.
            if let truncated, wanted.isEmpty {
                node.logger.info(
                    "log truncated past the subscriber's cursor; repairing by digests",
                    metadata: ["peer": "\(peer)", "cursor": "\(cursor.map { "\($0)" } ?? "start")", "truncated": "\(truncated)"])
                publisher.values.withLock { $0.repairPending = true }
                out.yield(.needDigests(maps: subscription.maps))
                continue
            }
            if read == 0 {
                _ = await publisher.wake.wait(after: generation)
                continue
            }
            guard let cursor else { continue }
            // Nothing here may be for this subscriber: an empty segment still moves its
            // cursor, so it is caught up without seeing what it may not.
            publisher.values.withLock { $0.sent += 1 }
            node.stats.withLock {
                $0.segmentsSent += 1
                $0.rawBytesSent += wanted.reduce(0) { $0 + $1.operation.rawSize }
            }
            out.yield(.segment(Segment(origin: node.store.nodeID, entries: wanted, through: cursor)))
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
