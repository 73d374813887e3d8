import NIOCore
import NIOPosix
import TopGunCore

@testable import TopGunReplication

/// A test client that speaks frames to a node directly, to play a subscriber that
/// stalls, acknowledges late or claims an identity.
final class FrameClient {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: NIOAsyncChannel<Frame, Frame>
    var inbound: NIOAsyncChannelInboundStream<Frame>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<Frame>

    init(port: Int) async throws {
        channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxBytes: Frame.defaultMaxBytes)))
                try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                return try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
            }
        }
        inbound = channel.inbound.makeAsyncIterator()
        outbound = channel.outbound
    }

    // A test that throws before `close()` must not stop the process: NIO traps on a
    // writer that was never finished.
    deinit { outbound.finish() }

    func send(_ frame: Frame) async throws { try await outbound.write(frame) }

    /// The next frame that is not a heartbeat; nil when the server closed the connection.
    func next() async throws -> Frame? {
        while let frame = try await inbound.next() {
            if frame.kind != .heartbeat { return frame }
        }
        return nil
    }

    /// The handshake as `node` knowing `token`: HELLO, then (on a WELCOME whose proof
    /// checks out) PROOF. Returns the server's WELCOME or ERROR.
    func hello(node: NodeID, token: String = "secret") async throws -> Frame? {
        let hello = Hello(version: Frame.protocolVersion, node: node, offersLog: false)
        try await send(hello.frame)
        guard let answer = try await next() else { return nil }
        guard case .welcome(_, let server, _, let nonce, let proof, _) = try Message(answer) else { return answer }
        let secret = Array(token.utf8)
        guard Handshake.verify(proof, secret: secret, role: .server, clientNonce: hello.nonce, serverNonce: nonce, client: node, server: server) else {
            return answer
        }
        try await send(
            Message.proof(Handshake.proof(secret: secret, role: .client, clientNonce: hello.nonce, serverNonce: nonce, client: node, server: server))
                .frame)
        return answer
    }

    /// The handshake of a user's app: HELLO carrying `jwt`. Returns WELCOME or ERROR.
    func hello(node: NodeID, jwt: String) async throws -> Frame? {
        try await send(Hello(version: Frame.protocolVersion, node: node, offersLog: false, bearer: jwt).frame)
        return try await next()
    }

    func close() async throws {
        // The server may have closed it already.
        try? await channel.channel.close()
        try await group.shutdownGracefully()
    }
}
