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
    @Flag(help: "Leave out the entries of damaged records (named on stderr) instead of failing.") var skipDamaged = false

    func run() async throws {
        let store = try options.openForReading()
        var cursor = try after.map { text in
            guard let t = HLCTimestamp(text) else { throw CLIError("bad --after \(text)") }
            return t
        }
        var ops = 0
        var segments = 0
        var damaged: [String] = []
        // A whole export fails naming every record whose log entry was lost (damage the
        // log read cannot see: the entry passes for superseded), rather than lack it.
        if after == nil {
            let unlogged = try store.recordsMissingFromLog().map(\.name)
            if !unlogged.isEmpty && !skipDamaged {
                throw CLIError(
                    "records without their op-log entry (a damaged log): \(unlogged.prefix(10).joined(separator: ", "))\(unlogged.count > 10 ? " and \(unlogged.count - 10) more" : ""); `topgun check --heal` logs them again; nothing was written to \(file)")
            }
            damaged += unlogged
        }
        try AtomicFile.write(file) { out in
            while true {
                // A damaged record fails the export (the file is not written) unless
                // --skip-damaged: never an export that silently lacks records.
                let entries =
                    try skipDamaged
                    ? store.operations(after: cursor, limit: segmentSize) { damaged.append($0) }
                    : store.operations(after: cursor, limit: segmentSize)
                guard let last = entries.last else { break }
                let bytes = Segment(origin: store.nodeID, entries: entries).encoded()
                var frame: [UInt8] = []
                frame.appendBigEndian(UInt32(bytes.count))
                try out.write(contentsOf: Data(frame + bytes))
                ops += entries.count
                segments += 1
                cursor = last.sequence
            }
        }
        var named = Set<String>()
        damaged = damaged.filter { named.insert($0).inserted }
        for name in damaged { FileHandle.standardError.write(Data("skipped damaged record \(name)\n".utf8)) }
        FileHandle.standardError.write(
            Data("exported \(ops) ops in \(segments) segments from node \(store.nodeID)\(damaged.isEmpty ? "" : ", \(damaged.count) damaged records skipped")\n".utf8))
    }
}
