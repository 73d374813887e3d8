import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// Peers that misbehave on purpose: each is cut off, nothing of theirs is applied,
/// and the node keeps serving everyone else.
@Suite(.timeLimit(.minutes(2)))
struct HostilePeerTests {
    /// A node speaking an older protocol (version 1 or 2: HELLO without the flags byte)
    /// is told "unsupported version", not left guessing.
    @Test(arguments: [UInt16(1), 2])
    func olderProtocolVersionsGetAClearError(_ version: UInt16) async throws {
        try await withTemporaryDirectory { root in
            let server = try await RunningNode(try openStore(root + "/a", node: 1))
            var body: [UInt8] = []
            body.appendBigEndian(version)
            body.appendBigEndian(UInt64(5))
            body.appendBigEndian(UInt16(6))
            body += Array("secret".utf8)
            let session = try await rawSession(port: server.port, send: [framed(Frame(.hello, body))])
            #expect(session.closed)
            // An ERROR frame (heartbeats may come first on a slow machine).
            var frames: [(kind: UInt8, body: ArraySlice<UInt8>)] = []
            var rest = session.bytes[...]
            while rest.count >= 5 {
                let length = Int(rest.prefix(4).reduce(0) { $0 << 8 | UInt32($1) })
                guard length >= 1, rest.count >= 4 + length else { break }
                frames.append((rest[rest.startIndex + 4], rest[(rest.startIndex + 5)..<(rest.startIndex + 4 + length)]))
                rest = rest.dropFirst(4 + length)
            }
            let error = try #require(frames.first { $0.kind == Frame.Kind.error.rawValue }, "\(frames.map(\.kind))")
            let text = String(decoding: error.body, as: UTF8.self)
            #expect(text.contains("unsupported version") && text.contains("protocol \(version)"), "\(text)")
            await server.stop()
        }
    }

    @Test func replayedHandshakeAndUnexpectedFramesAreCutOff() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            let server = try await RunningNode(store)
            let hello = framed(Hello(version: Frame.protocolVersion, node: NodeID(5), offersLog: false).frame)
            // HELLO twice: the second is a protocol violation.
            let replay = try await rawSession(port: server.port, send: [hello, hello])
            #expect(replay.closed)
            // A SEGMENT from a peer that did not offer its log (so was not subscribed to).
            let bogus = framed(Frame(.segment, Segment(origin: NodeID(5), entries: sampleEntries(2)).encoded()))
            let pushed = try await rawSession(port: server.port, send: [hello, bogus])
            #expect(pushed.closed)
            #expect(try store.state(map: "tags", key: "k2") == nil, "nothing of the pushed segment applied")
            await server.stop()
        }
    }

    @Test func silentPeerIsDroppedAfterTheHandshakeTimeout() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            let node = try ReplicaNode(
                store: store, configuration: .init(listen: .init(host: "127.0.0.1", port: 0), token: Array(testSecret.utf8), handshakeTimeout: .milliseconds(300)))
            let task = Task { try await node.run() }
            _ = try await node.listening()
            let started = ContinuousClock.now
            let session = try await rawSession(port: node.listeningPort!, send: [[0, 0]], timeout: .seconds(5))  // half a length prefix, then silence
            let elapsed = ContinuousClock.now - started
            // Closed by the deadline, not before it (the rawSession itself gives up after 5 s).
            #expect(session.closed && elapsed >= .milliseconds(250), "\(elapsed)")
            task.cancel()
            _ = await task.result
        }
    }

    @Test func frameFloodIsBoundedByTheFrameLimit() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            let node = try ReplicaNode(
                store: store, configuration: .init(listen: .init(host: "127.0.0.1", port: 0), token: Array(testSecret.utf8), maxFrameBytes: 1 << 16))
            let task = Task { try await node.run() }
            _ = try await node.listening()
            // Announces a 16 MiB frame, then streams bytes: refused at the header, never buffered.
            var flood: [UInt8] = []
            flood.appendBigEndian(UInt32(16 << 20))
            flood += [UInt8](repeating: 0x41, count: 1 << 20)
            let session = try await rawSession(port: node.listeningPort!, send: [flood])
            #expect(session.closed)
            task.cancel()
            _ = await task.result
        }
    }

    @Test func segmentsFromTheFarFutureAreRefusedAndDoNotDragTheClock() throws {
        try withTemporaryDirectory { root in
            let clock = ManualWallClock(1_700_000_000_000)
            let store = try Store(path: root + "/a", options: .init(durability: .noSync, wallClock: clock, nodeID: NodeID(1)))
            let future = HLCTimestamp(millis: 1_700_000_000_000 + 3_600_000, counter: 0, node: NodeID(9))
            let entry = LoggedOperation(sequence: future, operation: .lww(map: "m", key: "k", value: 1, timestamp: future))
            let out = try store.apply([entry], fromPeer: NodeID(9), cursor: future)
            guard case .rejected(.clockDrift) = out[0] else {
                Issue.record("far-future op applied: \(out[0])")
                return
            }
            #expect(store.clockHighWater.millis < future.millis)
            #expect(try store.peerCursor(NodeID(9)) == nil)
            #expect(try store.state(map: "m", key: "k") == nil)
        }
    }

    @Test func fullMapBeyondItsMaximumIsAClearErrorAndNothingPartial() throws {
        try withTemporaryDirectory { dir in
            let store = try Store(path: dir, options: .init(durability: .noSync, mapSize: 1 << 20, maxMapSize: 2 << 20))
            _ = try store.apply([Mutation.set(map: "m", key: "first", value: 1, ttlMillis: nil)])
            let big = Value.string(String(repeating: "x", count: 3_000))
            let error = #expect(throws: StoreError.self) {
                try store.apply((0..<2_000).map { Mutation.set(map: "m", key: "k\($0)", value: big, ttlMillis: nil) })
            }
            #expect(error?.code == .full)
            #expect(try store.count(map: "m") == 1, "the batch left nothing behind")
            #expect(try store.check().isConsistent)
        }
    }
}

@Suite(.timeLimit(.minutes(2)))
struct ImpostorServerTests {
    /// A raw server on 127.0.0.1: reads the client's HELLO, answers with `answer(hello)`,
    /// then records every byte the client sends afterwards.
    final class RawServer: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let port: Int
        let task: Task<Void, any Error>
        let log = ByteLog()

        init(answer: @escaping @Sendable (_ node: NodeID, _ nonce: [UInt8]) -> [Frame]) async throws {
            let server = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
            port = server.channel.localAddress!.port!
            let log = self.log
            task = Task {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        try await connection.executeThenClose { input, output in
                            var chunks = input.makeAsyncIterator()
                            // HELLO: length, type, version 2, node 8, flags 1, nonce 32, clock 8.
                            guard let first = try await chunks.next(), first.readableBytes >= 56 else { return }
                            let bytes = Array(first.readableBytesView)
                            let helloBytes = 4 + Int(bytes[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                            let node = NodeID(bytes[7..<15].reduce(0) { $0 << 8 | UInt64($1) })
                            let nonce = Array(bytes[16..<48])
                            log.bytes.withLock { $0 += Array(bytes.dropFirst(helloBytes)) }
                            for frame in answer(node, nonce) {
                                var b = ByteBuffer()
                                b.writeInteger(UInt32(1 + frame.body.count))
                                b.writeInteger(frame.kind.rawValue)
                                b.writeBytes(frame.body)
                                try await output.write(b)
                            }
                            while let chunk = try await chunks.next() { log.bytes.withLock { $0 += chunk.readableBytesView } }
                        }
                        return
                    }
                }
            }
        }

        var received: [UInt8] { log.bytes.withLock { $0 } }

        func stop() async throws {
            task.cancel()
            try await group.shutdownGracefully()
        }
    }

    /// A malicious server that knows the secret completes the handshake as node 50,
    /// then sends a segment that claims to come from node 51: refused whole.
    @Test func segmentClaimingAnotherOriginIsRejected() async throws {
        try await withTemporaryDirectory { root in
            let impostor = try await RawServer { client, nonce in
                let serverNonce = Handshake.nonce()
                let proof = Handshake.proof(
                    secret: Array(testSecret.utf8), role: .server, clientNonce: nonce, serverNonce: serverNonce, client: client, server: NodeID(50))
                return [
                    Message.welcome(version: Frame.protocolVersion, nonce: serverNonce).frame,
                    Message.admitted(Admission(node: NodeID(50), head: .zero, repairFirst: false, proof: proof)).frame,
                    Frame(.segment, Segment(origin: NodeID(51), entries: sampleEntries(5)).encoded()),
                ]
            }
            let store = try openStore(root + "/b", node: 2)
            let puller = try await RunningNode(store, listen: false, peers: [impostor.port])
            #expect(try await eventually { puller.node.statistics.segmentsRejected > 0 })
            #expect(store.maps.isEmpty, "nothing of the impostor's segment applied")
            #expect(try store.peerCursor(NodeID(50)) == nil)
            await puller.stop()
            try await impostor.stop()
        }
    }

    /// A fake server without the secret cannot prove it knows it: the client stops at
    /// its ADMITTED, sends nothing after its own proof, and pulls nothing.
    @Test func aServerWithoutTheSecretGetsNothing() async throws {
        try await withTemporaryDirectory { root in
            let fake = try await RawServer { _, _ in
                [
                    Message.welcome(version: Frame.protocolVersion, nonce: Handshake.nonce()).frame,
                    Message.admitted(Admission(node: NodeID(60), head: .zero, repairFirst: false, proof: [UInt8](repeating: 0xAB, count: Handshake.proofBytes)))
                        .frame,
                    Frame(.segment, Segment(origin: NodeID(60), entries: sampleEntries(5)).encoded()),
                ]
            }
            let store = try openStore(root + "/b", node: 2)
            _ = try store.apply([Mutation.set(map: "private", key: "k", value: "v", ttlMillis: nil)])
            let puller = try await RunningNode(store, listen: false, peers: [fake.port])
            #expect(try await eventually { puller.node.statistics.linksDown >= 2 })
            // Stopped first: a connection being dialled while the bytes are read would
            // be counted half-way.
            await puller.stop()
            // Each connection carried the client's PROOF (5 + 32 bytes) and nothing else:
            // no SUBSCRIBE, no segment.
            let received = fake.received
            #expect(received.count % 37 == 0 && !received.isEmpty, "\(received.count) bytes after HELLO")
            #expect(stride(from: 0, to: received.count, by: 37).allSatisfy { received[$0 + 4] == Frame.Kind.proof.rawValue })
            #expect(try store.state(map: "tags", key: "k2") == nil, "nothing of the fake segment applied")
            try await fake.stop()
        }
    }

    /// A captured handshake (HELLO and a valid PROOF) replayed on a new connection gets
    /// nothing: the server's nonce is new, so the old proof does not match.
    @Test func aReplayedHandshakeGetsNothing() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            let server = try await RunningNode(store)
            // A genuine client's exchange, as an eavesdropper records it.
            let client = try await FrameClient(port: server.port)
            let hello = Hello(version: Frame.protocolVersion, node: NodeID(7), offersLog: false)
            try await client.send(hello.frame)
            guard case .welcome(_, let nonce)? = try await client.next().map({ try Message($0) }) else {
                Issue.record("no WELCOME")
                return
            }
            let proof = Handshake.proof(
                secret: Array(testSecret.utf8), role: .client, clientNonce: hello.nonce, serverNonce: nonce, client: NodeID(7), server: nil)
            try await client.send(Message.proof(proof).frame)
            try await client.close()
            // The replay on a new connection.
            let replay = try await FrameClient(port: server.port)
            try await replay.send(hello.frame)
            _ = try await replay.next()  // WELCOME with a fresh nonce
            // The server may close the connection before these arrive.
            try? await replay.send(Message.proof(proof).frame)
            try? await replay.send(Message.subscribe(Subscription()).frame)
            // The server answers ERROR and closes; the close may reset the connection
            // before the ERROR is read.
            var kinds: [Frame.Kind] = []
            while let frame = try? await replay.next() { kinds.append(frame.kind) }
            #expect(kinds.allSatisfy { $0 == .error }, "refused, and no segment: \(kinds)")
            #expect(server.node.statistics.handshakesRefused >= 1 && server.node.statistics.segmentsSent == 0)
            try await replay.close()
            await server.stop()
        }
    }
}

/// Bytes appended from one task and read from another.
final class ByteLog: Sendable {
    let bytes = Mutex<[UInt8]>([])
}
