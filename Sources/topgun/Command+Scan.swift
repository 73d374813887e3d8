import ArgumentParser
import Foundation
import TopGunCore
import TopGunQuery
import TopGunStore

struct Scan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the live records of a map (optionally one partition).",
        discussion: "Example: topgun scan --data ./topgun-data users --partition 91")

    @OptionGroup var options: DataOption
    @Argument(help: "Map name.") var map: String
    @Option(help: "Only this partition (0-270).") var partition: UInt16?
    @Option(help: "table or json.") var format: OutputFormat = .table

    func run() async throws {
        let store = try options.openForReading()
        guard store.maps[map] != nil else { throw CLIError("unknown map \(map)") }
        var query = Query(store: store, map: map)
        if let partition { query = query.partitions([partition]) }
        printRows(try query.run().rows.map { ($0.key, $0.value) }, format: format)
    }
}
