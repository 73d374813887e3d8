import ArgumentParser
import Foundation
import TopGunCore
import TopGunStore

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Two replicas write conflicting data offline, exchange op logs, and converge.",
        discussion: "Example: topgun demo")

    func run() async throws {
        let root = NSTemporaryDirectory() + "topgun-demo-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let a = try Database(path: root + "-a", options: .init(durability: .noSync, nodeID: NodeID(0xA)))
        let b = try Database(path: root + "-b", options: .init(durability: .noSync, nodeID: NodeID(0xB)))
        defer {
            try? FileManager.default.removeItem(atPath: root + "-a")
            try? FileManager.default.removeItem(atPath: root + "-b")
        }
        print("TopGun \(TopGun.version) demo: replicas A (node \(a.store.nodeID)) and B (node \(b.store.nodeID))\n")

        print("1. Offline writes on each replica")
        let usersA = a.map("users", of: [String: String].self)
        let usersB = b.map("users", of: [String: String].self)
        try await usersA.set("u1", ["name": "Ann", "city": "Oslo"])
        try await usersB.set("u1", ["name": "Ann", "city": "Bergen"])
        try await usersA.set("u2", ["name": "Bo"])
        try await a.counter("likes").increment("post-1", by: 3)
        try await b.counter("likes").increment("post-1", by: 2)
        try await a.orMap("tags").add("post-1", "swift")
        try await b.orMap("tags").add("post-1", "crdt")
        try await a.orMap("tags").remove("post-1", "swift")
        for (name, db) in [("A", a), ("B", b)] {
            print("   \(name): users.u1=\(try db.map("users", of: [String: String].self).get("u1") ?? [:])"
                + " likes=\(try db.counter("likes").value("post-1")) tags=\(try db.orMap("tags").values("post-1").map(\.json))")
        }

        print("\n2. Exchange op logs (both directions) through the merge path")
        let fromA = try a.store.operations(after: nil).map(\.operation)
        let fromB = try b.store.operations(after: nil).map(\.operation)
        let appliedOnB = try b.store.apply(fromA).filter(\.isApplied).count
        let appliedOnA = try a.store.apply(fromB).filter(\.isApplied).count
        print("   A -> B: \(fromA.count) ops, \(appliedOnB) changed state; B -> A: \(fromB.count) ops, \(appliedOnA) changed state")

        print("\n3. After exchange")
        var converged = true
        for (name, db) in [("A", a), ("B", b)] {
            let u1 = try db.map("users", of: [String: String].self).get("u1") ?? [:]
            print("   \(name): users.u1=\(u1) likes=\(try db.counter("likes").value("post-1")) tags=\(try db.orMap("tags").values("post-1").map(\.json))")
        }
        if case .lww(let winner)? = try a.store.state(map: "users", key: "u1") {
            print("   u1 conflict won by HLC \(winner.timestamp)")
        }
        for map in ["users", "likes", "tags"] {
            for p in UInt16(0)..<UInt16(Partitioner.partitionCount) where try a.store.merkleRoot(map: map, partition: p) != b.store.merkleRoot(map: map, partition: p) {
                converged = false
            }
        }
        print("   Merkle roots of all 271 partitions equal: \(converged)")

        print("\n4. Merge throughput (100,000 LWW ops, 10,000 keys, 1,000 per batch, no fsync)")
        var rng = SystemRandomNumberGenerator()
        let payload = [UInt8](repeating: 0x61, count: 97)
        let encoded = [0xd9, 97] + payload  // a 97-byte string: 100 bytes encoded
        let start = ContinuousClock.now
        var applied = 0
        for _ in 0..<100 {
            let ops = (0..<1_000).map { _ in
                ReplicatedOperation(
                    map: "bench", key: "key-\(Int.random(in: 0..<10_000, using: &rng))",
                    timestamp: HLCTimestamp(millis: 1_700_000_000_000 + UInt64.random(in: 0..<1_000_000, using: &rng), counter: 0, node: NodeID(UInt64.random(in: 1...8, using: &rng))),
                    payload: .lww(encodedValue: encoded, ttlMillis: nil))
            }
            applied += try a.store.apply(ops).filter(\.isApplied).count
        }
        let seconds = Double((ContinuousClock.now - start).components.attoseconds) / 1e18 + Double((ContinuousClock.now - start).components.seconds)
        print("   \(Int(100_000 / seconds)) ops/s (\(applied) changed state)")
        a.close()
        b.close()
        guard converged else { throw ExitCode(1) }
        print("\nReplicas converged.")
    }
}
