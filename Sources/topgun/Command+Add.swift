import ArgumentParser
import TopGunCore
import TopGunStore

struct Add: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add a JSON value to an OR-Map key (add wins over concurrent removes).",
        discussion: #"Example: topgun add --data ./topgun-data tags post-1 '"swift"'"#)

    @OptionGroup var options: DataOption
    @Argument(help: "Map name.") var map: String
    @Argument(help: "Key.") var key: String
    @Argument(help: "Value as JSON.") var json: String

    func run() async throws {
        let value = try Value(json: json)
        let store = try Store(path: options.data)
        let outcome = try store.apply([Mutation.add(map: map, key: key, value: value, ttlMillis: nil)])[0]
        if case .rejected(let why) = outcome { throw CLIError("\(why)") }
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove every observed entry equal to a JSON value from an OR-Map key.",
        discussion: #"Example: topgun remove --data ./topgun-data tags post-1 '"swift"'"#)

    @OptionGroup var options: DataOption
    @Argument(help: "Map name.") var map: String
    @Argument(help: "Key.") var key: String
    @Argument(help: "Value as JSON.") var json: String

    func run() async throws {
        let value = try Value(json: json)
        let store = try Store(path: options.data)
        _ = try store.apply([Mutation.remove(map: map, key: key, value: value)])
    }
}
