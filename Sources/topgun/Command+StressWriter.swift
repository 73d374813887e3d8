import ArgumentParser
import Foundation
import TopGunCore
import TopGunStore

/// Writes numbered batches forever, printing `ack N` after each commit; crash tests
/// kill it with SIGKILL and check that every acknowledged batch is whole.
struct StressWriter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stress-writer", abstract: "Write numbered batches until killed (crash testing).",
        shouldDisplay: false)

    @OptionGroup var options: DataOption
    @Option(help: "First batch number.") var start: Int = 0
    @Option(help: "Keys per batch.") var keys: Int = 20
    @Flag(help: "fsync every commit.") var durable = false

    func run() async throws {
        let store = try Store(path: options.data, options: .init(durability: durable ? .durable : .noSync))
        // An index on the remote map, so a crash also tests index/record agreement.
        if !store.indexes(of: "stress-remote").contains(where: \.isReady) {
            if try store.state(map: "stress-remote", key: "seed") == nil {
                _ = try store.apply([Mutation.set(map: "stress-remote", key: "seed", value: ["batch": -1], ttlMillis: nil)])
            }
            try store.createIndex(map: "stress-remote", path: "batch", kind: .range)
        }
        let peer = NodeID(0x77)
        var batch = start
        while true {
            // A segment from a simulated peer, applied with its cursor in one transaction.
            let base = HLCTimestamp(millis: 1_000_000 + UInt64(batch) * 100, counter: 0, node: peer)
            var entries: [LoggedOperation] = []
            var stamp = base
            for i in 0..<keys {
                entries.append(LoggedOperation(sequence: stamp, operation: .lww(map: "stress-remote", key: "r\(batch)-\(i)", value: ["batch": .int(Int64(batch))], timestamp: stamp)))
                stamp = stamp.successor
            }
            _ = try store.apply(entries, fromPeer: peer, cursor: entries.last!.sequence)
            var mutations: [Mutation] = (0..<keys).map {
                .set(map: "stress", key: "b\(batch)-\($0)", value: .int(Int64(batch)), ttlMillis: nil)
            }
            mutations.append(.increment(map: "stress-count", key: "batches", by: 1))
            mutations.append(.add(map: "stress-set", key: "batches", value: .int(Int64(batch)), ttlMillis: nil))
            _ = try store.apply(mutations)
            FileHandle.standardOutput.write(Data("ack \(batch)\n".utf8))
            batch += 1
        }
    }
}
