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
        let total = segments.reduce(0) { $0 + $1.entries.count }
        let progress = Progress("import", total: total)
        var done = 0
        var applied = 0
        for segment in segments {
            applied += try store.apply(segment.entries.map(\.operation)).filter(\.isApplied).count
            done += segment.entries.count
            progress.update(done)
        }
        progress.finish()
        FileHandle.standardError.write(Data("imported \(total) ops, \(applied) changed state\n".utf8))
    }
}
