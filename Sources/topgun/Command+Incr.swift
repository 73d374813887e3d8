import ArgumentParser
import TopGunStore

struct Incr: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add to a PN-Counter (negative to decrement) and print its value.",
        discussion: "Example: topgun incr --data ./topgun-data likes post-1 --by 3   (decrement: --by=-1)")

    @OptionGroup var options: DataOption
    @OptionGroup var entry: EntryArguments
    @Option(help: "Amount to add.") var by: Int64 = 1

    func run() async throws {
        let store = try options.open()
        let outcome = try store.apply([Mutation.increment(map: entry.map, key: entry.key, by: by)])[0]
        if case .rejected(let why) = outcome { throw CLIError("\(why)") }
        guard case .counter(let c)? = try store.state(map: entry.map, key: entry.key) else { throw ExitCode(1) }
        print(c.value)
    }
}
