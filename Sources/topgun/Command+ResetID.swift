import ArgumentParser
import TopGunStore

struct ResetID: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset-id",
        abstract: "Give a copied data directory a fresh node id (stop any node using it first).",
        discussion: """
            Two nodes with one id never exchange writes and their counters overwrite each
            other; `topgun serve` refuses a peer that presents its own id or one that
            already has a live session. Writes made under the old id stay as they are;
            new writes carry the new id.
            Example: topgun reset-id --data ./copy-of-a
            """)

    @OptionGroup var options: DataOption

    func run() async throws {
        let (old, new) = try Store.resetNodeID(path: options.data)
        print("node id \(old) -> \(new)")
    }
}
