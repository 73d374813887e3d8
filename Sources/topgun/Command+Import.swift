import ArgumentParser
import Foundation
import TopGunCore
import TopGunReplication
import TopGunStore

struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply a segment file through the merge path (all segments are verified first).",
        discussion: "Example: topgun import --data ./replica log.tgs")

    @OptionGroup var options: DataOption
    @Argument(help: "Segment file.") var file: String

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw CLIError("cannot read \(file)") }
        let bytes = [UInt8](data)
        var segments: [Segment] = []
        var offset = 0
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { throw CLIError("truncated segment file at byte \(offset)") }
            let length = Int(bytes[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            offset += 4
            guard offset + length <= bytes.count else { throw CLIError("truncated segment at byte \(offset)") }
            do {
                segments.append(try Segment(decoding: Array(bytes[offset..<offset + length])))
            } catch {
                throw CLIError("segment \(segments.count + 1) at byte \(offset) rejected (\(error)); nothing was imported")
            }
            offset += length
        }
        let store = try options.open()
        let operations = segments.flatMap { $0.entries.map(\.operation) }
        // One transaction for the whole file: a failure (a full disk) leaves nothing of
        // it behind, as the message says.
        let outcomes: [ApplyOutcome]
        do {
            outcomes = try store.apply(operations)
        } catch {
            throw CLIError("\(error); nothing of \(file) was imported")
        }
        let applied = outcomes.filter(\.isApplied).count
        let refused = outcomes.filter { if case .rejected = $0 { true } else { false } }
        var summary = "imported \(operations.count) ops, \(applied) changed state"
        if !refused.isEmpty { summary += ", \(refused.count) refused (first: \(refused[0]))" }
        FileHandle.standardError.write(Data((summary + "\n").utf8))
    }
}
