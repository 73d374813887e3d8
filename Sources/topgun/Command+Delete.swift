import ArgumentParser
import TopGunStore

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete a key of an LWW map (writes a tombstone that replicates).",
        discussion: "Example: topgun delete --data ./topgun-data users u1")

    @OptionGroup var options: DataOption
    @OptionGroup var entry: EntryArguments

    func run() async throws {
        let store = try Store(path: options.data)
        _ = try store.apply([Mutation.set(map: entry.map, key: entry.key, value: nil, ttlMillis: nil)])
    }
}
