import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// Regression tests for replication that lost writes or stalled: a session that
/// stalls while the log is collected, OR-Map repairs through a chain, subscriptions
/// that widen, and node identities.
@Suite(.timeLimit(.minutes(1)))
struct ReplicationSafetyTests {
    /// A subscriber's connection stays open but stops acknowledging while the server
    /// writes and then collects its log: when it resumes, the stream must not start after
    /// the truncated range; it asks for digests and repairs.
    @Test func aStalledSessionThatResumesAfterCollectionIsRepairedNotSkipped() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let server = try await RunningNode(a, idleTimeout: .seconds(60))
            let client = try await FrameClient(port: server.port)
            let subscriber = NodeID(77)
            #expect(try await client.hello(node: subscriber)?.kind == .admitted)
            try await client.send(Subscription().frame)
            // One segment per write, none acknowledged: after four the stream waits.
            var segments: [Segment] = []
            for i in 0..<4 {
                _ = try a.apply([Mutation.set(map: "m", key: "k\(i)", value: .int(Int64(i)), ttlMillis: nil)])
                let frame = try #require(try await client.next())
                #expect(frame.kind == .segment)
                segments.append(try Segment(decoding: frame.body))
            }
            _ = try a.apply([Mutation.set(map: "m", key: "k4", value: 4, ttlMillis: nil)])
            _ = try a.apply([Mutation.set(map: "m", key: "k5", value: 5, ttlMillis: nil)])
            // The operator declares the subscriber gone; everything is collected.
            #expect(try a.forgetPeer(subscriber))
            #expect(try a.collectGarbage(olderThan: .init(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0))).logEntriesRemoved == 6)
            // It was only stalled: it acknowledges and the stream goes on.
            for segment in segments { try await client.send(Acknowledgement(cursor: segment.lastSequence, head: nil).frame) }
            let next = try #require(try await client.next())
            #expect(next.kind == .needDigests, "got frame \(next.kind.rawValue) instead of a repair request")
            try await client.send(Digests(maps: [:]).frame)
            var repaired: Set<String> = []
            while let frame = try await client.next(), frame.kind == .repair {
                for entry in try Segment(decoding: frame.body).entries { repaired.insert(entry.operation.key) }
            }
            #expect(repaired.isSuperset(of: ["k4", "k5"]))
            try await client.close()
            await server.stop()
        }
    }

    /// In a chain S ⇄ X ⇄ Z, an OR-Map record repaired from Z into X is logged on X with
    /// the stamp of its newest entry, which S made; S must still receive it from X.
    @Test func anORMapRepairIsForwardedToTheNodeThatStampedItsNewestEntry() async throws {
        try await withTemporaryDirectory { root in
            let s = try openStore(root + "/s", node: 1)
            let x = try openStore(root + "/x", node: 2)
            let z = try openStore(root + "/z", node: 3)
            let now = s.now
            let fromS = HLCTimestamp(millis: now, counter: 0, node: s.nodeID)
            let fromZ = HLCTimestamp(millis: now - 1_000, counter: 0, node: z.nodeID)
            func add(_ value: Value, _ tag: HLCTimestamp) -> ReplicatedOperation {
                var delta = ORSet()
                _ = delta.add(value, tag: tag)
                return ReplicatedOperation(map: "tags", key: "post", timestamp: tag, payload: .orSet(delta))
            }
            _ = try z.apply([add("from-z", fromZ), add("from-s", fromS)])
            _ = try z.collectGarbage(olderThan: .init(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0)))
            _ = try x.apply([add("from-s", fromS)])
            _ = try s.apply([add("from-s", fromS)])
            let nodeZ = try await RunningNode(z)
            let nodeX = try await RunningNode(x, peers: [nodeZ.port])
            let nodeS = try await RunningNode(s, listen: false, peers: [nodeX.port])
            func values(_ store: Store) throws -> Set<String> {
                guard case .orMap(let set)? = try store.state(map: "tags", key: "post") else { return [] }
                return Set(set.values(at: now).compactMap { if case .string(let v) = $0 { v } else { nil } })
            }
            #expect(try await eventually { try values(x) == ["from-s", "from-z"] }, "X is repaired from Z")
            #expect(try await eventually { try values(s) == ["from-s", "from-z"] }, "S receives the repaired record from X")
            for n in [nodeS, nodeX, nodeZ] { await n.stop() }
        }
    }

    /// A node that replicated only some maps, restarted with a wider subscription,
    /// receives what it skipped, including maps it has never seen.
    @Test func aWidenedSubscriptionBackfills() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let b = try openStore(root + "/b", node: 2)
            // m2 first: the m1-only cursor then lies past every m2 entry.
            _ = try a.apply((0..<20).map { Mutation.set(map: "m2", key: "k\($0)", value: 2, ttlMillis: nil) })
            _ = try a.apply((0..<20).map { Mutation.set(map: "m1", key: "k\($0)", value: 1, ttlMillis: nil) })
            let server = try await RunningNode(a)
            var puller = try await RunningNode(b, listen: false, peers: [server.port], subscription: Subscription(maps: ["m1"]))
            #expect(try await eventually { try b.count(map: "m1") == 20 && b.peerCursor(a.nodeID) != nil })
            #expect(b.maps["m2"] == nil)
            await puller.stop()
            puller = try await RunningNode(b, listen: false, peers: [server.port])
            #expect(try await eventually { try b.count(map: "m2") == 20 }, "the maps skipped before are backfilled")
            #expect(try b.peer(a.nodeID)?.scope == .all)
            await puller.stop()
            await server.stop()
        }
    }

    /// A reconnect after a silent cut: the old session has heard nothing (no heartbeat)
    /// for two heartbeat intervals, so the new connection with the same id replaces it
    /// instead of being refused as a duplicate until the idle timeout.
    @Test func aSilentSessionIsReplacedByItsNodesNewConnection() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            _ = try a.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            // Heartbeats every second, idle timeout 4 s: silent after 2 s.
            let server = try await RunningNode(a, idleTimeout: .seconds(4))
            let lost = try await FrameClient(port: server.port)
            #expect(try await lost.hello(node: NodeID(6))?.kind == .admitted)
            // The connection goes quiet, as one cut without FIN does (the scenario's time).
            try await Task.sleep(for: .milliseconds(2_500))
            let b = try openStore(root + "/b", node: 6)
            let node = try ReplicaNode(store: b, configuration: .init(listen: nil, token: Array(testSecret.utf8)))
            _ = try await node.syncOnce(with: .init(host: "127.0.0.1", port: server.port), timeout: .seconds(10))
            #expect(try b.state(map: "m", key: "k") != nil)
            #expect(server.node.statistics.duplicateIDsRefused == 0)
            try await lost.close()
            await server.stop()
        }
    }

    /// A peer presenting the server's own id, and a second live session with one id,
    /// are refused on both sides with a clear error.
    @Test func duplicateNodeIDsAreRefused() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let server = try await RunningNode(a)
            let impostor = try await FrameClient(port: server.port)
            let refused = try #require(try await impostor.hello(node: a.nodeID))
            #expect(refused.kind == .error, "refused once authenticated: the node's own id")
            #expect(String(decoding: refused.body, as: UTF8.self).contains("own id"))
            try await impostor.close()

            let first = try await FrameClient(port: server.port)
            #expect(try await first.hello(node: NodeID(5))?.kind == .admitted)
            let second = try await FrameClient(port: server.port)
            // A second live session with one id is refused once the proof checked out,
            // before ADMITTED.
            let answer = try #require(try await second.hello(node: NodeID(5)))
            guard case .error(let error) = try Message(answer) else {
                Issue.record("expected ERROR, got \(answer.kind)")
                return
            }
            #expect(error.code == .duplicateNodeID, "the code crosses the wire as a code: \(error)")
            #expect(server.node.statistics.duplicateIDsRefused == 2)
            try await first.close()
            try await second.close()

            // The pulling side: a server with this node's own id (a copied directory).
            try FileManager.default.copyItem(atPath: root + "/a", toPath: root + "/copy")
            _ = try a.apply([Mutation.increment(map: "c", key: "k", by: 1)])
            let copy = try openStore(root + "/copy", node: 99)
            #expect(copy.nodeID == a.nodeID, "a copy keeps the id it was copied with")
            let node = try ReplicaNode(store: copy, configuration: .init(listen: nil, token: Array(testSecret.utf8)))
            await #expect(throws: ReplicationError.self) {
                try await node.session(with: .init(host: "127.0.0.1", port: server.port)) {}
            }
            await server.stop()
        }
    }

    /// After `Store.resetNodeID`, a copy exchanges writes with its original; counters
    /// that were in conflict (one slot for two nodes) add up from then on.
    @Test func aCopyWithAFreshIDReplicates() async throws {
        try await withTemporaryDirectory { root in
            do {
                let a = try openStore(root + "/a", node: 1)
                _ = try a.apply([Mutation.increment(map: "c", key: "k", by: 1)])
            }
            try FileManager.default.copyItem(atPath: root + "/a", toPath: root + "/b")
            let (old, new) = try Store.resetNodeID(path: root + "/b")
            #expect(old == NodeID(1) && new != old)
            let a = try openStore(root + "/a", node: 1)
            let b = try openStore(root + "/b", node: 1)
            #expect(b.nodeID == new)
            _ = try a.apply([Mutation.increment(map: "c", key: "k", by: 10)])
            _ = try b.apply([Mutation.increment(map: "c", key: "k", by: 100)])
            let nodeA = try await RunningNode(a)
            let nodeB = try await RunningNode(b, peers: [nodeA.port])
            let pullA = try await RunningNode(a, listen: false, peers: [nodeB.port])
            func total(_ s: Store) throws -> Int64? { if case .counter(let c)? = try s.state(map: "c", key: "k") { c.value } else { nil } }
            #expect(try await eventually { try total(a) == 111 && total(b) == 111 })
            for n in [pullA, nodeB, nodeA] { await n.stop() }
        }
    }
}
