import ArgumentParser
import Foundation
import TopGunCore
import TopGunReplication
import TopGunStore

/// Segment files: a sequence of `length u32 BE | segment`.
struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the op log (or the part after a cursor) to a segment file.",
        discussion: "Example: topgun export --data ./topgun-data log.tgs")

    @OptionGroup var options: DataOption
    @Argument(help: "Output file.") var file: String
    @Option(help: "Only entries after this op-log key (millis:counter:node).") var after: String?
    @Option(help: "Ops per segment.") var segmentSize: Int = 1_000

    func run() async throws {
        let store = try Store(path: options.data)
        var cursor = try after.map { text in
            guard let t = HLCTimestamp(text) else { throw CLIError("bad --after \(text)") }
            return t
        }
        guard FileManager.default.createFile(atPath: file, contents: nil), let out = FileHandle(forWritingAtPath: file) else {
            throw CLIError("cannot write \(file)")
        }
        defer { try? out.close() }
        var ops = 0
        var segments = 0
        while true {
            let entries = try store.operations(after: cursor, limit: segmentSize)
            guard let last = entries.last else { break }
            let bytes = Segment(origin: store.nodeID, entries: entries).encoded()
            var frame: [UInt8] = []
            withUnsafeBytes(of: UInt32(bytes.count).bigEndian) { frame.append(contentsOf: $0) }
            out.write(Data(frame + bytes))
            ops += entries.count
            segments += 1
            cursor = last.sequence
        }
        FileHandle.standardError.write(Data("exported \(ops) ops in \(segments) segments from node \(store.nodeID)\n".utf8))
    }
}

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
        let store = try Store(path: options.data)
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

struct Index: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a secondary index on a field path of an LWW map.",
        discussion: "Example: topgun index --data ./topgun-data users age --kind range")

    @OptionGroup var options: DataOption
    @Argument(help: "Map name.") var map: String
    @Argument(help: "Field path, e.g. address.city.") var path: String
    @Option(help: "hash (equality) or range (equality, ranges, prefixes).") var kind: String = "range"

    func run() async throws {
        guard let k: IndexDefinition.Kind = kind == "hash" ? .hash : kind == "range" ? .range : nil else {
            throw CLIError("--kind must be hash or range")
        }
        let store = try Store(path: options.data)
        let progress = Progress("index \(map).\(path)", total: try store.count(map: map))
        try store.createIndex(map: map, path: path, kind: k) { progress.update($0.recordsIndexed) }
        progress.finish()
    }
}
