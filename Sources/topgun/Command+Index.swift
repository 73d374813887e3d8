import ArgumentParser
import Foundation
import TopGunCore
import TopGunReplication
import TopGunStore

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
        let store = try options.open()
        let progress = Progress("index \(map).\(path)", total: try store.count(map: map))
        try store.createIndex(map: map, path: path, kind: k) { progress.update($0.recordsIndexed) }
        progress.finish()
    }
}
