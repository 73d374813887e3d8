import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// Three `topgun serve` processes on 127.0.0.1 replicating in a full mesh; writes from
/// separate `topgun` processes to all three, a node killed with SIGKILL and restarted,
/// a link cut and restored. At the end all three hold equal records and Merkle roots.
@Suite(.timeLimit(.minutes(3)))
struct MultiProcessTests {
    /// Writes `count` keys (some shared across nodes, so they conflict) with the CLI.
    static func write(_ binary: String, data: String, prefix: String, count: Int, shared: Bool) throws {
        for i in 0..<count {
            let key = shared && i % 3 == 0 ? "shared-\(i)" : "\(prefix)-\(i)"
            let result = try runTopGun(["put", "--data", data, "users", key, #"{"from":"\#(prefix)","i":\#(i)}"#])
            #expect(result.status == 0, "\(result.err)")
        }
    }

    @Test func threeNodesConvergeThroughKillsAndPartitions() async throws {
        let binary = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = root + "/token"
            try "\(testSecret)\n".write(toFile: token, atomically: true, encoding: .utf8)
            let ports = reservePorts(3)
            let dirs = (0..<3).map { root + "/n\($0)" }
            // Node 2 reaches node 0 through a proxy the test can cut.
            let node0 = try ServeProcess(data: dirs[0], listen: ports[0], peers: [ports[1], ports[2]], token: token)
            let proxy = try await LinkProxy(to: ports[0])
            let node1 = try ServeProcess(data: dirs[1], listen: ports[1], peers: [ports[0], ports[2]], token: token)
            var node2 = try ServeProcess(data: dirs[2], listen: ports[2], peers: [proxy.port, ports[1]], token: token)
            defer {
                for n in [node0, node1, node2] { n.stop() }
            }
            #expect(node0.port == ports[0] && node1.port == ports[1] && node2.port == ports[2])

            // Concurrent writes on all three nodes, conflicting keys included.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, dir) in dirs.enumerated() {
                    group.addTask { try Self.write(binary, data: dir, prefix: "n\(i)", count: 12, shared: true) }
                }
                try await group.waitForAll()
            }
            // Kill node 2 mid-stream, keep writing elsewhere, restart it.
            node2.kill9()
            try Self.write(binary, data: dirs[0], prefix: "while-down", count: 6, shared: false)
            node2 = try ServeProcess(data: dirs[2], listen: ports[2], peers: [proxy.port, ports[1]], token: token)
            // Cut the 2 → 0 link, write on both ends, restore it.
            proxy.sever()
            try Self.write(binary, data: dirs[0], prefix: "cut-a", count: 5, shared: false)
            try Self.write(binary, data: dirs[2], prefix: "cut-b", count: 5, shared: false)
            proxy.restore()

            // Converged: read each data directory (LMDB allows readers next to the servers).
            var last: [[String: StoredState]] = []
            let converged = try await eventually(within: .seconds(40)) {
                last = try dirs.map { dir in
                    let store = try Store(path: dir, options: .init(readOnly: true))
                    var out: [String: StoredState] = [:]
                    try store.scan(map: "users") { k, s in
                        out[k] = s
                        return true
                    }
                    return out
                }
                return last[0].count == 12 * 3 - 8 + 6 + 10 && last[0] == last[1] && last[1] == last[2]
            }
            #expect(converged, "record counts \(last.map(\.count))")
            let roots = try dirs.map { dir in
                let store = try Store(path: dir)
                return try (0..<UInt16(Partitioner.partitionCount)).map { try store.merkleRoot(map: "users", partition: $0) }
            }
            #expect(roots[0] == roots[1] && roots[1] == roots[2])
            try await proxy.shutdown()
        }
    }
}

extension MultiProcessTests {
    /// An index created by `topgun index` while `topgun serve` holds the same files open
    /// is maintained by the server's writes from then on.
    @Test func indexCreatedByAnotherProcessIsMaintainedByTheServer() async throws {
        _ = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = root + "/token"
            try "\(testSecret)\n".write(toFile: token, atomically: true, encoding: .utf8)
            let ports = reservePorts(2)
            func cli(_ args: [String]) throws -> String { try runTopGun(args).out }
            _ = try cli(["put", "--data", root + "/a", "users", "old", #"{"age":40}"#])
            let b = try ServeProcess(data: root + "/b", listen: ports[1], peers: [], token: token)
            let a = try ServeProcess(data: root + "/a", listen: ports[0], peers: [ports[1]], token: token)
            defer {
                a.stop()
                b.stop()
            }
            _ = try cli(["index", "--data", root + "/a", "users", "age"])
            _ = try cli(["put", "--data", root + "/b", "users", "new", #"{"age":41}"#])
            var found = ""
            _ = try await eventually {
                found = try cli(["query", "--data", root + "/a", "users", #"{"op":"gte","path":"age","value":41}"#])
                return found.contains("new")
            }
            #expect(found.contains("new"), "the replicated write reached the index")
            let check = try cli(["check", "--data", root + "/a"])
            #expect(check.contains("ok"), "\(check)")
        }
    }
}
