#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// Frames over WebSocket: each protocol frame is one binary WebSocket message, so the
/// sessions above see the same frames as on TCP. One HTTP listener serves the upgrade
/// on `GET /sync` and plain routes (`/healthz`, `/metrics`, …) next to it.
extension ReplicaNode {
    /// What an accepted HTTP connection became.
    enum HTTPConnection: Sendable {
        /// Upgraded on `/sync`: a replication link.
        case sync(NIOAsyncChannel<Frame, Frame>)
        /// A plain request, answered by `HTTPRoutesHandler`.
        case plain
    }

    /// Binds the HTTP listener (`Configuration.http`).
    func bindHTTP(_ address: PeerAddress) async throws -> NIOAsyncChannel<EventLoopFuture<HTTPConnection>, Never> {
        let maxFrame = configuration.maxFrameBytes + 16
        let routes = configuration.httpRoutes
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // A connection that neither upgrades nor finishes a request within
                    // the handshake timeout is closed (no slow-request exhaustion); the
                    // sync session then has its own.
                    let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds(self.configuration.handshakeTimeout))) {
                        channel.close(promise: nil)
                    }
                    if let serverTLS = self.serverTLS {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverTLS))
                    }
                    let upgrader = NIOTypedWebSocketServerUpgrader<HTTPConnection>(
                        maxFrameSize: maxFrame,
                        shouldUpgrade: { channel, head in
                            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                            return channel.eventLoop.makeSucceededFuture(path == "/sync" ? HTTPHeaders() : nil)
                        },
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                deadline.cancel()
                                try channel.pipeline.syncOperations.addHandler(WebSocketFrameBridge(isClient: false))
                                return .sync(try self.framePipeline(channel, accepting: true))
                            }
                        })
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                        configuration: .init(
                            upgradeConfiguration: NIOTypedHTTPServerUpgradeConfiguration(
                                upgraders: [upgrader],
                                notUpgradingCompletionHandler: { channel in
                                    channel.eventLoop.makeCompletedFuture {
                                        try channel.pipeline.syncOperations.addHandler(HTTPRoutesHandler(routes: routes))
                                        return .plain
                                    }
                                })))
                }
            }
        let port = server.channel.localAddress?.port ?? address.port
        httpPort.withLock { $0 = port }
        logger.info("listening for HTTP", metadata: ["address": "\(address.host):\(port)", "sync": "/sync"])
        return server
    }

    func serveHTTP(_ server: NIOAsyncChannel<EventLoopFuture<HTTPConnection>, Never>) async throws {
        try await withThrowingDiscardingTaskGroup { sessions in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    sessions.addTask {
                        do {
                            guard case .sync(let channel) = try await connection.get() else { return }
                            try await Listener(node: self, channel: channel).run()
                        } catch {
                            self.logger.info("session ended", metadata: ["error": "\(error)"])
                        }
                    }
                }
            }
        }
    }

    /// Connects to a `ws://` or `wss://` peer and upgrades to WebSocket.
    func connectWebSocket(_ peer: PeerAddress, path: String, secure: Bool) async throws -> NIOAsyncChannel<Frame, Frame> {
        let maxFrame = configuration.maxFrameBytes + 16
        // A host name is verified against the certificate; an IP address cannot be
        // sent as SNI, and is checked against the trust roots only.
        let isAddress = isIPAddress(peer.host)
        let tls = secure ? try webSocketClientTLS(verifyHostname: !isAddress) : nil
        let upgraded: EventLoopFuture<NIOAsyncChannel<Frame, Frame>?> = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .connect(host: peer.host, port: peer.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : peer.host))
                    }
                    let upgrader = NIOTypedWebSocketClientUpgrader<NIOAsyncChannel<Frame, Frame>?>(
                        maxFrameSize: maxFrame,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(WebSocketFrameBridge(isClient: true))
                                return try self.framePipeline(channel, accepting: false)
                            }
                        })
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(peer.host):\(peer.port)")
                    headers.add(name: "Content-Length", value: "0")
                    let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: .init(
                            upgradeConfiguration: NIOTypedHTTPClientUpgradeConfiguration(
                                upgradeRequestHead: request, upgraders: [upgrader],
                                notUpgradingCompletionHandler: { channel in
                                    channel.close(promise: nil)
                                    return channel.eventLoop.makeSucceededFuture(nil)
                                })))
                }
            }
        guard let channel = try await upgraded.get() else {
            throw ReplicationError(.protocolViolation, "\(peer) did not upgrade to WebSocket (is it a topgun HTTP listener?)")
        }
        return channel
    }

    /// TLS for `wss://`: the node's trust roots when it has TLS files, else the
    /// system's; the host name is verified.
    func webSocketClientTLS(verifyHostname: Bool) throws -> NIOSSLContext {
        var client = TLSConfiguration.makeClientConfiguration()
        if !verifyHostname { client.certificateVerification = .noHostnameVerification }
        if let roots = configuration.trustRoots ?? configuration.tls?.trustRoots ?? configuration.tls?.certificate {
            client.trustRoots = .file(roots)
        }
        // A node with TLS files presents its certificate (servers may require it).
        if let tls = configuration.tls {
            client.certificateChain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map { .certificate($0) }
            client.privateKey = .privateKey(try NIOSSLPrivateKey(file: tls.privateKey, format: .pem))
        }
        return try NIOSSLContext(configuration: client)
    }
}

/// Between WebSocket messages and the byte stream the frame codec reads: binary
/// messages in, one binary message per written buffer out (masked from a client);
/// answers pings and closes on a close frame or a text message.
final class WebSocketFrameBridge: ChannelDuplexHandler, Sendable {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    let isClient: Bool

    init(isClient: Bool) { self.isClient = isClient }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .continuation:
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: isClient ? .random() : nil, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            break
        case .connectionClose:
            context.close(promise: nil)
        default:
            // Text and unknown opcodes are not part of this protocol.
            context.fireErrorCaught(ReplicationError(.protocolViolation, "WebSocket message of type \(frame.opcode)"))
            context.close(promise: nil)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: isClient ? .random() : nil, data: unwrapOutboundIn(data))
        context.write(wrapOutboundOut(frame), promise: promise)
    }
}

/// Answers plain HTTP requests on the listener: `GET /healthz`, the configured routes
/// (`/metrics`), 426 for `/sync` without an upgrade, 404 otherwise.
final class HTTPRoutesHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let routes: [String: @Sendable () -> (contentType: String, body: String)]
    private var path: String?

    init(routes: [String: @Sendable () -> (contentType: String, body: String)]) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        case .body:
            break
        case .end:
            let requested = path ?? "/"
            let (status, contentType, body): (HTTPResponseStatus, String, String)
            if requested == "/healthz" {
                (status, contentType, body) = (.ok, "text/plain", "ok\n")
            } else if let route = routes[requested] {
                let answer = route()
                (status, contentType, body) = (.ok, answer.contentType, answer.body)
            } else if requested == "/sync" {
                (status, contentType, body) = (.upgradeRequired, "text/plain", "use a WebSocket upgrade\n")
            } else {
                (status, contentType, body) = (.notFound, "text/plain", "not found\n")
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        }
    }
}
