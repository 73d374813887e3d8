import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// Kills a real writer process with SIGKILL at random moments and checks, after each
/// reopen, that every acknowledged batch is whole and no batch is partial, and that
/// records, op log and Merkle digests agree.
struct CrashSafetyTests {
    static let keysPerBatch = 20

    @Test func killNineDuringBatchedWritesLeavesOnlyWholeBatches() throws {
        let kills = Int(ProcessInfo.processInfo.environment["TOPGUN_CRASH_KILLS"] ?? "") ?? 50
        let binary = try #require(topgunBinary, "build the topgun executable first (swift build)")
        let seed = UInt64(ProcessInfo.processInfo.environment["TOPGUN_CRASH_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        try withTemporaryDirectory { dir in
            var acknowledged = -1
            var next = 0
            for round in 0..<kills {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = [
                    "stress-writer", "--data", dir, "--start", "\(next)", "--keys", "\(Self.keysPerBatch)",
                ] + (round % 5 == 0 ? ["--durable"] : [])
                let pipe = Pipe()
                process.standardOutput = pipe
                try process.run()
                // Let it run for a random number of acknowledgements, then kill it
                // mid-stream after a random extra delay.
                let wanted = Int.random(in: 1...40, using: &rng)
                var seen = 0
                var buffer = Data()
                let reader = pipe.fileHandleForReading
                while seen < wanted {
                    let chunk = reader.availableData
                    if chunk.isEmpty { break }
                    buffer.append(chunk)
                    let lines = String(decoding: buffer, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
                    for line in lines.dropLast() where line.hasPrefix("ack ") {
                        acknowledged = max(acknowledged, Int(line.dropFirst(4))!)
                        seen += 1
                    }
                    buffer = Data(lines.last!.utf8)
                }
                usleep(UInt32.random(in: 0...3_000, using: &rng))
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                // Acks printed before the kill but not yet read count too.
                let rest = String(decoding: buffer + reader.readDataToEndOfFile(), as: UTF8.self)
                for line in rest.split(separator: "\n") where line.hasPrefix("ack ") {
                    acknowledged = max(acknowledged, Int(line.dropFirst(4)) ?? acknowledged)
                }
                next = try Self.verify(dir, acknowledged: acknowledged, seed: seed, round: round)
            }
            #expect(acknowledged > kills, "the writer made progress (seed \(seed))")
        }
    }

    /// Checks the database and returns the next batch number to write.
    static func verify(_ dir: String, acknowledged: Int, seed: UInt64, round: Int) throws -> Int {
        let store = try Store(path: dir)
        var batches: [Int: Int] = [:]
        try store.scan(map: "stress") { key, state in
            guard case .lww(let record) = state, case .int(let b)? = record.value else {
                Issue.record("bad record \(key) (seed \(seed), round \(round))")
                return false
            }
            #expect(key.hasPrefix("b\(b)-"))
            batches[Int(b), default: 0] += 1
            return true
        }
        let present = batches.keys.sorted()
        // A kill between the segment's commit and the local batch's commit leaves one more
        // remote batch than local ones: allowed, both are whole.
        #expect(present == Array(0..<present.count), "batches are contiguous (seed \(seed), round \(round))")
        #expect(batches.values.allSatisfy { $0 == keysPerBatch }, "no partial batch (seed \(seed), round \(round))")
        #expect(present.count > acknowledged, "every acknowledged batch survived (seed \(seed), round \(round))")
        if case .counter(let c)? = try store.state(map: "stress-count", key: "batches") {
            #expect(c.value == Int64(present.count), "counter agrees (seed \(seed))")
        } else {
            #expect(present.isEmpty)
        }
        if case .orMap(let s)? = try store.state(map: "stress-set", key: "batches") {
            #expect(s.values(at: 0).count == present.count, "OR-set agrees (seed \(seed))")
        }
        // Remote segments: whole, and the stored peer cursor matches the last one applied.
        var remote: [Int: Int] = [:]
        try store.scan(map: "stress-remote") { key, state in
            guard key != "seed", case .lww(let r) = state, case .int(let b)? = r.value?[path: "batch"] else { return true }
            remote[Int(b), default: 0] += 1
            return true
        }
        #expect(remote.values.allSatisfy { $0 == keysPerBatch }, "no partial remote segment (seed \(seed), round \(round))")
        let remoteBatches = remote.keys.sorted()
        #expect(remoteBatches == Array(0..<remoteBatches.count), "remote segments contiguous (seed \(seed))")
        if let lastRemote = remoteBatches.last {
            let expectedCursor = HLCTimestamp(millis: 1_000_000 + UInt64(lastRemote) * 100 + 0, counter: UInt16(keysPerBatch - 1), node: NodeID(0x77))
            #expect(try store.peerCursor(NodeID(0x77)) == expectedCursor, "cursor stored with its segment (seed \(seed))")
        }
        #expect(remoteBatches.count >= present.count, "every acknowledged batch's segment survived")
        let log = try store.operations(after: nil)
        let seedOps = store.maps["stress-remote"] == nil ? 0 : 1
        #expect(log.count == present.count * (keysPerBatch + 2) + remoteBatches.count * keysPerBatch + seedOps, "op log agrees (seed \(seed), round \(round))")
        // The full offline check: decodability, digests, Merkle, indexes, HLC high-water.
        let report = try store.check()
        #expect(report.isConsistent, "topgun check (seed \(seed), round \(round)): \(report.problems.prefix(3))")
        return min(present.count, remoteBatches.count)
    }
}
