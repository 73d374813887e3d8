import NIOCore

/// Keeps a link's liveness visible: sends a HEARTBEAT frame when nothing else was
/// written for a while, swallows the peer's, and closes the connection when nothing at
/// all arrived within the idle timeout — a link frozen without FIN or RST (a NAT box, a
/// stalled proxy) is dropped within seconds and the puller dials again.
///
/// Sits behind an `IdleStateHandler(readTimeout: idle, writeTimeout: interval)`.
final class HeartbeatHandler: ChannelDuplexHandler, Sendable {
    typealias InboundIn = Frame
    typealias InboundOut = Frame
    typealias OutboundIn = Frame
    typealias OutboundOut = Frame

    let idleTimeout: Duration
    let onTimeout: @Sendable () -> Void

    init(idleTimeout: Duration, onTimeout: @escaping @Sendable () -> Void) {
        self.idleTimeout = idleTimeout
        self.onTimeout = onTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if unwrapInboundIn(data).kind == .heartbeat { return }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch idle {
        case .write:
            // A connection that is not writable has bytes queued already: the peer is
            // not reading them, and a heartbeat would only wait behind them.
            guard context.channel.isWritable else { return }
            context.writeAndFlush(wrapOutboundOut(Message.heartbeat.frame), promise: nil)
        case .read:
            onTimeout()
            context.fireErrorCaught(ReplicationError(.timeout, "nothing received for \(idleTimeout)"))
            context.close(promise: nil)
        case .all:
            break
        }
    }
}
