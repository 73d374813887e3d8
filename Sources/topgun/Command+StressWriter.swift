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
        var batch = start
        while true {
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
