import ArgumentParser
import TopGunCore
import TopGunStore

struct Add: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add a JSON value to an OR-Map key (add wins over concurrent removes).",
        discussion: #"Example: topgun add --data ./topgun-data tags post-1 '"swift"'"#)

    @OptionGroup var options: DataOption
    @OptionGroup var arguments: EntryValueArguments

    func run() async throws {
        try arguments.apply(in: options.data) { map, key, value in .add(map: map, key: key, value: value, ttlMillis: nil) }
    }
}
