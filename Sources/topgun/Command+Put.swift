import ArgumentParser
import TopGunCore
import TopGunStore

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set a key of an LWW map to a JSON value.",
        discussion: "Example: topgun put --data ./topgun-data users u1 '{\"name\":\"Ann\"}'")

    @OptionGroup var options: DataOption
    @Argument(help: "Map name.") var map: String
    @Argument(help: "Key.") var key: String
    @Argument(help: "Value as JSON.") var json: String

    func run() async throws {
        let value = try Value(json: json)
        let store = try Store(path: options.data)
        let outcome = try store.apply([Mutation.set(map: map, key: key, value: value, ttlMillis: nil)])[0]
        guard outcome.isApplied else { throw CLIError("not applied: \(outcome)") }
    }
}
