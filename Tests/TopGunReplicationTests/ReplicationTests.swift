import Foundation
import NIOCore
import NIOPosix
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// A running in-process replica on 127.0.0.1 (random port).
final class RunningNode: Sendable {
    let node: ReplicaNode
    let task: Task<Void, any Error>

    init(
        _ store: Store, listen: Bool = true, port: Int = 0, http: Int? = nil, peers: [Int] = [],
        addresses: [ReplicaNode.PeerAddress] = [], token: String = testSecret, subscription: Subscription = .init(),
        antiEntropy: Duration? = nil, tls: ReplicaNode.TLSFiles? = nil, retention: Duration? = nil,
        idleTimeout: Duration = .seconds(5), segmentSize: Int = 1_000, push: Bool = true, maxFrameBytes: Int = Frame.defaultMaxBytes,
        bearer: String? = nil, policy: Policy? = nil, verifier: TokenVerifier? = nil, maxDevices: Int = 32,
        catchUpByRepairAfter: Int = 10_000
    ) async throws {
        node = try ReplicaNode(
            store: store,
            configuration: .init(
                listen: listen ? .init(host: "127.0.0.1", port: port) : nil,
                peers: peers.map { .init(host: "127.0.0.1", port: $0) } + addresses,
                token: Array(token.utf8), subscription: subscription, maxFrameBytes: maxFrameBytes, segmentSize: segmentSize,
                antiEntropyInterval: antiEntropy, tls: tls,
                retention: retention, gcInterval: .milliseconds(100), heartbeatInterval: idleTimeout / 4, idleTimeout: idleTimeout,
                push: push, http: http.map { .init(host: "127.0.0.1", port: $0) }, bearerToken: bearer, policy: policy,
                tokenVerifier: verifier, maxDevicesPerUser: maxDevices, catchUpByRepairAfter: catchUpByRepairAfter))
        let node = self.node
        task = Task { try await node.run() }
        if listen { _ = try await node.listening() }
        if http != nil { _ = try await node.listeningHTTP() }
    }

    var port: Int { node.listeningPort! }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}


func records(_ store: Store, _ map: String) throws -> [String: StoredState] {
    var out: [String: StoredState] = [:]
    try store.scan(map: map) { k, s in
        out[k] = s
        return true
    }
    return out
}

func roots(_ store: Store, _ map: String) throws -> [UInt64] {
    try (0..<UInt16(Partitioner.partitionCount)).map { try store.merkleRoot(map: map, partition: $0) }
}

func openStore(_ dir: String, node: UInt64) throws -> Store {
    try Store(path: dir, options: .init(durability: .noSync, nodeID: NodeID(node)))
}

@Suite(.timeLimit(.minutes(3)))
struct ReplicationTests {
    @Test func twoNodesConvergeWithConflicts() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let b = try openStore(root + "/b", node: 2)
            _ = try a.apply((0..<300).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            _ = try b.apply((200..<500).map { Mutation.set(map: "m", key: "k\($0)", value: .int(-Int64($0)), ttlMillis: nil) })
            _ = try a.apply([Mutation.increment(map: "c", key: "x", by: 5), .add(map: "t", key: "x", value: "a", ttlMillis: nil)])
            _ = try b.apply([Mutation.increment(map: "c", key: "x", by: 7), .add(map: "t", key: "x", value: "b", ttlMillis: nil)])
            let sa = try await RunningNode(a)
            let sb = try await RunningNode(b)
            let pa = try await RunningNode(a, listen: false, peers: [sb.port])
            let pb = try await RunningNode(b, listen: false, peers: [sa.port])
            let converged = try await eventually {
                try records(a, "m") == records(b, "m") && records(a, "m").count == 500
                    && records(a, "c") == records(b, "c") && records(a, "t") == records(b, "t")
            }
            #expect(converged)
            #expect(try roots(a, "m") == roots(b, "m"))
            for n in [pa, pb, sa, sb] { await n.stop() }
        }
    }

    @Test func wrongTokenGetsNothing() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            _ = try a.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            let server = try await RunningNode(a, token: testSecret)
            let intruder = try openStore(root + "/b", node: 2)
            let thief = try await RunningNode(intruder, listen: false, peers: [server.port], token: otherSecret)
            // Refused, dialled again after its backoff, refused again: and nothing came.
            #expect(try await eventually { server.node.statistics.handshakesRefused >= 2 })
            #expect(try records(intruder, "m").isEmpty)
            #expect(server.node.statistics.segmentsSent == 0)
            await thief.stop()
            await server.stop()
        }
    }

    @Test func hostileFramesAreDroppedAndTheNodeKeepsServing() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            _ = try a.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            let server = try await RunningNode(a)
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            // Oversized length, garbage handshake, truncated frame, unknown version.
            var hello = Hello(version: 99, node: NodeID(5)).frame
            var badVersion = ByteBuffer()
            badVersion.writeInteger(UInt32(1 + hello.body.count))
            badVersion.writeInteger(hello.kind.rawValue)
            badVersion.writeBytes(hello.body)
            hello = Frame(.hello, [])
            let payloads: [[UInt8]] = [
                [0xff, 0xff, 0xff, 0xff, 1, 2, 3],
                Array("GET / HTTP/1.1\r\n\r\n".utf8),
                [0, 0, 0, 9, 1, 0],
                Array(badVersion.readableBytesView),
            ]
            for payload in payloads {
                let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: server.port).get()
                // The server may already have hung up on us: that is the point.
                try? await channel.writeAndFlush(ByteBuffer(bytes: payload)).get()
                try? await channel.close().get()
            }
            // A proper replica still replicates.
            let b = try openStore(root + "/b", node: 2)
            let puller = try await RunningNode(b, listen: false, peers: [server.port])
            let ok = try await eventually { try records(b, "m").count == 1 }
            #expect(ok)
            await puller.stop()
            await server.stop()
            try await group.shutdownGracefully()
        }
    }

    /// A node without a retention (an app) still removes the log entries that later
    /// writes of their records superseded, and what it ships is unchanged.
    @Test func aNodeWithoutRetentionCompactsSupersededEntries() async throws {
        try await withTemporaryDirectory { root in
            let server = try openStore(root + "/server", node: 1)
            let app = try openStore(root + "/app", node: 2)
            for i in 0..<50 { _ = try app.apply([Mutation.set(map: "m", key: "k\(i % 5)", value: .int(Int64(i)), ttlMillis: nil)]) }
            #expect(try app.opLogCount() == 50)
            let serverNode = try await RunningNode(server)
            let appNode = try await RunningNode(app, listen: false, peers: [serverNode.port])
            let compacted = try await eventually { try app.opLogCount() == 5 }
            #expect(compacted)
            let synced = try await eventually { try records(app, "m") == records(server, "m") }
            #expect(synced)
            await appNode.stop()
            await serverNode.stop()
        }
    }

    @Test func truncatedLogIsRepairedByAntiEntropy() async throws {
        try await withTemporaryDirectory { root in
            let clock = ManualWallClock(1_700_000_000_000)
            let a = try Store(path: root + "/a", options: .init(durability: .noSync, wallClock: clock, nodeID: NodeID(1)))
            _ = try a.apply((0..<400).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            _ = try a.apply((0..<50).map { Mutation.set(map: "m", key: "k\($0)", value: nil, ttlMillis: nil) })
            _ = try a.apply([Mutation.increment(map: "c", key: "x", by: 3)])
            clock.advance(by: 60_000)
            // Truncate the whole log: every entry is older than the cutoff.
            let report = try a.collectGarbage(olderThan: HLCTimestamp(millis: 1_700_000_000_001, counter: 0, node: NodeID(0)))
            #expect(report.logEntriesRemoved == 451)
            #expect(try a.operations(after: nil).isEmpty)
            let b = try openStore(root + "/b", node: 2)
            // B already has a stale copy of some keys.
            _ = try b.apply([ReplicatedOperation.lww(map: "m", key: "k399", value: "stale", timestamp: HLCTimestamp(millis: 1, counter: 0, node: NodeID(7)))])
            let server = try await RunningNode(a)
            let puller = try await RunningNode(b, listen: false, peers: [server.port])
            let repaired = try await eventually { try records(a, "m") == records(b, "m") && records(a, "c") == records(b, "c") }
            #expect(repaired)
            #expect(try roots(a, "m") == roots(b, "m"))
            #expect(server.node.statistics.repairsSent > 0)
            // Later writes stream normally after the repair.
            _ = try a.apply([Mutation.set(map: "m", key: "after", value: 1, ttlMillis: nil)])
            let streamed = try await eventually { try b.state(map: "m", key: "after") != nil }
            #expect(streamed)
            await puller.stop()
            await server.stop()
        }
    }

    @Test func partialReplicaGetsOnlyItsMapsAndPartitions() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            _ = try a.apply((0..<300).map { Mutation.set(map: "users", key: "u\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            _ = try a.apply((0..<100).map { Mutation.set(map: "logs", key: "l\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let wanted: [UInt16] = Array(0..<100)
            let server = try await RunningNode(a)
            let b = try openStore(root + "/b", node: 2)
            let puller = try await RunningNode(b, listen: false, peers: [server.port], subscription: Subscription(maps: ["users"], partitions: wanted))
            let expected = try records(a, "users").filter { wanted.contains(Partitioner.partition(of: $0.key)) }
            let done = try await eventually { try records(b, "users") == expected }
            #expect(done && !expected.isEmpty)
            #expect(try records(b, "logs").isEmpty)
            await puller.stop()
            await server.stop()
        }
    }

    @Test func writeConcernWaitsForPeers() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let server = try await RunningNode(a)
            let b = try openStore(root + "/b", node: 2)
            let c = try openStore(root + "/c", node: 3)
            let pb = try await RunningNode(b, listen: false, peers: [server.port])
            let pc = try await RunningNode(c, listen: false, peers: [server.port])
            guard case .applied(let seq) = try a.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])[0] else {
                Issue.record("not applied")
                return
            }
            let reached = await server.node.waitUntilReplicated(seq, toPeers: 2, timeout: .seconds(10))
            #expect(reached == 2)
            #expect(try b.state(map: "m", key: "k") != nil && c.state(map: "m", key: "k") != nil)
            await pc.stop()
            let notYet = try a.apply([Mutation.set(map: "m", key: "k2", value: 1, ttlMillis: nil)])
            guard case .applied(let seq2) = notYet[0] else { return }
            let partial = await server.node.waitUntilReplicated(seq2, toPeers: 2, timeout: .milliseconds(500))
            #expect(partial == 1, "times out reporting what was reached")
            await pb.stop()
            await server.stop()
        }
    }

    @Test func tlsReplicatesAndPlainClientsGetNothing() async throws {
        try await withTemporaryDirectory { root in
            let (certificate, key) = try makeCertificate(in: root, host: "topgun")
            let tls = ReplicaNode.TLSFiles(certificate: certificate, privateKey: key)
            let a = try openStore(root + "/a", node: 1)
            _ = try a.apply((0..<50).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let server = try await RunningNode(a, tls: tls)
            let b = try openStore(root + "/b", node: 2)
            let puller = try await RunningNode(b, listen: false, peers: [server.port], tls: tls)
            let ok = try await eventually { try records(b, "m").count == 50 }
            #expect(ok)
            let c = try openStore(root + "/c", node: 3)
            let plain = try await RunningNode(c, listen: false, peers: [server.port])
            // The plain link failed, was dialled again and failed again: nothing came.
            #expect(try await eventually { plain.node.statistics.linksDown >= 2 })
            #expect(try records(c, "m").isEmpty)
            for n in [plain, puller, server] { await n.stop() }
        }
    }

    /// Mutual TLS: a listener with a client CA takes only nodes presenting a
    /// certificate it signed; the others get nothing.
    @Test func mutualTLSRefusesNodesWithoutAnAcceptedCertificate() async throws {
        try await withTemporaryDirectory { root in
            try FileManager.default.createDirectory(atPath: root + "/mesh", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: root + "/other", withIntermediateDirectories: true)
            let (certificate, key) = try makeCertificate(in: root + "/mesh", host: "topgun")
            let (otherCertificate, otherKey) = try makeCertificate(in: root + "/other", host: "topgun")
            let a = try openStore(root + "/a", node: 1)
            _ = try a.apply((0..<10).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let server = try await RunningNode(a, tls: .init(certificate: certificate, privateKey: key, clientCA: certificate))
            let b = try openStore(root + "/b", node: 2)
            let member = try await RunningNode(b, listen: false, peers: [server.port], tls: .init(certificate: certificate, privateKey: key))
            #expect(try await eventually { try records(b, "m").count == 10 })
            // Trusts the server, but its own certificate is not the mesh's.
            let c = try openStore(root + "/c", node: 3)
            let outsider = try await RunningNode(
                c, listen: false, peers: [server.port], tls: .init(certificate: otherCertificate, privateKey: otherKey, trustRoots: certificate))
            #expect(try await eventually { outsider.node.statistics.linksDown >= 2 })
            #expect(try records(c, "m").isEmpty)
            for n in [outsider, member, server] { await n.stop() }
        }
    }

    /// A peer addressed by host name must present a certificate for that name.
    @Test func aPeerAddressedByNameIsVerifiedAgainstItsCertificate() async throws {
        try await withTemporaryDirectory { root in
            try FileManager.default.createDirectory(atPath: root + "/right", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: root + "/wrong", withIntermediateDirectories: true)
            let (right, rightKey) = try makeCertificate(in: root + "/right", host: "localhost")
            let (wrong, wrongKey) = try makeCertificate(in: root + "/wrong", host: "elsewhere.example")
            for (certificate, key, expected) in [(right, rightKey, true), (wrong, wrongKey, false)] {
                let a = try openStore(root + "/a-\(expected)", node: 1)
                _ = try a.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
                let tls = ReplicaNode.TLSFiles(certificate: certificate, privateKey: key)
                let server = try await RunningNode(a, tls: tls)
                let b = try openStore(root + "/b-\(expected)", node: 2)
                let puller = try await RunningNode(b, listen: false, addresses: [.init(host: "localhost", port: server.port)], tls: tls)
                if expected {
                    #expect(try await eventually { try records(b, "m").count == 1 })
                } else {
                    #expect(try await eventually { puller.node.statistics.linksDown >= 2 })
                    #expect(try records(b, "m").isEmpty, "a certificate for another name is refused")
                }
                for n in [puller, server] { await n.stop() }
            }
        }
    }

    /// A subscriber far behind (more log entries than twice the records) catches up by
    /// a repair: each record once, in its current state, instead of every op. (Counter
    /// deltas: an LWW log holds only each record's latest write once compacted.)
    @Test func aSubscriberFarBehindCatchesUpByRepair() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            for _ in 0..<20 {
                _ = try a.apply((0..<10).map { Mutation.increment(map: "c", key: "k\($0)", by: 1) })
            }
            let server = try await RunningNode(a, catchUpByRepairAfter: 50)
            let b = try openStore(root + "/b", node: 2)
            let puller = try await RunningNode(b, listen: false, peers: [server.port])
            #expect(try await eventually { try b.peerCursor(NodeID(1)) == a.lastSequence() })
            #expect(try records(b, "c") == records(a, "c"))
            #expect(server.node.statistics.repairsSent == 10, "ten records, not 200 ops")
            // Once caught up, new writes stream as usual.
            _ = try a.apply([Mutation.set(map: "m", key: "new", value: 1, ttlMillis: nil)])
            #expect(try await eventually { try records(b, "m")["new"] != nil })
            for n in [puller, server] { await n.stop() }
        }
    }

    @Test func scheduledGarbageCollectionKeepsReplicasConverging() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            _ = try a.apply((0..<100).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            _ = try a.apply((0..<30).map { Mutation.set(map: "m", key: "k\($0)", value: nil, ttlMillis: nil) })
            let server = try await RunningNode(a, retention: .seconds(1))
            let b = try openStore(root + "/b", node: 2)
            let pb = try await RunningNode(b, listen: false, peers: [server.port])
            func visible(_ s: Store) throws -> [String: StoredState] { try records(s, "m").filter { if case .lww(let r) = $0.value { r.value != nil } else { true } } }
            #expect(try await eventually { try visible(b) == visible(a) && visible(a).count == 70 })
            // After the retention, tombstones and the acknowledged log are gone.
            #expect(try await eventually { try a.opLogCount() == 0 && a.count(map: "m") == 70 })
            // A newcomer is repaired from the Merkle digests and matches.
            let c = try openStore(root + "/c", node: 3)
            let pc = try await RunningNode(c, listen: false, peers: [server.port])
            #expect(try await eventually { try visible(c) == visible(a) })
            for n in [pc, pb, server] { await n.stop() }
        }
    }

    @Test func constantTimeCompare() {
        #expect(constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        #expect(!constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
        #expect(!constantTimeEquals(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!constantTimeEquals([], Array("a".utf8)))
    }
}
