import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// Real `topgun serve` processes behind a proxy that cuts or freezes their link.
@Suite(.timeLimit(.minutes(4)))
struct LinkFaultProcessTests {
    static func cli(_ binary: String, _ args: [String]) throws {
        let result = try runTopGun(args)
        #expect(result.status == 0, "topgun \(args.joined(separator: " ")): \(result.err)")
    }

    /// A shared-secret file in `root`, for `--token-file`.
    static func tokenFile(in root: String) throws -> String {
        let path = root + "/token"
        try "\(testSecret)\n".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Reads a data directory next to the server that has it open.
    static func state(_ dir: String, _ map: String, _ key: String) throws -> StoredState? {
        try Store(path: dir, options: .init(readOnly: true)).state(map: map, key: key)
    }

    /// A link frozen without FIN or RST is dropped by the idle timeout and dialled
    /// again, so the write made while it was frozen arrives.
    @Test func aFrozenLinkIsDroppedAndDialledAgain() async throws {
        let binary = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = try Self.tokenFile(in: root)
            let ports = reservePorts(2)
            let options = ["--anti-entropy", "0", "--idle-timeout", "1"]
            let a = try ServeProcess(data: root + "/a", listen: ports[0], peers: [], token: token, extra: options)
            let proxy = try await LinkProxy(to: ports[0])
            let b = try ServeProcess(data: root + "/b", listen: ports[1], peers: [proxy.port], token: token, extra: options)
            defer {
                a.stop()
                b.stop()
            }
            try Self.cli(binary, ["put", "--data", root + "/a", "users", "before", "1"])
            #expect(try await eventually(within: .seconds(60)) { try Self.state(root + "/b", "users", "before") != nil })
            proxy.freeze()
            try Self.cli(binary, ["put", "--data", root + "/a", "users", "while-frozen", "2"])
            #expect(try await eventually(within: .seconds(60)) { try Self.state(root + "/b", "users", "while-frozen") != nil }, "re-dialled past the frozen link")
            #expect(proxy.connectionCount >= 2)
            try await proxy.shutdown()
        }
    }

    /// B pulls from A through a link that is cut; A writes during the cut; B runs
    /// retention GC several times before the link heals. The write must still arrive.
    @Test func aWriteMadeDuringACutSurvivesGarbageCollectionOnTheOtherSide() async throws {
        let binary = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = try Self.tokenFile(in: root)
            let ports = reservePorts(2)
            let options = ["--anti-entropy", "0", "--idle-timeout", "1", "--retention", "1"]
            let bDir = root + "/b"
            let proxy = try await LinkProxy(to: ports[0])
            let b = try ServeProcess(data: bDir, listen: ports[1], peers: [proxy.port], token: token, extra: options)
            let a = try ServeProcess(data: root + "/a", listen: ports[0], peers: [ports[1]], token: token, extra: options)
            defer {
                a.stop()
                b.stop()
            }
            // Tombstones on B that A acknowledges, so B's GC has something to collect.
            try Self.cli(binary, ["put", "--data", bDir, "users", "gone", "1"])
            try Self.cli(binary, ["delete", "--data", bDir, "users", "gone"])
            #expect(try await eventually(within: .seconds(60)) { if case .lww(let r)? = try Self.state(root + "/a", "users", "gone") { r.value == nil } else { false } })
            #expect(try await eventually(within: .seconds(60)) { try Self.state(bDir, "users", "gone") == nil }, "B collected the acknowledged tombstone")
            proxy.sever()
            try Self.cli(binary, ["put", "--data", root + "/a", "users", "during-cut", "2"])
            let written = SystemWallClock().milliseconds()
            // B collects twice more after the write is older than the retention.
            var runs = 0
            var last: UInt64 = 0
            #expect(
                try await eventually(within: .seconds(60)) {
                    if let run = try Store(path: bDir).lastGarbageCollection(), run > written + 1_500, run != last {
                        runs += 1
                        last = run
                    }
                    return runs >= 2
                })
            proxy.restore()
            #expect(try await eventually(within: .seconds(60)) { try Self.state(bDir, "users", "during-cut") != nil }, "the write made during the cut arrived")
            #expect(try Store(path: bDir).peers().allSatisfy { $0.refusedBeyondHorizon == 0 })
            try await proxy.shutdown()
        }
    }
}

extension LinkFaultProcessTests {
    /// A replica whose file is damaged is rebuilt from a healthy peer; the damaged
    /// directory is kept aside; the new replica holds everything and passes check.
    @Test func aDamagedReplicaIsRebuiltFromAPeer() throws {
        let binary = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try withTemporaryDirectory { root in
            let token = try Self.tokenFile(in: root)
            for i in 0..<50 { try Self.cli(binary, ["put", "--data", root + "/a", "users", "u\(i)", "\(i)"]) }
            try Self.cli(binary, ["backup", "--data", root + "/a", root + "/b"])
            // B's file is damaged: one page of garbage in the middle.
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: root + "/b/data.mdb")))
            for i in 3 * 4096..<4 * 4096 { bytes[i] = UInt8(truncatingIfNeeded: i &* 31) }
            try Data(bytes).write(to: URL(fileURLWithPath: root + "/b/data.mdb"))
            let port = reservePorts(1)[0]
            let a = try ServeProcess(data: root + "/a", listen: port, peers: [], token: token, extra: ["--anti-entropy", "0"])
            defer { a.stop() }
            let repaired = try runTopGun(["repair", "--data", root + "/b", "--from", "127.0.0.1:\(port)", "--token-file", token])
            #expect(repaired.status == 0 && repaired.out.contains("50 records received"), "\(repaired.out) \(repaired.err)")
            let rebuilt = try Store(path: root + "/b", options: .init(readOnly: true, verification: .full))
            #expect(try rebuilt.count(map: "users") == 50)
            #expect(try rebuilt.check().isConsistent)
            let aside = try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("b.damaged-") }
            #expect(aside.count == 1, "the damaged directory is kept")
        }
    }
}

extension LinkFaultProcessTests {
    static func lastCollection(_ dir: String) throws -> UInt64 {
        try Store(path: dir).lastGarbageCollection() ?? 0
    }

    /// The live LWW values of map `users`, as JSON.
    static func users(_ dir: String) throws -> [String: String] {
        var out: [String: String] = [:]
        try Store(path: dir).scan(map: "users") { k, s in
            if case .lww(let r) = s, let v = r.value { out[k] = v.json }
            return true
        }
        return out
    }

    /// Three `topgun serve` nodes in a chain A ⇄ B ⇄ C, every pulling link through its
    /// own proxy, retention GC every second. Writers on both ends while a seeded fault
    /// loop cuts links, freezes them (no FIN, no RST), and lets GC run meanwhile. After
    /// the faults stop, all three hold the same records and every acknowledged write.
    @Test func aChainConvergesThroughCutsAndFreezesWithGarbageCollection() async throws {
        let binary = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = try Self.tokenFile(in: root)
            let ports = reservePorts(3)
            let dirs = ["a", "b", "c"].map { root + "/" + $0 }
            // proxies[i][j]: node j pulls from node i through it.
            let toA = try await LinkProxy(to: ports[0])
            let toB1 = try await LinkProxy(to: ports[1])
            let toB2 = try await LinkProxy(to: ports[1])
            let toC = try await LinkProxy(to: ports[2])
            let proxies = [toA, toB1, toB2, toC]
            let options = ["--anti-entropy", "0", "--idle-timeout", "1", "--retention", "1"]
            let nodes = [
                try ServeProcess(data: dirs[0], listen: ports[0], peers: [toB1.port], token: token, extra: options),
                try ServeProcess(data: dirs[1], listen: ports[1], peers: [toA.port, toC.port], token: token, extra: options),
                try ServeProcess(data: dirs[2], listen: ports[2], peers: [toB2.port], token: token, extra: options),
            ]
            defer { for n in nodes { n.stop() } }
            var rng = SplitMix64(seed: 0xFA_017)
            var live: [String: String] = [:]
            var deleted: Set<String> = []
            for round in 0..<8 {
                // A fault on a random link: cut (closed, refused) or frozen (silent).
                let proxy = proxies[Int.random(in: 0..<proxies.count, using: &rng)]
                let freeze = Bool.random(using: &rng)
                if freeze { proxy.freeze() } else { proxy.sever() }
                for i in 0..<3 {
                    let end = [0, 2][Int.random(in: 0...1, using: &rng)]
                    let key = "r\(round)-\(i)-n\(end)"
                    try Self.cli(binary, ["put", "--data", dirs[end], "users", key, "\(round * 10 + i)"])
                    live[key] = "\(round * 10 + i)"
                }
                if let victim = live.keys.sorted().first, round % 3 == 2 {
                    try Self.cli(binary, ["delete", "--data", dirs[2], "users", victim])
                    live[victim] = nil
                    deleted.insert(victim)
                }
                // Garbage collection runs on every node while the fault lasts.
                let before = try dirs.map(Self.lastCollection)
                #expect(
                    try await eventually(within: .seconds(60)) {
                        let now = try dirs.map(Self.lastCollection)
                        return (0..<3).allSatisfy { now[$0] > before[$0] }
                    })
                if !freeze { proxy.restore() }
            }
            for proxy in proxies { proxy.restore() }
            var last: [[String: String]] = []
            let expected = live
            let converged = try await eventually(within: .seconds(60)) {
                last = try dirs.map(Self.users)
                return last.allSatisfy { $0 == expected }
            }
            #expect(converged, "expected \(live.count) records; nodes hold \(last.map(\.count)), missing on B: \(Set(live.keys).subtracting(last[1].keys).sorted().prefix(5))")
            for dir in dirs { #expect(try Store(path: dir).peers().allSatisfy { $0.refusedBeyondHorizon == 0 }) }
            #expect(!deleted.isEmpty)
            for proxy in proxies { try await proxy.shutdown() }
        }
    }
}
