import ArgumentParser
import TopGunCore
import TopGunStore

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the JSON value of a key; exit 1 when absent.",
        discussion: "Example: topgun get --data ./topgun-data users u1")

    @OptionGroup var options: DataOption
    @OptionGroup var entry: EntryArguments

    func run() async throws {
        let store = try options.openForReading()
        switch try store.state(map: entry.map, key: entry.key) {
        case .lww(let record)?:
            guard let value = record.visibleValue(at: SystemWallClock().milliseconds()) else { throw ExitCode(1) }
            print(value.json)
        case .counter(let counter)?:
            print(counter.value)
        case .orMap(let set)?:
            print(Value.array(set.values(at: SystemWallClock().milliseconds())).json)
        case nil:
            throw ExitCode(1)
        }
    }
}
