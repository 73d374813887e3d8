import NIOCore
import NIOPosix
import TopGunCore

@testable import TopGunReplication

/// Opens a raw TCP connection and returns everything the server sends until it
/// closes the connection (or `timeout` passes).
func rawSession(port: Int, send: [[UInt8]], timeout: Duration = .seconds(5)) async throws -> (bytes: [UInt8], closed: Bool) {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port) { channel in
        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
    }
    var received: [UInt8] = []
    var closed = false
    try? await channel.executeThenClose { inbound, outbound in
        for chunk in send { try? await outbound.write(ByteBuffer(bytes: chunk)) }
        try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
            group.addTask {
                var all: [UInt8] = []
                do {
                    for try await buffer in inbound { all += Array(buffer.readableBytesView) }
                } catch {
                    // A reset is the server closing on us too.
                }
                return all
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            if let first = try await group.next(), let bytes = first {
                received = bytes
                closed = true
            }
            group.cancelAll()
        }
    }
    try await group.shutdownGracefully()
    return (received, closed)
}

func framed(_ frame: Frame) -> [UInt8] {
    var out: [UInt8] = []
    out.appendBigEndian(UInt32(1 + frame.body.count))
    out.append(frame.kind.rawValue)
    out += frame.body
    return out
}

