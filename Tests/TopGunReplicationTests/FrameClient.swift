import NIOCore
import NIOPosix
import TopGunCore
import TopGunTestSupport
import TopGunTestSupport

@testable import TopGunReplication

/// A test client that speaks frames to a node directly, to play a subscriber that
/// stalls, acknowledges late or claims an identity.
final class FrameClient {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: NIOAsyncChannel<Frame, Frame>
    var inbound: NIOAsyncChannelInboundStream<Frame>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<Frame>

    /// - Parameter receiveBuffer: the socket's receive buffer in bytes (a small one
    ///   makes the server's writes wait while this client does not read).
    init(port: Int, receiveBuffer: Int? = nil) async throws {
        var bootstrap = ClientBootstrap(group: group)
        if let receiveBuffer { bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer)) }
        channel = try await bootstrap.connect(host: "127.0.0.1", port: port) { channel in
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

    /// The handshake as `node` knowing `token`: HELLO, WELCOME, PROOF, then the
    /// server's ADMITTED (its proof checked) or ERROR, which is returned.
    func hello(node: NodeID, token: String = testSecret) async throws -> Frame? {
        let hello = Hello(version: Frame.protocolVersion, node: node, offersLog: false)
        try await send(hello.frame)
        guard let answer = try await next() else { return nil }
        guard case .welcome(_, let nonce) = try Message(answer) else { return answer }
        let secret = Array(token.utf8)
        try await send(
            Message.proof(Handshake.proof(secret: secret, role: .client, clientNonce: hello.nonce, serverNonce: nonce, client: node, server: nil))
                .frame)
        guard let admitted = try await next() else { return nil }
        guard case .admitted(let admission) = try Message(admitted) else { return admitted }
        guard
            Handshake.verify(
                admission.proof, secret: secret, role: .server, clientNonce: hello.nonce, serverNonce: nonce, client: node, server: admission.node)
        else { throw ReplicationError(.unauthorized, "the server's proof does not match") }
        return admitted
    }

    /// The handshake of a user's app: HELLO carrying `jwt`, WELCOME, then ADMITTED or
    /// ERROR, which is returned.
    func hello(node: NodeID, jwt: String, offersLog: Bool = false) async throws -> Frame? {
        try await send(Hello(version: Frame.protocolVersion, node: node, offersLog: offersLog, bearer: jwt).frame)
        guard let answer = try await next() else { return nil }
        guard case .welcome = try Message(answer) else { return answer }
        return try await next()
    }

    func close() async throws {
        // The server may have closed it already.
        try? await channel.channel.close()
        try await group.shutdownGracefully()
    }
}
