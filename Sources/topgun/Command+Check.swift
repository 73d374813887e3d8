import ArgumentParser
import Foundation
import TopGunStore

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify a database: records, op log, Merkle digests, indexes, HLC high-water.",
        discussion: """
            Example: topgun check --data ./topgun-data   (exit 1 and a report on any disagreement)
            With --heal, what is damaged is removed or rebuilt first (Store.heal): damaged
            records are removed (a peer's repair brings them back: topgun repair), log
            entries that do not parse are removed and their records logged again, Merkle
            digests and indexes are recomputed from the records. Stop the node first.
            """)

    @OptionGroup var options: DataOption
    @Flag(help: "Remove or rebuild what is damaged, then check (needs write access; stop the node first).") var heal = false

    func run() async throws {
        // The file first, from its bytes: liblmdb never sees a damaged one.
        guard FileManager.default.fileExists(atPath: options.data + "/data.mdb") else {
            throw StoreError(.notFound, "no database at \(options.data)")
        }
        let file = Store.verifyFile(path: options.data)
        print("file: \(file.pagesVisited) of \(file.pages) pages verified in \(String(format: "%.3f", file.seconds)) s")
        guard file.isIntact else {
            for problem in file.problems { print("problem: \(problem)") }
            throw ExitCode(1)
        }
        let store = heal ? try options.open() : try options.openForReading()
        if heal {
            let healed = try store.heal(everything: true)
            print("healed: \(healed)")
        }
        let report = try store.check()
        print("checked \(report.recordsChecked) records, \(report.logEntriesChecked) op-log entries, \(report.indexEntriesChecked) index entries")
        if report.isConsistent {
            print("ok")
            return
        }
        for problem in report.problems { print("problem: \(problem)") }
        throw ExitCode(1)
    }
}
