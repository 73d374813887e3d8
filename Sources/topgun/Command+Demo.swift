import ArgumentParser
import Foundation
import Logging
import TopGunCore
import TopGunQuery
import TopGunReplication
import TopGunStore

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Three replicas write conflicting data offline, connect over loopback TCP, and converge.",
        discussion: "Example: topgun demo")

    func run() async throws {
        let root = NSTemporaryDirectory() + "topgun-demo-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let names = ["A", "B", "C"]
        let dbs = try names.enumerated().map { i, name in
            try Database(path: "\(root)/\(name)", options: .init(durability: .noSync, nodeID: NodeID(UInt64(0xA + i))))
        }
        say("TopGun \(TopGun.version) demo: three replicas in \(root)\n")

        say("1. Offline: each replica writes, with conflicts")
        try await dbs[0].map("users", of: [String: String].self).set("u1", ["name": "Ann", "city": "Oslo"])
        try await dbs[1].map("users", of: [String: String].self).set("u1", ["name": "Ann", "city": "Bergen"])
        try await dbs[2].map("users", of: [String: String].self).set("u2", ["name": "Bo", "city": "Lima"])
        for (i, db) in dbs.enumerated() {
            try await db.counter("likes").increment("post-1", by: Int64(i + 1))
            try await db.orMap("tags").add("post-1", .string(["swift", "crdt", "lmdb"][i]))
            for k in 0..<200 { try await db.map("users", of: [String: String].self).set("bulk-\(i)-\(k)", ["n": "\(k)"]) }
        }
        try await dbs[0].orMap("tags").remove("post-1", "swift")
        try show(dbs, names)

        say("\n2. Connect: each replica serves its op log and pulls from the other two over TCP")
        let token = Array(UUID().uuidString.utf8)
        var logger = Logger(label: "topgun.demo")
        logger.logLevel = .warning
        let servers = try dbs.enumerated().map { i, db in
            try ReplicaNode(
                store: db.store,
                configuration: .init(
                    listen: .init(host: "127.0.0.1", port: 0), token: token, antiEntropyInterval: nil,
                    http: i == 0 ? .init(host: "127.0.0.1", port: 0) : nil),
                logger: logger)
        }
        var tasks = servers.map { node in Task { try await node.run() } }
        var ports: [Int] = []
        for s in servers { ports.append(try await s.listening()) }
        say("   listening on ports \(ports.map(String.init).joined(separator: ", "))")
        for (i, db) in dbs.enumerated() {
            let peers = servers.enumerated().filter { $0.offset != i }.map { ReplicaNode.PeerAddress(host: "127.0.0.1", port: $0.element.listeningPort!) }
            // A mesh where every node dials every other pulls both ways already.
            let puller = try ReplicaNode(
                store: db.store, configuration: .init(listen: nil, peers: peers, token: token, antiEntropyInterval: nil, push: false), logger: logger)
            tasks.append(Task { try await puller.run() })
        }
        let start = ContinuousClock.now
        var converged = false
        while ContinuousClock.now - start < .seconds(20) {
            let roots = try dbs.map { db in try ["users", "likes", "tags"].flatMap { map in try (0..<UInt16(Partitioner.partitionCount)).map { try db.store.merkleRoot(map: map, partition: $0) } } }
            if roots.allSatisfy({ $0 == roots[0] }), try dbs[0].store.count(map: "users") == 602 {
                converged = true
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        say("   converged in \(ContinuousClock.now - start): \(converged ? "all 3 × 271 partition Merkle roots equal" : "NOT converged")")

        say("\n3. After replication")
        try show(dbs, names)
        if case .lww(let winner)? = try dbs[0].store.state(map: "users", key: "u1") {
            say("   users.u1: the write stamped \(winner.timestamp) (node \(winner.timestamp.node)) won the conflict on every replica")
        }

        say("\n4. A pruned query on replica C")
        let q = dbs[2].query("users").where(Field("id").isIn(["u1", "u2", "nobody"]))
        for row in try q.run().rows { say("   \(row.key) \(row.value.json)") }
        say("   explain: \(try q.explain())")
        say("   explain (no key predicate): \(try dbs[2].query("users").where("city" == "Lima").explain())")

        say("\n5. An app with no listen address writes offline, then syncs both ways over one WebSocket to replica A")
        let app = try Database(path: "\(root)/app", options: .init(durability: .noSync))
        try await app.map("notes", of: String.self).set("from-app", "written offline")
        try await app.counter("likes").increment("post-1", by: 10)
        let httpPort = try await servers[0].listeningHTTP()
        let sync = try app.sync(with: "ws://127.0.0.1:\(httpPort)/sync", token: token, logger: logger)
        let syncStart = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await sync.waitUntilIdle() }
            group.addTask {
                try await Task.sleep(for: .seconds(20))
                throw CLIError("the app did not catch up within 20 s")
            }
            try await group.next()
            group.cancelAll()
        }
        say("   app status \(sync.status) after \(ContinuousClock.now - syncStart); changes not yet on the server: \(try sync.pendingChanges())")
        var reached = false
        for _ in 0..<1_000 where !reached {
            reached = try dbs[2].map("notes", of: String.self).get("from-app") != nil && dbs[2].counter("likes").value("post-1") == app.counter("likes").value("post-1")
            if !reached { try await Task.sleep(for: .milliseconds(20)) }
        }
        say("   replica C (through A): notes.from-app = \(try dbs[2].map("notes", of: String.self).get("from-app") ?? "-"), likes = \(try dbs[2].counter("likes").value("post-1"))")
        say("   the app: users \(try app.store.count(map: "users")), likes = \(try app.counter("likes").value("post-1")), tags=\(try app.orMap("tags").values("post-1").map(\.json).joined(separator: ","))")
        await sync.stop()
        app.close()
        converged = converged && reached

        say("\n6. Merge throughput on replica A (200,000 LWW ops, 20,000 keys, 1,000 per transaction, no fsync)")
        var rng = SystemRandomNumberGenerator()
        let encoded: [UInt8] = [0xd9, 98] + [UInt8](repeating: 0x61, count: 98)
        let progress = Progress("   merging", total: 200_000)
        let t0 = ContinuousClock.now
        var applied = 0
        for b in 0..<200 {
            let ops = (0..<1_000).map { i in
                ReplicatedOperation(
                    map: "bench", key: "key-\(Int.random(in: 0..<20_000, using: &rng))",
                    timestamp: HLCTimestamp(millis: 1_700_000_000_000 + UInt64(b * 1_000 + i) + UInt64.random(in: 0..<160_000, using: &rng), counter: 0, node: NodeID(UInt64.random(in: 1...8, using: &rng))),
                    payload: .lww(encodedValue: encoded, ttlMillis: nil))
            }
            applied += try dbs[0].store.apply(ops).filter(\.isApplied).count
            progress.update((b + 1) * 1_000)
        }
        progress.finish()
        let elapsed = ContinuousClock.now - t0
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        say("   \(Int(200_000 / seconds)) ops/s, \(applied) changed state (the rest lost to newer writes)")

        for t in tasks { t.cancel() }
        for t in tasks { _ = await t.result }
        for db in dbs { db.close() }
        guard converged else { throw ExitCode(1) }
        say("\nReplicas converged.")
    }

    func show(_ dbs: [Database], _ names: [String]) throws {
        for (name, db) in zip(names, dbs) {
            let u1 = try db.map("users", of: [String: String].self).get("u1").map { "\($0["city"] ?? "")" } ?? "-"
            say(
                "   \(name): users \(try db.store.count(map: "users")) (u1.city=\(u1)), likes=\(try db.counter("likes").value("post-1")), tags=\(try db.orMap("tags").values("post-1").map(\.json).joined(separator: ","))"
            )
        }
    }
}

/// Prints a report line and flushes it, so it keeps its place among the progress and
/// log lines on stderr when both go to one file or pipe.
private func say(_ line: String) {
    print(line)
    fflush(nil)
}
