import NIOCore
import NIOEmbedded
import Testing

@testable import TopGunReplication

/// What a connection holds for a reader that stops reading: under 100 such readers
/// flooding DIGESTS, the server grew ~5 MB/s, each heartbeat interval adding a
/// heartbeat per stalled connection in a buffer of the largest frame's capacity.
struct FrameWriterTests {
    @Test func aFrameIsWrittenInABufferOfItsOwnSize() throws {
        let channel = EmbeddedChannel(handlers: [FrameWriter()])
        try channel.writeOutbound(Frame(.segment, [UInt8](repeating: 7, count: 200_000)))
        try channel.writeOutbound(Message.heartbeat.frame)
        let large = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(large.readableBytes == 200_005)
        let small = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(small.readableBytes == 5 && small.capacity < 1_024, "capacity \(small.capacity)")
        _ = try channel.finish()
    }

    @Test func noHeartbeatIsQueuedOnAConnectionThatIsNotWritable() throws {
        let channel = EmbeddedChannel(handlers: [FrameWriter(), HeartbeatHandler(idleTimeout: .seconds(5)) {}])
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.write)
        let heartbeat = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(heartbeat.readableBytes == 5)
        channel.isWritable = false
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.write)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try channel.finish()
    }
}
