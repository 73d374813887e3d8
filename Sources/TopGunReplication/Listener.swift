import Foundation
import Logging
import NIOCore
import TopGunCore
import TopGunStore

/// The accepting side of one connection: authenticates the peer (any node with the
/// token, known before or not), answers with this node's id and log head, then runs the
/// link: it serves this node's log when the peer subscribes, and pulls the peer's log
/// when the peer offers it (an app that has no listen address pushes this way).
struct Listener {
    let node: ReplicaNode
    let channel: NIOAsyncChannel<Frame, Frame>

    func run() async throws {
        // Slow or silent peers: no handshake within the deadline closes the connection.
        let raw = channel.channel
        let admitted = Flag()
        let deadline = raw.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds(node.configuration.handshakeTimeout))) {
            if !admitted.isSet { raw.close(promise: nil) }
        }
        defer { deadline.cancel() }
        try await channel.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            guard let first = try await frames.next() else { return }
            let admission: (Hello, Principal, Bool)
            do {
                admission = try await handshake(first, &frames, outbound)
            } catch {
                node.stats.withLock { $0.handshakesRefused += 1 }
                node.refusals.record(error)
                try? await outbound.write(Message.error(error as? ReplicationError ?? ReplicationError(.internalError, "\(error)")).frame)
                return
            }
            // Authenticated: full-size frames from here on.
            try? await raw.pipeline.handler(type: HandshakeGate.self).get().openGate()
            try await serve(admission.0, admission.1, admission.2, raw, admitted, &frames, outbound)
        }
    }

    /// HELLO, WELCOME, PROOF (secret) or a verified JWT (app), then ADMITTED.
    ///
    /// - Returns: the HELLO, the principal it authenticated as, and whether the
    ///   session starts with a repair.
    func handshake(
        _ first: Frame, _ frames: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator, _ outbound: NIOAsyncChannelOutboundWriter<Frame>
    ) async throws -> (Hello, Principal, Bool) {
        let hello = try admit(first)
        // Nothing but a nonce before the client has authenticated: no node id, no
        // head, and no proof to guess the secret from offline.
        let nonce = Handshake.nonce()
        try await outbound.write(Message.welcome(version: Frame.protocolVersion, nonce: nonce).frame)
        let principal: Principal
        var proof = [UInt8](repeating: 0, count: Handshake.proofBytes)
        if let bearer = hello.bearer {
            // A user's app: its JWT names the principal; no secret is involved (the
            // app authenticates the server by TLS).
            principal = try await verify(bearer)
        } else {
            guard !node.configuration.token.isEmpty else {
                throw ReplicationError(.unauthorized, "this node has no shared secret: replicas cannot connect, only apps with a JWT")
            }
            guard let answer = try await frames.next() else {
                throw ReplicationError(.unauthorized, "closed during the handshake (no PROOF)")
            }
            guard case .proof(let theirs) = try Message(answer),
                Handshake.verify(
                    theirs, secret: node.configuration.token, role: .client, clientNonce: hello.nonce, serverNonce: nonce, client: hello.node,
                    server: nil)
            else {
                throw ReplicationError(.unauthorized, "wrong secret: the client's proof does not match")
            }
            principal = .replica(hello.node)
            proof = Handshake.proof(
                secret: node.configuration.token, role: .server, clientNonce: hello.nonce, serverNonce: nonce, client: hello.node,
                server: node.store.nodeID)
        }
        try refuseOwnID(hello.node)
        try claimIdentity(hello.node, principal)
        let session = try await claimSession(hello.node)
        // Grants may have changed since this app was last brought up to date (a reload,
        // or a restart): the session starts with a repair.
        var repairFirst = false
        if !principal.isReplica {
            let generation = node.policyGeneration.load(ordering: .relaxed)
            repairFirst = node.policy.withLock({ $0 }) != nil && node.repairedUnder.withLock({ $0[hello.node] }) != generation
        }
        do {
            try await outbound.write(
                    Message.admitted(
                    Admission(node: node.store.nodeID, head: try node.store.logHead(), repairFirst: repairFirst, wallMillis: node.store.now, proof: proof)
                ).frame)
        } catch {
            node.liveSessions.withLock { sessions in
                if sessions[hello.node] === session { sessions[hello.node] = nil }
            }
            throw error
        }
        node.noteClock(of: hello.node, theirs: hello.wallMillis)
        return (hello, principal, repairFirst)
    }

    /// Runs the link of an admitted peer until it ends (or its credential expires).
    func serve(
        _ hello: Hello, _ principal: Principal, _ repairFirst: Bool, _ raw: any Channel, _ admitted: Flag,
        _ frames: inout NIOAsyncChannelInboundStream<Frame>.AsyncIterator, _ outbound: NIOAsyncChannelOutboundWriter<Frame>
    ) async throws {
            admitted.set()
            let peer = hello.node
            let live = node.liveSessions.withLock { $0[peer] }
            defer {
                node.liveSessions.withLock { sessions in
                    if sessions[peer] === live { sessions[peer] = nil }
                }
            }
            let session = node.openSession(principal) { raw.close(promise: nil) }
            defer { node.closeSession(session) }
            var expiry: Scheduled<Void>?
            if let expires = principal.expiresAtMillis {
                let now = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
                let logger = node.logger
                expiry = raw.eventLoop.scheduleTask(in: .milliseconds(Int64(clamping: expires > now ? expires - now : 0))) {
                    logger.notice("session ended: the token expired", metadata: ["peer": "\(peer)", "principal": "\(principal)"])
                    raw.close(promise: nil)
                }
            }
            defer { expiry?.cancel() }
            node.logger.info("peer connected", metadata: ["peer": "\(peer)", "principal": "\(principal)", "pushes": "\(hello.offersLog)"])
            var subscription: Subscription?
            var widened = false
            // Pulled here unless a link this node dialled to the peer already pulls it.
            let pulls = hello.offersLog && node.claimPull(of: peer)
            defer { if pulls { node.releasePull(of: peer) } }
            if pulls {
                try node.store.registerPeer(peer)
                subscription = Subscription(cursor: try node.store.peerCursor(peer))
                let covered = try node.store.peer(peer)?.scope
                widened = subscription?.cursor != nil && !(covered?.covers(.all) ?? false)
            }
            let (access, generation) = node.accessAndGeneration(for: principal)
            var link = Link(
                node: node, peer: peer, subscription: subscription, couldPull: hello.offersLog, widened: widened, serves: true,
                remoteHead: .zero, observer: nil, access: access, ownWritesOnly: false)
            link.servesRepairFirst = repairFirst
            link.grantedUnder = generation
            try await link.run(raw, &frames, outbound)
    }

    /// Binds node id `peer` to `principal` (persisted): an id one principal used is
    /// refused to any other, so a user cannot write under another user's or a
    /// replica's id (counter slots and origins are per node id).
    func claimIdentity(_ peer: NodeID, _ principal: Principal) throws {
        if principal.isReplica {
            // A replica that proved the secret wins its id back from a user's app.
            if try !node.store.claimPeer(peer, user: nil), let user = try node.store.reclaimPeerForReplica(peer) {
                node.logger.error(
                    "a user's app had taken a replica's node id; the replica takes it back (writes that app pushed under it remain)",
                    metadata: ["peer": "\(peer)", "user": "\(user)"])
            }
            return
        }
        let known = try node.store.peer(peer)
        // An id first seen here: one that wrote through a replica is not a user's.
        if known == nil, node.replicaOrigins.withLock({ $0.contains(peer) }) {
            throw ReplicationError(.unauthorized, "node id \(peer) belongs to another principal than \(principal); use a fresh id")
        }
        // Every device holds garbage collection back: a user cannot mint ids at will.
        switch try node.store.claimDevice(peer, user: principal.subject, maxDevices: node.configuration.maxDevicesPerUser) {
        case .claimed:
            break
        case .takenByAnother:
            throw ReplicationError(.unauthorized, "node id \(peer) belongs to another principal than \(principal); use a fresh id")
        case .limitReached(let limit):
            throw ReplicationError(
                .unauthorized, "\(principal) already has \(limit) devices (node ids); an operator frees one with `topgun forget-peer`")
        }
    }

    /// The principal a client's JWT names.
    func verify(_ token: String) async throws -> Principal {
        guard let verifier = node.configuration.tokenVerifier else {
            throw ReplicationError(.unauthorized, "this server accepts no JWTs (it has no --jwt-secret-file or --jwt-public-key)")
        }
        do {
            return try await verifier.principal(for: token)
        } catch {
            node.stats.withLock { $0.tokensRefused[error.message, default: 0] += 1 }
            throw error
        }
    }

    /// Checks a HELLO's version.
    func admit(_ frame: Frame) throws -> Hello {
        guard case .hello(let hello) = try Message(frame) else {
            throw ReplicationError(.protocolViolation, "expected HELLO")
        }
        guard hello.version == Frame.protocolVersion else {
            throw ReplicationError(.unsupportedVersion, "protocol \(hello.version); this node speaks \(Frame.protocolVersion)")
        }
        return hello
    }

    /// Refuses an authenticated peer that presents this node's own id (told only after
    /// authentication: an unauthenticated probe learns nothing of this node's id).
    func refuseOwnID(_ peer: NodeID) throws {
        guard peer != node.store.nodeID else {
            node.stats.withLock { $0.duplicateIDsRefused += 1 }
            throw ReplicationError(
                .duplicateNodeID,
                "peer presents this node's own id \(peer): a copy of this data directory? give the copy a fresh id with `topgun reset-id`")
        }
    }

    /// One live session per node id (two nodes sharing an id never exchange writes).
    /// A session that has heard nothing, not even a heartbeat, for two heartbeat
    /// intervals is a connection its peer lost and is dialling again: the new one
    /// replaces it. One still heard from belongs to another node with the same id.
    func claimSession(_ peer: NodeID) async throws -> LiveSession {
        let activity = try? await channel.channel.pipeline.handler(type: ActivityStamp.self).get()
        let session = LiveSession(activity: activity) { [raw = channel.channel] in raw.close(promise: nil) }
        let silentAfter = UInt64(max(1, nanoseconds(node.configuration.heartbeatInterval) / 1_000_000)) * 2
        let replaced: LiveSession?? = node.liveSessions.withLock { sessions in
            if let old = sessions[peer] {
                guard (old.activity?.millisSinceHeard ?? 0) > silentAfter else { return .none }
                sessions[peer] = session
                return .some(old)
            }
            sessions[peer] = session
            return .some(nil)
        }
        switch replaced {
        case .none:
            node.stats.withLock { $0.duplicateIDsRefused += 1 }
            throw ReplicationError(
                .duplicateNodeID,
                "node id \(peer) already has a live session that is still heard from: two nodes share this id (a copied data directory? give it a fresh id with `topgun reset-id`)")
        case .some(let old?):
            node.logger.info("a silent session of this node id was replaced by its new connection", metadata: ["peer": "\(peer)"])
            old.close()
        case .some(nil):
            break
        }
        return session
    }
}

/// A node id's session, as the listener tracks it (see `claimSession`).
final class LiveSession: Sendable {
    let activity: ActivityStamp?
    let close: @Sendable () -> Void

    init(activity: ActivityStamp?, close: @escaping @Sendable () -> Void) {
        self.activity = activity
        self.close = close
    }
}
