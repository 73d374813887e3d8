import ArgumentParser
import TopGunStore

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify a database: records, op log, Merkle digests, indexes, HLC high-water.",
        discussion: "Example: topgun check --data ./topgun-data   (exit 1 and a report on any disagreement)")

    @OptionGroup var options: DataOption

    func run() async throws {
        let store = try options.openForReading()
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
