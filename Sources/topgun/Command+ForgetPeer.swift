import ArgumentParser
import TopGunCore
import TopGunStore

struct ForgetPeer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget-peer",
        abstract: "Declare a peer gone for good, so garbage collection stops waiting for it.",
        discussion: """
            `topgun inspect` lists the known peers and how far each has acknowledged this
            node's log. If a forgotten peer comes back, its writes older than the GC horizon
            are refused (counted in inspect and metrics) until `topgun repair`.
            Example: topgun forget-peer --data ./a 3f2a9c0e11d84b27
            """)

    @OptionGroup var options: DataOption
    @Argument(help: "The peer's node id (16 hex digits, as `topgun inspect` prints it).") var node: String

    func run() async throws {
        guard let id = NodeID(Substring(node)) else { throw CLIError("bad node id \(node): expected up to 16 hex digits") }
        let store = try options.open()
        guard try store.forgetPeer(id) else { throw CLIError("no peer \(id) in \(options.data)") }
        print("forgot peer \(id)")
    }
}
