import ArgumentParser
import TopGunStore

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a hot, consistent, compacted copy of a database and verify it.",
        discussion: """
            Runs next to writers and `topgun serve`; the copy holds every commit made before
            it began, and passes a full check before this command succeeds. Restore it with
            `topgun restore`, which gives the copy a fresh node id.
            Example: topgun backup --data ./a /backups/a-2026-11-26
            """)

    @OptionGroup var options: DataOption
    @Argument(help: "Directory for the copy (created; must not hold a database).") var destination: String

    func run() async throws {
        let report = try options.openForReading().backup(to: destination)
        print("backup of node \(report.nodeID): \(report.bytes) bytes, \(report.check.recordsChecked) records verified, in \(destination)")
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup into a new data directory, with a fresh node id.",
        discussion: """
            A restored copy is a new replica: it keeps the data and the op log, takes a new
            node id and catches up from its peers. --keep-node-id is for disaster recovery
            of the same node whose original is gone for good (two live nodes with one id
            never exchange writes).
            Example: topgun restore /backups/a-2026-11-26 --data ./a2
            """)

    @Argument(help: "The backup directory.") var source: String
    @OptionGroup var options: DataOption
    @Flag(help: "Keep the backup's node id (only if the original node is gone for good).") var keepNodeID = false

    func run() async throws {
        let report = try Store.restore(from: source, to: options.data, keepNodeID: keepNodeID)
        print("restored into \(options.data): node \(report.nodeID), \(report.check.recordsChecked) records verified")
    }
}
