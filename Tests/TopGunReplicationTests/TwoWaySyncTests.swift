import Foundation
import Synchronization
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// Apps that have no listen address sync both ways over the connection they open:
/// their writes reach the server and the other apps, the server's reach them, through
/// restarts of either side, resuming from stored cursors.
@Suite(.timeLimit(.minutes(3)))
struct TwoWaySyncTests {
    enum Transport: String, CaseIterable, Sendable {
        case tcp
        case webSocket
    }

    /// The server: TCP on `port`, or the HTTP listener (WebSocket on `/sync`) on it.
    static func server(_ store: Store, _ transport: Transport, port: Int) async throws -> RunningNode {
        switch transport {
        case .tcp: try await RunningNode(store, port: port, segmentSize: 2)
        case .webSocket: try await RunningNode(store, listen: false, http: port, segmentSize: 2)
        }
    }

    /// An app: no listen address, one link to the server.
    static func app(_ store: Store, _ transport: Transport, port: Int) async throws -> RunningNode {
        let address: ReplicaNode.PeerAddress =
            switch transport {
            case .tcp: .init(host: "127.0.0.1", port: port)
            case .webSocket: try #require(ReplicaNode.PeerAddress(url: "ws://127.0.0.1:\(port)/sync"))
            }
        return try await RunningNode(store, listen: false, addresses: [address], segmentSize: 2)
    }

    static func value(_ store: Store, _ key: String) throws -> Value? {
        guard case .lww(let record)? = try store.state(map: "notes", key: key) else { return nil }
        return record.value
    }

    static func count(_ store: Store) throws -> Int64 {
        guard case .counter(let counter)? = try store.state(map: "likes", key: "post") else { return 0 }
        return counter.value
    }

    @Test(arguments: Transport.allCases)
    func appsWithoutAListenAddressSyncBothWays(_ transport: Transport) async throws {
        try await withTemporaryDirectory { root in
            let port = reservePorts(1)[0]
            let serverStore = try openStore(root + "/server", node: 1)
            let phone = try openStore(root + "/phone", node: 2)
            let laptop = try openStore(root + "/laptop", node: 3)
            var server = try await Self.server(serverStore, transport, port: port)
            var phoneNode = try await Self.app(phone, transport, port: port)
            let laptopNode = try await Self.app(laptop, transport, port: port)

            // An app's write reaches the server and the other app; the server's reach both.
            _ = try phone.apply([.set(map: "notes", key: "from-phone", value: "p1", ttlMillis: nil), .increment(map: "likes", key: "post", by: 1)])
            _ = try serverStore.apply([.set(map: "notes", key: "from-server", value: "s1", ttlMillis: nil)])
            #expect(try await eventually { try Self.value(serverStore, "from-phone") == "p1" })
            #expect(try await eventually { try Self.value(laptop, "from-phone") == "p1" && Self.count(laptop) == 1 })
            #expect(try await eventually { try Self.value(phone, "from-server") == "s1" && Self.value(laptop, "from-server") == "s1" })
            // History both ways: starting a link over would ship all of it again.
            _ = try serverStore.apply((0..<40).map { .set(map: "notes", key: "history-\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            _ = try phone.apply((0..<40).map { .set(map: "notes", key: "phone-history-\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            #expect(try await eventually { try Self.value(phone, "history-39") == 39 && Self.value(serverStore, "phone-history-39") == 39 })
            // Caught up both ways: each side's cursor is at the other's log head.
            #expect(try await eventually {
                try phone.peerCursor(NodeID(1)) == serverStore.lastSequence() && serverStore.peerCursor(NodeID(2)) == phone.lastSequence()
            })

            // The phone goes offline, writes, comes back: the write arrives, and the link
            // resumes from the stored cursors instead of starting over.
            await phoneNode.stop()
            for i in 0..<10 {
                _ = try phone.apply([.set(map: "notes", key: "offline-\(i)", value: .int(Int64(i)), ttlMillis: nil), .increment(map: "likes", key: "post", by: 1)])
            }
            _ = try serverStore.apply([.set(map: "notes", key: "while-phone-away", value: "s2", ttlMillis: nil)])
            phoneNode = try await Self.app(phone, transport, port: port)
            #expect(try await eventually { try Self.value(laptop, "offline-9") == 9 && Self.count(laptop) == 11 })
            #expect(try await eventually { try Self.value(phone, "while-phone-away") == "s2" })
            // Segments of two entries. Resumed, the phone pulls the server's new write (1
            // segment) and pushes its 20 ops (10); started over it would pull and push
            // the 80 entries of history besides (40 segments each way). Ops a link
            // received are mostly not sent back on it (a race can let a few echo).
            #expect(phoneNode.node.statistics.segmentsApplied <= 12, "\(phoneNode.node.statistics)")
            #expect(phoneNode.node.statistics.segmentsSent <= 12, "\(phoneNode.node.statistics)")

            // The server restarts while both apps write.
            await server.stop()
            _ = try phone.apply([.set(map: "notes", key: "during-restart-phone", value: "p2", ttlMillis: nil)])
            _ = try laptop.apply([.set(map: "notes", key: "during-restart-laptop", value: "l1", ttlMillis: nil), .increment(map: "likes", key: "post", by: 5)])
            server = try await Self.server(serverStore, transport, port: port)
            for store in [serverStore, phone, laptop] {
                #expect(try await eventually {
                    try Self.value(store, "during-restart-phone") == "p2" && Self.value(store, "during-restart-laptop") == "l1"
                        && Self.count(store) == 16
                })
            }
            // Resumed: a few segments (a restart from zero would pull 50 and more).
            #expect(server.node.statistics.segmentsApplied <= 10, "resumed, not restarted: \(server.node.statistics)")
            let roots = try [serverStore, phone, laptop].map { store in
                try (0..<UInt16(271)).map { try store.merkleRoot(map: "notes", partition: $0) }
            }
            #expect(roots[0] == roots[1] && roots[1] == roots[2])
            for node in [phoneNode, laptopNode, server] { await node.stop() }
        }
    }

    /// The embedded API: `Database.sync` with a status stream, pending changes and a
    /// wait for a write to be on the server, through a server restart.
    @Test func anAppSyncsThroughTheDatabaseAPI() async throws {
        try await withTemporaryDirectory { root in
            let port = reservePorts(1)[0]
            let serverStore = try openStore(root + "/server", node: 1)
            var server = try await Self.server(serverStore, .webSocket, port: port)
            let db = try Database(path: root + "/app")
            let notes = db.map("notes", of: String.self)
            try await notes.set("before-connecting", "a0")
            let sync = try db.sync(with: "ws://127.0.0.1:\(port)/sync", token: Array(testSecret.utf8))
            let seen = Statuses()
            let watcher = Task { for await status in sync.statusUpdates() { seen.append(status) } }
            try await sync.waitUntilIdle()
            #expect(try Self.value(serverStore, "before-connecting") == "a0")
            try await notes.set("n1", "hello")
            try await sync.waitUntilPushed()
            #expect(try Self.value(serverStore, "n1") == "hello", "on the server once waitUntilPushed returns")
            #expect(try sync.pendingChanges() == 0)
            _ = try serverStore.apply([.set(map: "notes", key: "from-server", value: "s1", ttlMillis: nil)])
            #expect(try await eventually { try notes.get("from-server") == "s1" })

            await server.stop()
            #expect(try await eventually { if case .offline = sync.status { true } else { sync.status == .connecting } })
            try await notes.set("offline", "o1")
            #expect(try sync.pendingChanges() >= 1)
            server = try await Self.server(serverStore, .webSocket, port: port)
            try await sync.waitUntilPushed()
            #expect(try Self.value(serverStore, "offline") == "o1")
            try await sync.waitUntilIdle()
            await sync.stop()
            watcher.cancel()
            let statuses = seen.all
            #expect(statuses.contains(.connecting) && statuses.contains(.idle), "\(statuses)")
            #expect(statuses.contains { if case .offline = $0 { true } else { false } }, "\(statuses)")
            await server.stop()
            db.close()
        }
    }

    /// `wss://`: the HTTP listener speaks TLS with the node's files; an app that trusts
    /// the certificate syncs, verifying the host name; a plain `ws://` app gets nothing.
    @Test func secureWebSocketVerifiesTheServer() async throws {
        try await withTemporaryDirectory { root in
            let (certificate, key) = try makeCertificate(in: root, host: "localhost")
            let port = reservePorts(1)[0]
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply([.set(map: "notes", key: "secret", value: "s", ttlMillis: nil)])
            let server = try await RunningNode(
                serverStore, listen: false, http: port, tls: .init(certificate: certificate, privateKey: key))
            let db = try Database(path: root + "/app")
            let sync = try db.sync(with: "wss://localhost:\(port)/sync", token: Array(testSecret.utf8), trustRoots: certificate)
            try await sync.waitUntilIdle()
            #expect(try db.map("notes", of: String.self).get("secret") == "s")
            await sync.stop()
            let plain = try Database(path: root + "/plain")
            let plainSync = try plain.sync(with: "ws://localhost:\(port)/sync", token: Array(testSecret.utf8))
            #expect(try await eventually { plainSync.node.statistics.linksDown >= 2 })
            #expect(try plain.map("notes", of: String.self).get("secret") == nil)
            await plainSync.stop()
            await server.stop()
        }
    }

    /// Regression: segments were bounded by op count only, so large values made one
    /// frame above the limit; the receiver dropped the link and the same segment was
    /// built again on every reconnect. Now a segment stops at a quarter of the frame
    /// limit (a larger op goes alone), streams and repairs alike.
    @Test func largeValuesAreShippedInFramesThatFit() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            var rng = SystemRandomNumberGenerator()
            let values = (0..<6).map { _ in Value.bytes((0..<100_000).map { _ in UInt8.random(in: 0...255, using: &rng) }) }
            _ = try a.apply(values.enumerated().map { .set(map: "blobs", key: "b\($0.offset)", value: $0.element, ttlMillis: nil) })
            let server = try await RunningNode(a, maxFrameBytes: 300_000)
            let b = try openStore(root + "/b", node: 2)
            let puller = try await RunningNode(b, listen: false, peers: [server.port], maxFrameBytes: 300_000)
            #expect(try await eventually { try records(b, "blobs").count == 6 })
            #expect(puller.node.statistics.segmentsApplied >= 3)
            // A repair (a node that subscribes after the log was collected) is chunked too.
            let c = try openStore(root + "/c", node: 3)
            _ = try a.collectGarbage(olderThan: .init(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0)), acknowledgements: [NodeID(2): try a.lastSequence()!])
            let late = try await RunningNode(c, listen: false, peers: [server.port], maxFrameBytes: 300_000)
            #expect(try await eventually { try records(c, "blobs").count == 6 })
            for node in [late, puller, server] { await node.stop() }
        }
    }
}

/// Statuses collected by a watcher task.
final class Statuses: Sendable {
    private let values = Mutex<[SyncSession.Status]>([])
    func append(_ status: SyncSession.Status) { values.withLock { $0.append(status) } }
    var all: [SyncSession.Status] { values.withLock { $0 } }
}
