import ArgumentParser
import TopGunCore
import TopGunStore

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove every observed entry equal to a JSON value from an OR-Map key.",
        discussion: #"Example: topgun remove --data ./topgun-data tags post-1 '"swift"'"#)

    @OptionGroup var options: DataOption
    @OptionGroup var arguments: EntryValueArguments

    func run() async throws {
        try arguments.apply(in: options.data) { map, key, value in .remove(map: map, key: key, value: value) }
    }
}
