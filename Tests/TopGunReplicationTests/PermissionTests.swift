import Foundation
import JWTKit
import NIOCore
import NIOEmbedded
import Synchronization
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// The policy of the README's example, enforced by a server over real connections:
/// what each principal reads (segments, repairs, digests) and writes.
@Suite(.timeLimit(.minutes(3)))
struct PermissionTests {
    static let policyJSON = """
        {"rules": [
          {"who": "role:replica", "maps": "*",      "allow": ["read", "write"]},
          {"who": "*",            "maps": "public", "allow": ["read"]},
          {"who": "*",            "maps": "notes",  "keys": "{sub}:*", "allow": ["read", "write"]},
          {"who": "user:admin",   "maps": "*",      "allow": ["read", "write"]},
          {"who": "role:banned",  "maps": "*",      "deny":  ["read", "write"]}
        ]}
        """
    static let secret = "test-jwt-secret-of-at-least-32-bytes"

    /// The claims the server reads, signed here.
    typealias Claims = TokenVerifier.Claims

    /// An HS256 token for `sub`, valid for an hour unless told otherwise.
    static func token(
        _ sub: String, roles: [String] = [], expiresIn: TimeInterval = 3_600, notBefore: TimeInterval? = nil, audience: String? = nil,
        secret: String = Self.secret
    ) async throws -> String {
        let keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(
            Claims(
                sub: SubjectClaim(value: sub), exp: .init(value: Date().addingTimeInterval(expiresIn)),
                nbf: notBefore.map { .init(value: Date().addingTimeInterval($0)) }, aud: audience.map { .init(value: [$0]) },
                roles: roles))
    }

    static func verifier(audience: String? = nil) async throws -> TokenVerifier {
        try await TokenVerifier(hmacSecret: secret, publicKeysPEM: [], audience: audience)
    }

    static func keys(_ store: Store, _ map: String) throws -> Set<String> {
        Set(try records(store, map).filter { if case .lww(let r) = $0.value { r.value != nil } else { true } }.keys)
    }

    static func value(_ store: Store, _ map: String, _ key: String) throws -> Value? {
        guard case .lww(let record)? = try store.state(map: map, key: key) else { return nil }
        return record.value
    }

    /// The app's address on the server for `transport`.
    static func url(_ transport: TwoWaySyncTests.Transport, _ port: Int) -> String {
        transport == .tcp ? "tcp://127.0.0.1:\(port)" : "ws://127.0.0.1:\(port)/sync"
    }

    @Test(arguments: TwoWaySyncTests.Transport.allCases)
    func eachPrincipalReadsAndWritesWhatThePolicyGrants(_ transport: TwoWaySyncTests.Transport) async throws {
        try await withTemporaryDirectory { root in
            let port = reservePorts(1)[0]
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply([
                .set(map: "public", key: "p1", value: "hello", ttlMillis: nil),
                .set(map: "notes", key: "alice:1", value: "a1", ttlMillis: nil),
                .set(map: "notes", key: "bob:1", value: "b1", ttlMillis: nil),
                .set(map: "secret", key: "s1", value: "x", ttlMillis: nil),
            ])
            // The log is gone: everyone starts with a Merkle repair, which must be
            // filtered like the log (no replica is known, users do not hold GC back).
            _ = try serverStore.collectGarbage(olderThan: HLCTimestamp(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0)))
            #expect(try serverStore.opLogCount() == 0)
            let policy = try Policy(json: Array(Self.policyJSON.utf8))
            let verifier = try await Self.verifier()
            let server =
                transport == .tcp
                ? try await RunningNode(serverStore, port: port, segmentSize: 2, policy: policy, verifier: verifier)
                : try await RunningNode(serverStore, listen: false, http: port, segmentSize: 2, policy: policy, verifier: verifier)

            // Apps as users: alice, bob, a banned carol, the admin; and one replica.
            func app(_ name: String, _ node: UInt64, roles: [String] = []) async throws -> (Database, SyncSession) {
                let db = try Database(path: root + "/" + name, options: .init(durability: .noSync, nodeID: NodeID(node)))
                let session = try db.sync(with: Self.url(transport, port), jwt: try await Self.token(name, roles: roles))
                return (db, session)
            }
            let (alice, aliceSync) = try await app("alice", 2)
            let (bob, bobSync) = try await app("bob", 3)
            let (carol, carolSync) = try await app("carol", 4, roles: ["banned"])
            let (admin, adminSync) = try await app("admin", 5)
            let replicaStore = try openStore(root + "/replica", node: 9)
            let replica =
                transport == .tcp
                ? try await RunningNode(replicaStore, listen: false, peers: [port], segmentSize: 2)
                : try await RunningNode(
                    replicaStore, listen: false, addresses: [try #require(ReplicaNode.PeerAddress(url: Self.url(transport, port)))], segmentSize: 2)

            for session in [aliceSync, bobSync, carolSync, adminSync] { try await session.waitUntilIdle() }
            #expect(try await eventually { try Self.keys(replicaStore, "secret") == ["s1"] && Self.keys(replicaStore, "notes").count == 2 })
            // Reads: each sees what it may, through the repair and the log.
            #expect(try Self.keys(alice.store, "notes") == ["alice:1"])
            #expect(try Self.keys(alice.store, "public") == ["p1"])
            #expect(try Self.keys(alice.store, "secret").isEmpty)
            #expect(try Self.keys(bob.store, "notes") == ["bob:1"])
            #expect(try Self.keys(carol.store, "public").isEmpty && Self.keys(carol.store, "notes").isEmpty)
            #expect(try Self.keys(admin.store, "secret") == ["s1"] && Self.keys(admin.store, "notes").count == 2)

            // Writes: alice's own note goes up; her writes to a read-only map, to bob's
            // note and to a map she may not see are refused one by one, reported, and
            // undone on her side; the rest of the segment applies.
            let refusals = Mutex<[WriteRejection]>([])
            let listening = Task {
                for await r in aliceSync.rejections() { refusals.withLock { $0.append(r) } }
            }
            _ = try alice.store.apply([
                .set(map: "public", key: "p1", value: "defaced", ttlMillis: nil),
                .set(map: "notes", key: "alice:2", value: "a2", ttlMillis: nil),
                .set(map: "notes", key: "bob:1", value: "stolen", ttlMillis: nil),
                .set(map: "secret", key: "s2", value: "planted", ttlMillis: nil),
                .increment(map: "public-likes", key: "p1", by: 5),
            ])
            #expect(try await eventually { try Self.value(serverStore, "notes", "alice:2") == "a2" })
            #expect(try await eventually { refusals.withLock { $0.count } == 4 })
            let refused = refusals.withLock { $0 }.map { "\($0.map)/\($0.key)" }.sorted()
            #expect(refused == ["notes/bob:1", "public-likes/p1", "public/p1", "secret/s2"])
            #expect(refusals.withLock { $0 }.allSatisfy { $0.reason.hasPrefix("not permitted") })
            #expect(try Self.value(serverStore, "public", "p1") == "hello")
            #expect(try Self.value(serverStore, "notes", "bob:1") == "b1")
            #expect(try serverStore.state(map: "secret", key: "s2") == nil)
            #expect(try serverStore.state(map: "public-likes", key: "p1") == nil)
            // Alice's copy equals the server's again (or holds nothing she may not read).
            #expect(try await eventually { try Self.value(alice.store, "public", "p1") == "hello" })
            #expect(try Self.value(alice.store, "notes", "bob:1") == nil)
            #expect(try alice.store.state(map: "secret", key: "s2") == nil)
            #expect(try alice.store.state(map: "public-likes", key: "p1").map { if case .counter(let c) = $0 { c.value } else { -1 } } ?? 0 == 0)
            #expect(server.node.statistics.writesRejected["not permitted"] == 4)
            // A banned user's write to its own {sub}: keys is refused: deny wins.
            _ = try carol.store.apply([.set(map: "notes", key: "carol:1", value: "c1", ttlMillis: nil)])
            try await carolSync.waitUntilPushed()
            #expect(try serverStore.state(map: "notes", key: "carol:1") == nil)
            #expect(try await eventually { try carol.store.state(map: "notes", key: "carol:1") == nil })

            // Bob and the replica get alice's note; bob never sees it.
            #expect(try await eventually { try Self.value(replicaStore, "notes", "alice:2") == "a2" })
            try await bobSync.waitUntilIdle()
            #expect(try Self.keys(bob.store, "notes") == ["bob:1"])

            // Repeated repairs converge: scoped digests neither leak nor differ for ever.
            let repairsBefore = server.node.statistics.repairsSent
            for session in [aliceSync, bobSync] { try await session.waitUntilIdle() }
            _ = try alice.store.apply([.set(map: "notes", key: "alice:3", value: "a3", ttlMillis: nil)])
            try await aliceSync.waitUntilPushed()
            #expect(server.node.statistics.repairsSent == repairsBefore, "no repair without a difference")
            #expect(server.node.sessionsByPrincipal["user:alice"] == 1)

            listening.cancel()
            for session in [aliceSync, bobSync, carolSync, adminSync] { await session.stop() }
            for db in [alice, bob, carol, admin] {
                let report = try db.check()
                #expect(report.isConsistent, "\(report.problems)")
                db.close()
            }
            await replica.stop()
            await server.stop()
        }
    }

    /// A user's app that subscribes to the server's log after its own digests ask for
    /// a repair: the server answers with the records it may read only, and digests the
    /// same subset, so a second round finds nothing to send.
    @Test func scopedRepairsSendOnlyReadableRecordsAndSettle() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply((0..<50).map { .set(map: "notes", key: ($0 % 2 == 0 ? "alice:" : "bob:") + "\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let policy = try Policy(json: Array(Self.policyJSON.utf8))
            let access = Access(principal: Principal(subject: "alice", roles: []), policy: policy)
            let filter: @Sendable (String) -> Store.RecordFilter = { access.readable(in: $0) }
            let appStore = try openStore(root + "/alice", node: 2)
            // The app's digests (empty) against the server's, twice.
            var ops = try serverStore.repairOperations(theirs: try appStore.bucketDigests(map: "notes").isEmpty ? [:] : ["notes": appStore.bucketDigests(map: "notes")], visible: filter)
            #expect(ops.count == 25 && ops.allSatisfy { $0.key.hasPrefix("alice:") })
            _ = try appStore.apply(ops)
            ops = try serverStore.repairOperations(theirs: ["notes": try appStore.bucketDigests(map: "notes")], visible: filter)
            #expect(ops.isEmpty, "the second round sends nothing")
            // The digests the server would send the app describe alice's records only.
            #expect(try serverStore.bucketDigests(map: "notes", access.readable(in: "notes")) == appStore.bucketDigests(map: "notes"))
        }
    }

    @Test func badTokensAreRefusedWithTheirReason() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            let server = try await RunningNode(serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier(audience: "topgun"))
            let cases: [(String, String)] = [
                (try await Self.token("alice", expiresIn: -60, audience: "topgun"), "token expired"),
                (try await Self.token("alice", notBefore: 600, audience: "topgun"), "token not yet valid"),
                (try await Self.token("alice", audience: "elsewhere"), "wrong audience"),
                (try await Self.token("alice", audience: "topgun", secret: "another-secret-of-at-least-32-bytes!"), "bad signature"),
                ("not.a.token", "malformed token"),
                (
                    try await JWTKeyCollection().add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha256)
                        .sign(Claims(exp: .init(value: Date().addingTimeInterval(600)), aud: .init(value: ["topgun"]))),
                    "no sub claim"
                ),
            ]
            for (i, (token, reason)) in cases.enumerated() {
                let app = try openStore(root + "/app\(i)", node: UInt64(10 + i))
                let node = try ReplicaNode(store: app, configuration: .init(listen: nil, token: [], bearerToken: token))
                await #expect {
                    try await node.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
                } throws: { error in
                    "\(error)".contains(reason)
                }
            }
            let refused = server.node.statistics.tokensRefused
            #expect(refused.values.reduce(0, +) == cases.count)
            #expect(refused.keys.contains { $0.contains("expired") } && refused.keys.contains { $0.contains("audience") })
            // A good token still works.
            let app = try openStore(root + "/good", node: 30)
            let node = try ReplicaNode(store: app, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice", audience: "topgun")))
            _ = try await node.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            await server.stop()
        }
    }

    @Test func aUserCannotTakeAnotherPrincipalsNodeID() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            let server = try await RunningNode(serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier())
            let replica = try openStore(root + "/replica", node: 7)
            let replicaNode = try ReplicaNode(store: replica, configuration: .init(listen: nil, token: Array(testSecret.utf8)))
            _ = try await replicaNode.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            // Alice's app claims the replica's id, then bob's app claims alice's.
            let mallory = try openStore(root + "/mallory", node: 7)
            let impostor = try ReplicaNode(store: mallory, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice")))
            await #expect { try await impostor.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10)) } throws: {
                "\($0)".contains("belongs to another principal")
            }
            let alice = try openStore(root + "/alice", node: 8)
            _ = try await ReplicaNode(store: alice, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice")))
                .syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            let bob = try openStore(root + "/bob", node: 8)
            let bobNode = try ReplicaNode(store: bob, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("bob")))
            await #expect { try await bobNode.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10)) } throws: {
                "\($0)".contains("belongs to another principal")
            }
            #expect(try serverStore.peer(NodeID(8))?.user == "alice")
            #expect(try serverStore.peer(NodeID(7))?.user == nil)
            // A user first takes an id the server has not met; the replica with that id,
            // proving the secret, takes it back, and the user's app is refused from then.
            let early = try openStore(root + "/early", node: 20)
            _ = try await ReplicaNode(store: early, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice")))
                .syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            #expect(try await eventually { !server.node.connectedPeers.contains(NodeID(20)) })
            let owner = try openStore(root + "/owner", node: 20)
            _ = try await ReplicaNode(store: owner, configuration: .init(listen: nil, token: Array(testSecret.utf8)))
                .syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            #expect(try serverStore.peer(NodeID(20))?.user == nil)
            #expect(try await eventually { !server.node.connectedPeers.contains(NodeID(20)) })
            await #expect {
                try await ReplicaNode(store: early, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice")))
                    .syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            } throws: { "\($0)".contains("belongs to another principal") }
            // An id that writes through a replica cannot be claimed by a user either.
            let writer = try openStore(root + "/writer", node: 21)
            _ = try writer.apply([.set(map: "public", key: "w", value: 1, ttlMillis: nil)])
            _ = try replica.apply(try writer.operations(after: nil).map(\.operation))
            _ = try await replicaNode.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            let posing = try openStore(root + "/posing", node: 21)
            await #expect {
                try await ReplicaNode(store: posing, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice")))
                    .syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            } throws: { "\($0)".contains("belongs to another principal") }
            await server.stop()
        }
    }

    /// A user with a valid token plays server: it sends REJECTED for a record it may
    /// only read, with a forged "current" state, and acknowledges far beyond the log.
    /// Neither changes anything on the server.
    @Test func aUserCannotRewriteAServerRecordOrFakeAcknowledgements() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply([.set(map: "public", key: "p1", value: "hello", ttlMillis: nil)])
            guard case .lww(let record)? = try serverStore.state(map: "public", key: "p1") else { throw CancellationError() }
            let server = try await RunningNode(serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier())
            let client = try await FrameClient(port: server.port)
            let welcome = try #require(try await client.hello(node: NodeID(40), jwt: try await Self.token("mallory")))
            guard case .admitted = try Message(welcome) else { throw CancellationError() }
            try await client.send(Message.subscribe(Subscription(cursor: nil)).frame)
            try await client.send(Message.ack(Acknowledgement(cursor: HLCTimestamp(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(1)), head: nil)).frame)
            let forged = ReplicatedOperation.lww(
                map: "public", key: "p1", value: "forged", timestamp: HLCTimestamp(millis: record.timestamp.millis + 10_000, counter: 0, node: NodeID(40)))
            let refused = ReplicatedOperation.lww(map: "public", key: "p1", value: "hello", timestamp: record.timestamp)
            try await client.send(Message.rejected(WriteRejection(reason: "not permitted", operation: refused, current: forged)).frame)
            // The server ends the session on it (the loop ends when it closes).
            while (try? await client.next()) != nil {}
            #expect(try Self.value(serverStore, "public", "p1") == "hello")
            #expect(server.node.acknowledgedCursor(of: NodeID(40)) == nil, "a user's acknowledgement counts for no write concern")
            try await client.close()
            await server.stop()
        }
    }

    /// A user's app first seen after a tombstone was collected: its write older than
    /// the GC horizon to that key may be one the tombstone superseded, so it is refused
    /// to the app — and reverted there — instead of bringing the deleted key back, and
    /// its cursor moves on (the refusal is final, not retried).
    @Test func aUsersWriteOlderThanTheHorizonIsRefusedAndReverted() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            let server = try await RunningNode(serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier())
            // The server writes and deletes the key, and collects the tombstone.
            _ = try serverStore.apply([.set(map: "notes", key: "alice:9", value: "x", ttlMillis: nil)])
            let old = try #require(try serverStore.lastSequence())
            _ = try serverStore.apply([.set(map: "notes", key: "alice:9", value: nil, ttlMillis: nil)])
            let report = try serverStore.collectGarbage(olderThan: HLCTimestamp(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0)))
            #expect(report.tombstonesRemoved == 1)
            // Alice's offline write from before the delete, on an app the server meets now.
            let aliceStore = try openStore(root + "/alice", node: 2)
            _ = try aliceStore.apply([
                ReplicatedOperation.lww(map: "notes", key: "alice:9", value: "stale", timestamp: HLCTimestamp(millis: old.millis, counter: 0, node: NodeID(2)))
            ])
            let alice = try ReplicaNode(store: aliceStore, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice")))
            let refusals = Mutex<[WriteRejection]>([])
            let observer = alice.addRejectionObserver { r in refusals.withLock { $0.append(r) } }
            _ = try await alice.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            alice.removeRejectionObserver(observer)
            #expect(try serverStore.state(map: "notes", key: "alice:9") == nil, "the deleted key does not come back")
            #expect(refusals.withLock { $0.map(\.reason) }.contains { $0.hasPrefix("beyond the GC horizon") })
            #expect(try aliceStore.state(map: "notes", key: "alice:9") == nil, "reverted on the app")
            #expect(try serverStore.peerCursor(NodeID(2)) == aliceStore.lastSequence(), "the cursor is not held")
            #expect(server.node.statistics.writesRejected["beyond the GC horizon"] == 1)
            await server.stop()
        }
    }

    /// Users write only maps the server has, with their kind: the first writer of a
    /// map would fix its kind for everyone.
    @Test func usersCannotCreateMapsOrWriteAnotherKind() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply([.set(map: "notes", key: "admin:1", value: "x", ttlMillis: nil)])
            let server = try await RunningNode(serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier())
            let adminStore = try openStore(root + "/admin", node: 2)
            _ = try adminStore.apply([
                .increment(map: "notes", key: "admin:count", by: 5),
                .set(map: "fresh", key: "k", value: 1, ttlMillis: nil),
            ])
            let admin = try ReplicaNode(store: adminStore, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("admin")))
            let refusals = Mutex<[String]>([])
            let observer = admin.addRejectionObserver { r in refusals.withLock { $0.append(r.reason) } }
            _ = try await admin.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            admin.removeRejectionObserver(observer)
            let reasons = refusals.withLock { $0 }.sorted()
            #expect(reasons.count == 2 && reasons[0].hasPrefix("kind mismatch") && reasons[1].hasPrefix("unknown map"), "\(reasons)")
            #expect(serverStore.kind(ofMap: "notes") == .lww && serverStore.kind(ofMap: "fresh") == nil)
            #expect(try adminStore.state(map: "fresh", key: "k") == nil)
            await server.stop()
        }
    }

    /// Before a peer has authenticated, a large frame is refused at its header: an
    /// unauthenticated connection cannot make the server buffer megabytes.
    @Test func aLargeFrameBeforeTheHandshakeIsRefusedAtItsHeader() async throws {
        try await withTemporaryDirectory { root in
            let server = try await RunningNode(try openStore(root + "/server", node: 1))
            let client = try await FrameClient(port: server.port)
            try? await client.send(Frame(.hello, [UInt8](repeating: 0, count: 1 << 20)))
            var kinds: [Frame.Kind] = []
            while let frame = try? await client.next() { kinds.append(frame.kind) }
            #expect(kinds.isEmpty, "closed at the header, not answered: \(kinds)")
            try await client.close()
            await server.stop()
        }
    }

    /// The handshake limit is for unauthenticated peers only: an app whose first frame
    /// after WELCOME is a large segment (it offers no log, so no SUBSCRIBE comes first)
    /// still syncs.
    @Test func aLargeFirstSegmentAfterTheHandshakeArrives() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply([.set(map: "public", key: "big", value: .string(String(repeating: "x", count: 200_000)), ttlMillis: nil)])
            let server = try await RunningNode(serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier())
            let appStore = try openStore(root + "/app", node: 2)
            let app = try await RunningNode(appStore, listen: false, peers: [server.port], push: false, bearer: try await Self.token("alice"))
            #expect(try await eventually { try appStore.state(map: "public", key: "big") != nil })
            await app.stop()
            await server.stop()
        }
    }

    /// The handshake's two frames are small until the listener opens the gate — also
    /// when HELLO claims to carry a token (the claim is not trusted before it is checked).
    @Test func theHandshakeLimitHoldsUntilTheGateOpens() throws {
        func frame(_ kind: Frame.Kind, _ body: [UInt8]) -> ByteBuffer {
            var buffer = ByteBuffer()
            buffer.writeInteger(UInt32(1 + body.count))
            buffer.writeInteger(kind.rawValue)
            buffer.writeBytes(body)
            return buffer
        }
        let hello = Hello(version: Frame.protocolVersion, node: NodeID(9), bearer: "not.a.token").frame
        let large = [UInt8](repeating: 1, count: 1 << 20)
        // Closed: the second frame is refused at its header.
        let closed = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxBytes: 32 << 20, gate: HandshakeGate())))
        try closed.writeInbound(frame(.hello, hello.body))
        #expect(throws: ReplicationError.self) { try closed.writeInbound(frame(.proof, large)) }
        // Opened after authentication: the same frame passes.
        let gate = HandshakeGate()
        let opened = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxBytes: 32 << 20, gate: gate)))
        try opened.writeInbound(frame(.hello, hello.body))
        gate.openGate()
        try opened.writeInbound(frame(.subscribe, large))
        #expect(try opened.readInbound(as: Frame.self)?.kind == .hello)
        #expect(try opened.readInbound(as: Frame.self)?.body.count == large.count)
    }

    /// An HTTP connection that never completes a request is closed (slow requests
    /// cannot hold the listener's connections).
    @Test func aSilentHTTPConnectionIsClosed() async throws {
        try await withTemporaryDirectory { root in
            let port = reservePorts(1)[0]
            let server = try await RunningNode(try openStore(root + "/server", node: 1), listen: false, http: port)
            let client = try await FrameClient(port: port)
            while (try? await client.next()) != nil {}
            try await client.close()
            #expect(try httpGet("http://127.0.0.1:\(port)/healthz").contains("ok"))
            await server.stop()
        }
    }

    /// ES256 and RS256 tokens verify with PEM public keys (made with openssl); a token
    /// signed by another key of the same kind does not.
    @Test func es256AndRS256TokensVerifyWithPEMPublicKeys() async throws {
        try await withTemporaryDirectory { root in
            func openssl(_ args: [String]) throws {
                let (status, _) = try runTool("/usr/bin/openssl", args)
                #expect(status == 0, "openssl \(args)")
            }
            try openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", root + "/ec.pem"])
            try openssl(["ec", "-in", root + "/ec.pem", "-pubout", "-out", root + "/ec.pub"])
            try openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", root + "/ec2.pem"])
            try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", root + "/rsa.pem"])
            try openssl(["rsa", "-in", root + "/rsa.pem", "-pubout", "-out", root + "/rsa.pub"])
            let read = { (name: String) throws -> String in try String(contentsOfFile: root + "/" + name, encoding: .utf8) }
            let verifier = try await TokenVerifier(hmacSecret: nil, publicKeysPEM: [try read("ec.pub"), try read("rsa.pub")], issuer: "idp", audience: "topgun")
            let claims = Claims(
                sub: SubjectClaim(value: "alice"), exp: .init(value: Date().addingTimeInterval(600)), iss: .init(value: "idp"), aud: .init(value: ["topgun"]),
                roles: ["editor"])
            let es = try await JWTKeyCollection().add(ecdsa: try ES256PrivateKey(pem: try read("ec.pem"))).sign(claims)
            let rs = try await JWTKeyCollection().add(rsa: try Insecure.RSA.PrivateKey(pem: try read("rsa.pem")), digestAlgorithm: .sha256).sign(claims)
            let other = try await JWTKeyCollection().add(ecdsa: try ES256PrivateKey(pem: try read("ec2.pem"))).sign(claims)
            #expect(try await verifier.principal(for: es) == Principal(subject: "alice", roles: ["editor"], expiresAtMillis: try await verifier.principal(for: es).expiresAtMillis))
            #expect(try await verifier.principal(for: rs).subject == "alice")
            await #expect { try await verifier.principal(for: other) } throws: { "\($0)".contains("bad signature") }
            var wrongIssuer = claims
            wrongIssuer.iss = .init(value: "elsewhere")
            let misissued = try await JWTKeyCollection().add(ecdsa: try ES256PrivateKey(pem: try read("ec.pem"))).sign(wrongIssuer)
            await #expect { try await verifier.principal(for: misissued) } throws: { "\($0)".contains("wrong issuer") }
        }
    }

    /// A session ends when its token expires; a policy reload closes open sessions, and
    /// the reconnected app sees what the new policy grants (records its cursor passed).
    @Test func sessionsEndWithTheirTokenAndAReloadAppliesToOpenSessions() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply([.set(map: "notes", key: "bob:1", value: "b1", ttlMillis: nil)])
            let server = try await RunningNode(serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier())
            // Expires in two seconds.
            let short = try Database(path: root + "/short", options: .init(durability: .noSync, nodeID: NodeID(2)))
            let shortSync = try short.sync(with: "tcp://127.0.0.1:\(server.port)", jwt: try await Self.token("carl", expiresIn: 2))
            try await shortSync.waitUntilIdle()
            #expect(try await eventually { server.node.sessionsByPrincipal["user:carl"] == nil })
            await shortSync.stop()
            short.close()

            let alice = try Database(path: root + "/alice", options: .init(durability: .noSync, nodeID: NodeID(3)))
            let aliceSync = try alice.sync(with: "tcp://127.0.0.1:\(server.port)", jwt: try await Self.token("alice"))
            try await aliceSync.waitUntilIdle()
            #expect(try alice.store.state(map: "notes", key: "bob:1") == nil)
            let widened = Self.policyJSON.replacingOccurrences(
                of: #"{"who": "user:admin""#, with: #"{"who": "*", "maps": "notes", "allow": ["read"]}, {"who": "user:admin""#)
            server.node.reload(policy: try Policy(json: Array(widened.utf8)))
            #expect(try await eventually { try Self.value(alice.store, "notes", "bob:1") == "b1" })
            await aliceSync.stop()
            alice.close()
            await server.stop()
        }
    }

    /// A user's devices are capped (each holds GC back); a user's own id is not taken
    /// for a replica's because a replica sent its writes back.
    @Test func devicesPerUserAreCappedAndOwnIdsStayUsable() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            let server = try await RunningNode(
                serverStore, policy: try Policy(json: Array(Self.policyJSON.utf8)), verifier: try await Self.verifier(), maxDevices: 2)
            func sync(_ node: UInt64) async throws {
                let store = try openStore(root + "/d\(node)", node: node)
                _ = try await ReplicaNode(store: store, configuration: .init(listen: nil, token: [], bearerToken: try await Self.token("alice")))
                    .syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
                #expect(try await eventually { !server.node.connectedPeers.contains(NodeID(node)) })
            }
            try await sync(50)
            try await sync(51)
            await #expect { try await sync(52) } throws: { "\($0)".contains("already has 2 devices") }
            // Alice's own writes came back through a replica: her id is still hers.
            _ = server.node.replicaOrigins.withLock { $0.insert(NodeID(50)) }
            try await sync(50)
            await server.stop()
        }
    }

    @Test func aReasonIsCutToAKilobyteOfValidUTF8() throws {
        let name = "a" + String(repeating: "\u{301}", count: 30_000)  // one Character of 60 KB, as a key can arrive
        let op = ReplicatedOperation.lww(map: "m", key: name, value: "v", timestamp: HLCTimestamp(millis: 1, counter: 0, node: NodeID(2)))
        let rejection = WriteRejection(reason: "not permitted: user:x may not write m/\(name)", operation: op, current: nil)
        let decoded = try WriteRejection(rejection.frame(origin: NodeID(1)))
        #expect(decoded.reason.utf8.count <= 1_024 && decoded.reason.hasPrefix("not permitted"))
        #expect(decoded.operation == op)
    }

    @Test func aHugeExpiryIsClampedNotFatal() async throws {
        let keys = await JWTKeyCollection().add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha256)
        let token = try await keys.sign(Claims(sub: SubjectClaim(value: "alice"), exp: .init(value: Date(timeIntervalSince1970: 1e17))))
        let principal = try await Self.verifier().principal(for: token)
        #expect(principal.expiresAtMillis == 10_000_000_000_000)
    }

    @Test func aShortHMACSecretIsRefusedNotFatal() async throws {
        await #expect { try await TokenVerifier(hmacSecret: "short", publicKeysPEM: []) } throws: { "\($0)".contains("at least 32") }
    }

    @Test func policyRulesMatchAsDocumented() throws {
        let policy = try Policy(json: Array(Self.policyJSON.utf8))
        let alice = Principal(subject: "alice", roles: [])
        let banned = Principal(subject: "eve", roles: ["banned"])
        let admin = Principal(subject: "admin", roles: [])
        let replica = Principal.replica(NodeID(3))
        #expect(policy.permits(alice, .read, map: "public", key: "x"))
        #expect(!policy.permits(alice, .write, map: "public", key: "x"))
        #expect(policy.permits(alice, .write, map: "notes", key: "alice:1"))
        #expect(!policy.permits(alice, .read, map: "notes", key: "bob:1"))
        #expect(!policy.permits(alice, .read, map: "notes", key: "alice"), "the glob needs the colon")
        #expect(!policy.permits(banned, .read, map: "public", key: "x"), "deny wins")
        #expect(!policy.permits(banned, .write, map: "notes", key: "eve:1"))
        #expect(policy.permits(admin, .write, map: "secret", key: "s"))
        #expect(policy.permits(replica, .write, map: "anything", key: "k"))
        #expect(!policy.permits(alice, .read, map: "secret", key: "s"), "deny by default")
        // A subject is taken literally in a key glob.
        let star = Principal(subject: "*", roles: [])
        #expect(!policy.permits(star, .read, map: "notes", key: "alice:1"))
        #expect(policy.permits(star, .read, map: "notes", key: "*:1"))
        // Exact, not canonically equivalent: the Kelvin sign is not "K", a decomposed "é"
        // not the precomposed one.
        let kelvin = Principal(subject: "\u{212A}ate", roles: [])
        #expect(!policy.permits(kelvin, .read, map: "notes", key: "Kate:1"))
        #expect(policy.permits(kelvin, .read, map: "notes", key: "\u{212A}ate:1"))
        #expect(!policy.permits(Principal(subject: "e\u{301}", roles: []), .write, map: "notes", key: "\u{E9}:1"))
        let kateOnly = try Policy(json: Array(#"{"rules": [{"who": "user:Kate", "maps": "*", "allow": ["read"]}]}"#.utf8))
        #expect(kateOnly.permits(Principal(subject: "Kate", roles: []), .read, map: "m", key: "k"))
        #expect(!kateOnly.permits(kelvin, .read, map: "m", key: "k"))
        // JWT roles never make a replica.
        #expect(!Principal(subject: "node:1", roles: []).isReplica)
        for bad in [#"{"rules": [{"who": "everyone", "maps": "*", "allow": ["read"]}]}"#, #"{"rules": [{"who": "*", "maps": "*", "allow": ["delete"]}]}"#, "[]"] {
            #expect(throws: ReplicationError.self) { try Policy(json: Array(bad.utf8)) }
        }
        #expect(Access(principal: alice, policy: policy).readCoverage(of: "notes") == .some)
        #expect(Access(principal: alice, policy: policy).readCoverage(of: "public") == .all)
        #expect(Access(principal: banned, policy: policy).readCoverage(of: "public") == .none)
    }
}
