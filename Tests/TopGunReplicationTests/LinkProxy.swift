import NIOCore
import NIOPosix
import Synchronization

/// A TCP forwarder on 127.0.0.1 that a test can cut and restore, to simulate a
/// network partition between two real nodes, or freeze: the open connections stop
/// moving bytes without being closed (a NAT box or a stalled proxy), while new
/// connections work.
final class LinkProxy: Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let upstreamPort: Int
    let server = Mutex<(any Channel)?>(nil)
    let connections = Mutex<[any Channel]>([])
    let cut = Atomic<Bool>(false)
    /// Connections frozen by `freeze()`, by object identity.
    let frozen = Mutex<Set<ObjectIdentifier>>([])

    init(to upstreamPort: Int) async throws {
        self.upstreamPort = upstreamPort
        let proxy = self
        let channel = try await ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                if proxy.cut.load(ordering: .relaxed) { return inbound.close() }
                return ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: "127.0.0.1", port: upstreamPort)
                    .flatMap { outbound in
                        proxy.connections.withLock { $0 += [inbound, outbound] }
                        let isFrozen: @Sendable () -> Bool = { proxy.frozen.withLock { $0.contains(ObjectIdentifier(inbound)) } }
                        return inbound.pipeline.addHandler(Glue(peer: outbound, isFrozen: isFrozen)).flatMap {
                            outbound.pipeline.addHandler(Glue(peer: inbound, isFrozen: isFrozen))
                        }.map { inbound.read() }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        server.withLock { $0 = channel }
    }

    var port: Int { server.withLock { $0!.localAddress!.port! } }

    /// Drops every connection and refuses new ones until `restore()`.
    func sever() {
        cut.store(true, ordering: .relaxed)
        for c in connections.withLock({ all in defer { all = [] }; return all }) { c.close(promise: nil) }
    }

    func restore() { cut.store(false, ordering: .relaxed) }

    /// Every open connection stops forwarding, without FIN or RST; new ones still work.
    func freeze() {
        let open = connections.withLock { $0 }
        frozen.withLock { set in for c in open { set.insert(ObjectIdentifier(c)) } }
    }

    /// Connections opened so far (each accepted connection counts its two sides).
    var connectionCount: Int { connections.withLock { $0.count / 2 } }

    func shutdown() async throws {
        sever()
        try await group.shutdownGracefully()
    }
}

/// Forwards bytes to the peer channel, and closes it when this side closes.
final class Glue: ChannelDuplexHandler, @unchecked Sendable {
    // @unchecked: used only on its channel's event loop.
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    let peer: any Channel
    let isFrozen: @Sendable () -> Bool

    init(peer: any Channel, isFrozen: @escaping @Sendable () -> Bool) {
        self.peer = peer
        self.isFrozen = isFrozen
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A frozen link swallows what it holds and never reads again.
        if isFrozen() { return }
        let bytes = unwrapInboundIn(data)
        // Read the next chunk once the peer took this one (simple backpressure); the
        // callback runs on this channel's loop, where the context may be used.
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        peer.writeAndFlush(bytes).hop(to: context.eventLoop).whenComplete { _ in ctx.value.read() }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.read()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) { context.read() }
}
