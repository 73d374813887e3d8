import ArgumentParser
import TopGunStore

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete a key: a tombstone in an LWW map, every observed entry in an OR-Map.",
        discussion: """
            PN-counter keys cannot be deleted (decrement them instead).
            Example: topgun delete --data ./topgun-data users u1
            """)

    @OptionGroup var options: DataOption
    @OptionGroup var entry: EntryArguments

    func run() async throws {
        let store = try options.open()
        let mutation: Mutation
        switch store.maps[entry.map] {
        case .orMap?: mutation = .removeAll(map: entry.map, key: entry.key)
        case .counter?: throw CLIError("\(entry.map) is a pn-counter map: its keys cannot be deleted; decrement instead")
        case .lww?, nil: mutation = .set(map: entry.map, key: entry.key, value: nil, ttlMillis: nil)
        }
        if case .rejected(let why) = try store.apply([mutation])[0] { throw CLIError("\(why)") }
    }
}
