import Foundation
import Testing
import TopGunCore
import TopGunTestSupport

@testable import TopGunReplication
@testable import TopGunStore

/// Damage heals from a replica, and clock faults neither wedge nor lose writes.
@Suite(.timeLimit(.minutes(2)))
struct DamageHealTests {
    /// A node meets a damaged record (a read fails its digest): it removes it, asks
    /// the peer it pulls from for digests at once, and the peer's repair brings the
    /// record back — counted as quarantined and restored.
    @Test func aDamagedRecordComesBackFromThePeerThatHoldsIt() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let b = try openStore(root + "/b", node: 2)
            _ = try a.apply((0..<50).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let server = try await RunningNode(a)
            let puller = try await RunningNode(b, listen: false, peers: [server.port])
            #expect(try await eventually { try records(b, "m").count == 50 })
            try Damage.breakRecord(b, "m", "k7")
            #expect(throws: StoreError.self) { try b.state(map: "m", key: "k7") }
            #expect(try await eventually { (try? b.state(map: "m", key: "k7")) != nil })
            #expect(try b.state(map: "m", key: "k7") == a.state(map: "m", key: "k7"))
            #expect(try await eventually { puller.node.statistics.recordsRestored == 1 })
            #expect(puller.node.statistics.recordsQuarantined == 1)
            #expect(try b.quarantinedRecords() == [])
            #expect(try b.check().problems == [])
            await puller.stop()
            await server.stop()
        }
    }

    /// A damaged op-log key put an entry in the future: the replica's cursor jumped
    /// there and it never received another write, and every local write failed. The
    /// damaged node heals at open, the replica's cursor is rewound to its head, and
    /// later writes arrive.
    @Test func aReplicaWhoseCursorJumpedPastTheLogIsRewound() async throws {
        try await withTemporaryDirectory { root in
            let b = try openStore(root + "/b", node: 2)
            do {
                let a = try openStore(root + "/a", node: 1)
                for i in 0..<10 { _ = try a.apply([Mutation.set(map: "m", key: "k\(i)", value: .int(Int64(i)), ttlMillis: nil)]) }
                try Damage.flipKey(a, .oplog, key: try Damage.entries(a, .oplog)[4].0, at: 0)
                let server = try await RunningNode(a, port: 0)
                let puller = try await RunningNode(b, listen: false, peers: [server.port])
                #expect(try await eventually { try records(b, "m").count == 10 })
                let cursor = try #require(try b.peerCursor(a.nodeID))
                #expect(cursor.millis > UInt64(Date().timeIntervalSince1970 * 1000) + 86_400_000, "the cursor is in the future: \(cursor)")
                await puller.stop()
                await server.stop()
            }
            let a = try openStore(root + "/a", node: 1)
            #expect(a.healedAtOpen.logEntriesRemoved.count == 1)
            _ = try a.apply([Mutation.set(map: "m", key: "late", value: 1, ttlMillis: nil)])
            let server = try await RunningNode(a)
            let puller = try await RunningNode(b, listen: false, peers: [server.port])
            #expect(try await eventually { try b.state(map: "m", key: "late") != nil })
            #expect(try #require(try b.peerCursor(a.nodeID)) <= (try a.logHead()))
            await puller.stop()
            await server.stop()
        }
    }

    /// `syncOnce` over a log that skipped a damaged record said "both sides hold each
    /// other's writes"; it fails naming the record when the server cannot restore it.
    @Test func aSyncOverADamagedRecordTheServerLacksFails() async throws {
        try await withTemporaryDirectory { root in
            let serverStore = try openStore(root + "/server", node: 1)
            let server = try await RunningNode(serverStore)
            let app = try openStore(root + "/app", node: 2)
            _ = try app.apply((0..<5).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            try Damage.breakRecord(app, "m", "k3")
            let node = try ReplicaNode(store: app, configuration: .init(listen: nil, token: Array(testSecret.utf8)))
            let error = await #expect(throws: ReplicationError.self) {
                try await node.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            }
            #expect(error?.code == .damagedData && error?.message.contains("m/k3") == true, "\(String(describing: error))")
            #expect(try records(serverStore, "m").count == 4)
            await server.stop()
        }
    }

    /// A user's app whose clock is 30 days behind refused every server write as
    /// "ahead of its clock" and its `sync --once` never finished; one 30 days ahead had
    /// its writes refused for a month. Both now sync both ways: the app's HLC follows
    /// the server's stamps, and the server takes an ahead app's writes under its own
    /// stamps, telling the app (NOTICE), which returns to them.
    @Test(arguments: [-30 * 86_400_000, 30 * 86_400_000] as [Int64])
    func anAppWithAWrongClockSyncsBothWays(_ skew: Int64) async throws {
        try await withTemporaryDirectory { root in
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let serverStore = try openStore(root + "/server", node: 1)
            _ = try serverStore.apply([Mutation.set(map: "notes", key: "alice:server", value: "s", ttlMillis: nil)])
            let server = try await RunningNode(
                serverStore, policy: try Policy(json: Array(PermissionTests.policyJSON.utf8)), verifier: try await PermissionTests.verifier())
            let app = try Store(
                path: root + "/app", options: .init(durability: .noSync, wallClock: ManualWallClock(UInt64(Int64(now) + skew)), nodeID: NodeID(50)))
            _ = try app.apply([Mutation.set(map: "notes", key: "alice:offline", value: "o", ttlMillis: nil)])
            let node = try ReplicaNode(store: app, configuration: .init(listen: nil, token: [], bearerToken: try await PermissionTests.token("alice")))
            let report = try await node.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            #expect(try app.state(map: "notes", key: "alice:server") == serverStore.state(map: "notes", key: "alice:server"))
            guard case .lww(let taken)? = try serverStore.state(map: "notes", key: "alice:offline") else {
                Issue.record("the app's write did not reach the server")
                return
            }
            #expect(taken.value == "o")
            #expect(taken.timestamp.millis < now + 60_000, "never stamped beyond the server's drift bound: \(taken.timestamp)")
            if skew > 0 {
                #expect(report.notice?.code == .clockDrift, "\(report)")
                #expect(server.node.statistics.writesRestamped == 1)
                // The app returned to the server's stamp.
                #expect(try app.state(map: "notes", key: "alice:offline") == serverStore.state(map: "notes", key: "alice:offline"))
            }
            // Later writes of the behind app are stamped after what it received.
            _ = try app.apply([Mutation.set(map: "notes", key: "alice:after", value: "a", ttlMillis: nil)])
            if skew < 0, case .lww(let after)? = try app.state(map: "notes", key: "alice:after"), case .lww(let seen)? = try app.state(map: "notes", key: "alice:server") {
                #expect(after.timestamp > seen.timestamp)
            }
            _ = try await node.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            #expect(try serverStore.state(map: "notes", key: "alice:after") != nil)
            await server.stop()
        }
    }
}
