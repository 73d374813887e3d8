import Logging
import NIOCore
import Synchronization
import TopGunCore
import TopGunStore

extension ReplicaNode {
    /// Keeps a link to `peer` until cancelled, reconnecting with exponential backoff:
    /// this node pulls the peer's log and, with `Configuration.push`, offers its own log
    /// on the same connection. A restart resumes from the cursors stored with the last
    /// applied segments.
    func pull(from peer: PeerAddress, observer: (any LinkObserver)? = nil, status: (@Sendable (LinkEvent) -> Void)? = nil) async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            status?(.connecting)
            do {
                try await session(with: peer, observer: observer) {
                    backoff = .milliseconds(100)
                    status?(.connected)
                }
                status?(.disconnected(nil))
            } catch let error as ReplicationError where error.code == .duplicateNodeID {
                stats.withLock { $0.linksDown += 1 }
                status?(.disconnected(error))
                logger.error("peer refused: duplicate node id", metadata: ["peer": "\(peer)", "error": "\(error)"])
            } catch {
                if Task.isCancelled { return }
                stats.withLock { $0.linksDown += 1 }
                status?(.disconnected(error))
                logger.info("peer link down", metadata: ["peer": "\(peer)", "error": "\(error)", "retry_in": "\(backoff)"])
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// One connection to `address`: handshake, then the link until it ends.
    func session(with address: PeerAddress, observer: (any LinkObserver)? = nil, connected: () -> Void) async throws {
        let channel = try await connect(address)
        try await channel.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            let (peer, remoteHead, repairFirst) = try await handshake(channel.channel, address, outbound, &frames, offersLog: configuration.push)
            connected()
            dialled.withLock { $0[peer, default: 0] += 1 }
            defer {
                dialled.withLock {
                    $0[peer, default: 1] -= 1
                    if $0[peer] == 0 { $0[peer] = nil }
                }
            }
            // A server this node dials is a replica here; an id a user's app took first
            // is refused loudly (that app may have pushed under the replica's name).
            if try !store.claimPeer(peer, user: nil), let user = try store.reclaimPeerForReplica(peer) {
                logger.error(
                    "a user's app had taken the node id of a replica this node dials; the replica takes it back",
                    metadata: ["peer": "\(peer)", "address": "\(address)", "user": "\(user)"])
            }
            // A policy reload closes this link too, so it reopens under the new rules.
            let session = openSession(.replica(peer)) { channel.channel.close(promise: nil) }
            defer { closeSession(session) }
            _ = contacted.withLock { $0.insert(address) }
            // The peer's log is pulled here unless another link (the peer's own, dialled
            // to this node) already pulls it.
            let pulls = claimPull(of: peer)
            defer { if pulls { releasePull(of: peer) } }
            var subscription = configuration.subscription
            subscription.cursor = try store.peerCursor(peer)
            let scope = PeerScope(maps: subscription.maps, partitions: subscription.partitions)
            // A cursor taken under a narrower subscription skipped what is now wanted:
            // backfill by digests (they cover maps this node has never seen, too).
            let covered = try store.peer(peer)?.scope
            let widened = subscription.cursor != nil && !(covered?.covers(scope) ?? false)
            // The server is trusted as a replica here; this node's own policy, if any,
            // still applies to what it serves and takes.
            let link = Link(
                node: self, peer: peer, subscription: pulls ? subscription : nil, couldPull: true, widened: widened, serves: configuration.push,
                remoteHead: remoteHead, observer: observer, access: access(for: .replica(peer)),
                ownWritesOnly: configuration.bearerToken != nil, repairFirst: repairFirst)
            try await link.run(channel.channel, &frames, outbound)
        }
    }

    /// HELLO, WELCOME, PROOF (or the JWT in HELLO), then ADMITTED, within the handshake
    /// timeout (a server that accepts but never answers is dropped), from a node that
    /// is not this one.
    ///
    /// - Returns: the peer's node id, its op-log head, and whether a repair comes first.
    func handshake(
        _ raw: any Channel, _ address: PeerAddress, _ outbound: NIOAsyncChannelOutboundWriter<Frame>,
        _ frames: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator, offersLog: Bool
    ) async throws -> (NodeID, HLCTimestamp, repairFirst: Bool) {
        let welcomed = Flag()
        let deadline = raw.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds(configuration.handshakeTimeout))) {
            if !welcomed.isSet { raw.close(promise: nil) }
        }
        defer { deadline.cancel() }
        let hello = Hello(
            version: Frame.protocolVersion, node: store.nodeID, offersLog: offersLog, bearer: configuration.bearerToken, wallMillis: store.now)
        try await outbound.write(Message.hello(hello).frame)
        let serverNonce: [UInt8]
        switch try await handshakeMessage(&frames) {
        case .welcome(let version, let nonce):
            guard version == Frame.protocolVersion else { throw ReplicationError(.unsupportedVersion, "peer speaks \(version)") }
            serverNonce = nonce
        case let other:
            throw ReplicationError(.protocolViolation, "expected WELCOME, got \(other.name)")
        }
        // A user's app presents its JWT in HELLO; the server is authenticated by TLS
        // (`wss://`), not by the replicas' secret, which the app does not hold.
        if configuration.bearerToken == nil {
            try await outbound.write(
                Message.proof(
                    Handshake.proof(
                        secret: configuration.token, role: .client, clientNonce: hello.nonce, serverNonce: serverNonce, client: store.nodeID,
                        server: nil)
                ).frame)
        }
        let admission: Admission
        switch try await handshakeMessage(&frames) {
        case .admitted(let a): admission = a
        case let other: throw ReplicationError(.protocolViolation, "expected ADMITTED, got \(other.name)")
        }
        welcomed.set()
        // The server proves it knows the secret before this node sends anything but
        // its own proof: a fake server gets nothing else.
        if configuration.bearerToken == nil {
            guard
                Handshake.verify(
                    admission.proof, secret: configuration.token, role: .server, clientNonce: hello.nonce, serverNonce: serverNonce,
                    client: store.nodeID, server: admission.node)
            else {
                throw ReplicationError(.unauthorized, "\(address) did not prove that it knows the shared secret (another secret, or not a server of this mesh)")
            }
        }
        guard admission.node != store.nodeID else {
            throw ReplicationError(
                .duplicateNodeID,
                "the server at \(address) has this node's own id \(admission.node): one of the two data directories is a copy; give it a fresh id with `topgun reset-id`")
        }
        noteClock(of: admission.node, theirs: admission.wallMillis)
        return (admission.node, admission.head, admission.repairFirst)
    }

    /// Records the offset between this node's clock and `peer`'s, told at the
    /// handshake, and says so when it approaches or passes the drift bound, on the
    /// side that is ahead too: a peer refuses stamps more than the bound ahead of its
    /// clock, and this node's persisted HLC can stay ahead after its clock came back.
    func noteClock(of peer: NodeID, theirs: UInt64) {
        guard theirs > 0 else { return }
        let now = store.now
        let offset = theirs >= now ? Int64(clamping: theirs - now) : -Int64(clamping: now - theirs)
        stats.withLock { $0.clockOffsets[peer] = offset }
        do { try store.recordClockOffset(peer, millis: offset) } catch {
            logger.warning("could not record a peer's clock offset", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
        let bound = Int64(clamping: store.options.maxClockDriftMillis)
        let highWater = store.clockHighWater.millis
        let stampsAhead = highWater > theirs ? Int64(clamping: highWater - theirs) : 0
        let metadata: Logger.Metadata = [
            "peer": "\(peer)", "offset_ms": "\(offset)", "max_drift_ms": "\(bound)", "hlc_ahead_of_peer_ms": "\(stampsAhead)",
        ]
        if stampsAhead > bound {
            logger.error(
                "this node's clock or HLC is ahead of the peer's clock by more than the drift bound: the peer refuses this node's new writes until its clock catches up (or it runs with a larger --max-clock-drift)",
                metadata: metadata)
        } else if offset > bound && configuration.bearerToken != nil {
            // A user's app follows its server's stamps (see `Link.apply`).
            logger.warning(
                "this device's clock is behind the server's by more than the drift bound: its HLC follows the server's stamps; fix the clock",
                metadata: metadata)
        } else if offset > bound {
            logger.error(
                "the peer's clock is ahead of this node's by more than the drift bound: its new writes are refused here until the clocks agree",
                metadata: metadata)
        } else if offset.magnitude > UInt64(bound / 2) || stampsAhead > bound / 2 {
            logger.warning("the clocks of this node and the peer differ by more than half the drift bound", metadata: metadata)
        }
    }

    /// The next handshake message; an ERROR becomes the error it names.
    private func handshakeMessage(_ frames: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator) async throws -> Message {
        guard let frame = try await frames.next() else { throw ReplicationError(.protocolViolation, "closed during handshake") }
        let message = try Message(frame)
        if case .error(let error) = message { throw error }
        return message
    }

    /// This store's Merkle bucket digests of `maps` (every map when empty), over the
    /// records `access` lets the remote read: digests of what it may not see never
    /// leave this node.
    func digests(for maps: [String], visibleTo access: Access) throws -> Digests {
        let names = maps.isEmpty ? Array(store.maps.keys) : maps
        var out: [String: [UInt16: [UInt64]]] = [:]
        for map in names {
            let filter = access.readable(in: map)
            if case .none = filter { continue }
            out[map] = try store.bucketDigests(map: map, filter)
        }
        return Digests(maps: out)
    }
}

/// What happens to a dialled link, for status reporting.
enum LinkEvent: Sendable {
    case connecting
    case connected
    case disconnected((any Error)?)
}

/// A flag set once, read from another thread, and waited for without polling.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    private let changed = ChangeSignal()
    var isSet: Bool { value.load(ordering: .acquiring) }

    func set() {
        value.store(true, ordering: .releasing)
        changed.notify()
    }

    /// Returns once the flag is set (or the task is cancelled).
    func waitUntilSet() async {
        var seen = changed.generation
        while !isSet && !Task.isCancelled { seen = await changed.wait(after: seen) }
    }
}
