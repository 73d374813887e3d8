import ArgumentParser

/// The `topgun` command.
@main
struct TopGun: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "topgun",
        abstract: "An embedded CRDT database on LMDB: converging maps, counters and sets.",
        discussion: """
            Examples:
              topgun demo
              topgun put --data ./topgun-data users u1 '{"name":"Ann","age":31}'
              topgun get --data ./topgun-data users u1
            """,
        version: version,
        subcommands: [
            Demo.self, Serve.self, Put.self, Get.self, Delete.self, Incr.self, Add.self, Remove.self, QueryCommand.self, Scan.self,
            Watch.self, Export.self, Import.self, Index.self, Inspect.self, Check.self, StressWriter.self,
        ]
    )
}

/// `--data DIR`, shared by the data commands.
struct DataOption: ParsableArguments {
    @Option(name: .long, help: "Database directory.")
    var data: String = "./topgun-data"
}

/// A command failure: printed as one `Error: …` line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
