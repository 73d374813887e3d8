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
        let routes = configuration.httpRoutes
        let routesToken = configuration.httpRoutesToken
        let timeout = nanoseconds(configuration.handshakeTimeout)
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
                        maxFrameSize: WebSocketFrameBridge.maxFragmentBytes,
                        shouldUpgrade: { channel, head in
                            // RFC 6455 §4.1: a GET whose Connection header names Upgrade.
                            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
                            let connection = head.headers["Connection"].flatMap { $0.split(separator: ",") }
                            let upgrades = connection.contains { $0.lowercased().filter { $0 != " " && $0 != "\t" } == "upgrade" }
                            return channel.eventLoop.makeSucceededFuture(path == "/sync" && head.method == .GET && upgrades ? HTTPHeaders() : nil)
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
                                        // The routes handler keeps its own deadline, per request.
                                        deadline.cancel()
                                        try channel.pipeline.syncOperations.addHandler(
                                            HTTPRoutesHandler(routes: routes, token: routesToken, timeout: .nanoseconds(timeout)))
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
                    openConnections.add(1, ordering: .relaxed)
                    sessions.addTask {
                        defer { self.openConnections.subtract(1, ordering: .relaxed) }
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
                        maxFrameSize: WebSocketFrameBridge.maxFragmentBytes,
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
        return try NIOSSLContext(configuration: TLSPolicy.hardened(client))
    }
}

/// Between WebSocket messages and the byte stream the frame codec reads, per RFC 6455:
/// binary messages in (fragmented or not), each written buffer out as one binary
/// message in fragments of at most `WebSocketFrameBridge.maxFragmentBytes` (masked from
/// a client). It answers pings, answers a Close with a Close and closes, sends a Close
/// before closing itself, and ends the connection with 1002 (protocol error) on reserved
/// bits, an unmasked frame from a client or a masked one from a server, a lone
/// continuation, a new data frame inside a fragmented message, a reserved opcode or a
/// malformed Close; text (not part of this protocol) gets 1003.
final class WebSocketFrameBridge: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    /// The largest WebSocket frame either side decodes, before authentication and after:
    /// larger messages travel as fragments, so a connection that has not authenticated
    /// cannot make this node buffer more (the frame codec bounds reassembly).
    static let maxFragmentBytes = 64 << 10

    let isClient: Bool
    /// Inside a fragmented binary message (its first frame had no FIN).
    private var inMessage = false
    /// A Close was sent; nothing more is.
    private var closeSent = false

    init(isClient: Bool) { self.isClient = isClient }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.rsv1 || frame.rsv2 || frame.rsv3 { return fail(context, .protocolError, "reserved bits set") }
        // Clients mask every frame; servers mask none (RFC 6455 §5.1).
        if (frame.maskKey == nil) != isClient { return fail(context, .protocolError, isClient ? "masked frame from the server" : "unmasked frame from a client") }
        switch frame.opcode {
        case .binary:
            if inMessage { return fail(context, .protocolError, "a new message inside a fragmented one") }
            inMessage = !frame.fin
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .continuation:
            if !inMessage { return fail(context, .protocolError, "a continuation outside a fragmented message") }
            inMessage = !frame.fin
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .ping:
            guard !closeSent else { return }
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: isClient ? .random() : nil, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            break
        case .connectionClose:
            var payload = frame.unmaskedData
            switch payload.readableBytes {
            case 0:
                sendClose(context, code: nil)
            case 1:
                fail(context, .protocolError, "a Close frame of 1 byte")
            default:
                let code = payload.readInteger(as: UInt16.self)!
                guard Self.isValidCloseCode(code) else { return fail(context, .protocolError, "Close code \(code)") }
                guard String(validating: payload.readableBytesView, as: UTF8.self) != nil else {
                    return fail(context, .dataInconsistentWithMessage, "a Close reason that is not UTF-8")
                }
                // The usual answer echoes the code.
                sendClose(context, code: WebSocketErrorCode(codeNumber: Int(code)))
            }
        case .text:
            fail(context, .unacceptableData, "text messages are not part of this protocol")
        default:
            fail(context, .protocolError, "reserved opcode \(frame.opcode)")
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var buffer = unwrapOutboundIn(data)
        guard !closeSent else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        var first = true
        repeat {
            let slice = buffer.readSlice(length: min(buffer.readableBytes, Self.maxFragmentBytes))!
            let last = buffer.readableBytes == 0
            let frame = WebSocketFrame(fin: last, opcode: first ? .binary : .continuation, maskKey: isClient ? .random() : nil, data: slice)
            context.write(wrapOutboundOut(frame), promise: last ? promise : nil)
            first = false
        } while buffer.readableBytes > 0
    }

    /// A Close (1000, going away) goes out before the connection closes from this side.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, !closeSent, context.channel.isActive else { return context.close(mode: mode, promise: promise) }
        closeSent = true
        let frame = Self.closeFrame(.normalClosure, masked: isClient)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        context.close(mode: mode, promise: promise)
    }

    private func sendClose(_ context: ChannelHandlerContext, code: WebSocketErrorCode?) {
        guard !closeSent else { return context.close(promise: nil) }
        closeSent = true
        let frame =
            code.map { Self.closeFrame($0, masked: isClient) }
            ?? WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: isClient ? .random() : nil, data: ByteBuffer())
        context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    private func fail(_ context: ChannelHandlerContext, _ code: WebSocketErrorCode, _ why: String) {
        // The Close with its code first: the error closes the connection at once.
        sendClose(context, code: code)
        context.fireErrorCaught(ReplicationError(.protocolViolation, "WebSocket: \(why)"))
    }

    static func closeFrame(_ code: WebSocketErrorCode, masked: Bool) -> WebSocketFrame {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        return WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: masked ? .random() : nil, data: data)
    }

    /// Codes a peer may send in a Close (RFC 6455 §7.4): not 1004–1006 or 1015, which
    /// are never sent, and nothing below 1000 or in the unassigned 1016–2999.
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014: true
        case 3000...4999: true
        default: false
        }
    }
}

/// Answers plain HTTP requests on the listener: `GET /healthz`, the configured routes
/// (`/metrics`; with `token`, only for `Authorization: Bearer <token>`), 426 for
/// `/sync` without an upgrade, 404 otherwise. Connections stay open between requests
/// (HTTP/1.1 keep-alive, pipelined requests answered in order) until the client asks to
/// close, or no request completes within `timeout` of the previous answer.
final class HTTPRoutesHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let routes: [String: @Sendable () -> (contentType: String, body: String)]
    let token: [UInt8]?
    let timeout: TimeAmount
    private var head: HTTPRequestHead?
    private var deadline: Scheduled<Void>?

    init(routes: [String: @Sendable () -> (contentType: String, body: String)], token: [UInt8]?, timeout: TimeAmount) {
        self.routes = routes
        self.token = token
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) { armDeadline(context) }

    func handlerRemoved(context: ChannelHandlerContext) { deadline?.cancel() }

    private func armDeadline(_ context: ChannelHandlerContext) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else {
                // An upgrade request that was refused: the upgrade handler kept its head.
                return respond(
                    context, .badRequest, "text/plain",
                    "not upgraded: WebSocket sync is a GET /sync with Connection: Upgrade and Upgrade: websocket\n", version: .http1_1,
                    keepAlive: false)
            }
            self.head = nil
            let requested = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let (status, contentType, body) = answer(requested, head)
            respond(context, status, contentType, head.method == .HEAD ? "" : body, version: head.version, keepAlive: head.isKeepAlive)
        }
    }

    /// Writes one response; keeps the connection for the next request or closes it.
    private func respond(
        _ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ contentType: String, _ body: String, version: HTTPVersion,
        keepAlive: Bool
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        if status == .unauthorized { headers.add(name: "WWW-Authenticate", value: "Bearer") }
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            armDeadline(context)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func answer(_ path: String, _ head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
        guard head.method == .GET || head.method == .HEAD else {
            return path == "/sync" ? (.upgradeRequired, "text/plain", "use a WebSocket upgrade (GET)\n") : (.methodNotAllowed, "text/plain", "GET only\n")
        }
        if path == "/healthz" { return (.ok, "text/plain", "ok\n") }
        if let route = routes[path] {
            if let token {
                let presented = head.headers["Authorization"].first.flatMap { value -> [UInt8]? in
                    value.hasPrefix("Bearer ") ? Array(value.utf8.dropFirst(7)) : nil
                }
                guard let presented, constantTimeEquals(presented, token) else {
                    return (.unauthorized, "text/plain", "this route needs Authorization: Bearer <token>\n")
                }
            }
            let answer = route()
            return (.ok, answer.contentType, answer.body)
        }
        if path == "/sync" { return (.upgradeRequired, "text/plain", "use a WebSocket upgrade\n") }
        return (.notFound, "text/plain", "not found\n")
    }
}
