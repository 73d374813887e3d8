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
            let hello: Hello
            do {
                hello = try admit(first)
                // Challenge–response: prove knowing the secret, then check the client's
                // proof before anything else happens on this connection.
                let nonce = Handshake.nonce()
                let proof = Handshake.proof(
                    secret: node.configuration.token, role: .server, clientNonce: hello.nonce, serverNonce: nonce,
                    client: hello.node, server: node.store.nodeID)
                try await outbound.write(
                    Message.welcome(version: Frame.protocolVersion, node: node.store.nodeID, head: try node.store.logHead(), nonce: nonce, proof: proof).frame)
                guard let answer = try await frames.next() else {
                    throw ReplicationError(.unauthorized, "closed during the handshake (the client did not accept this node's proof)")
                }
                guard case .proof(let theirs) = try Message(answer),
                    Handshake.verify(
                        theirs, secret: node.configuration.token, role: .client, clientNonce: hello.nonce, serverNonce: nonce,
                        client: hello.node, server: node.store.nodeID)
                else {
                    throw ReplicationError(.unauthorized, "wrong secret: the client's proof does not match")
                }
                try claimSession(hello.node)
            } catch {
                node.stats.withLock { $0.handshakesRefused += 1 }
                node.logger.warning("refused peer", metadata: ["reason": "\(error)"])
                try? await outbound.write(Message.error("\(error)").frame)
                return
            }
            admitted.set()
            let peer = hello.node
            defer { _ = node.liveSessions.withLock { $0.remove(peer) } }
            node.logger.info("peer connected", metadata: ["peer": "\(peer)", "pushes": "\(hello.offersLog)"])
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
            let link = Link(
                node: node, peer: peer, subscription: subscription, couldPull: hello.offersLog, widened: widened, serves: true,
                remoteHead: .zero, observer: nil)
            try await link.run(raw, &frames, outbound)
        }
    }

    /// Checks a HELLO: version, and an id that is not this node's.
    func admit(_ frame: Frame) throws -> Hello {
        guard case .hello(let hello) = try Message(frame) else {
            throw ReplicationError(.protocolViolation, "expected HELLO")
        }
        guard hello.version == Frame.protocolVersion else {
            throw ReplicationError(.unsupportedVersion, "protocol \(hello.version); this node speaks \(Frame.protocolVersion)")
        }
        guard hello.node != node.store.nodeID else {
            node.stats.withLock { $0.duplicateIDsRefused += 1 }
            throw ReplicationError(
                .duplicateNodeID,
                "peer presents this node's own id \(hello.node): a copy of this data directory? give the copy a fresh id with `topgun reset-id`")
        }
        return hello
    }

    /// One live session per node id (two nodes sharing an id never exchange writes).
    func claimSession(_ peer: NodeID) throws {
        let fresh = node.liveSessions.withLock { $0.insert(peer).inserted }
        guard fresh else {
            node.stats.withLock { $0.duplicateIDsRefused += 1 }
            throw ReplicationError(
                .duplicateNodeID,
                "node id \(peer) already has a live session: two nodes share this id (a copied data directory?), or the old connection is not yet closed")
        }
    }
}
