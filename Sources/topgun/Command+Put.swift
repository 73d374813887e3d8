import ArgumentParser
import TopGunCore
import TopGunStore

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set a key of an LWW map to a JSON value.",
        discussion: "Example: topgun put --data ./topgun-data users u1 '{\"name\":\"Ann\"}'")

    @OptionGroup var options: DataOption
    @OptionGroup var arguments: EntryValueArguments

    func run() async throws {
        try arguments.apply(in: options.data) { map, key, value in .set(map: map, key: key, value: value, ttlMillis: nil) }
    }
}
