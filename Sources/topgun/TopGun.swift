import ArgumentParser
import Foundation
import TopGunCore
import TopGunStore

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
            Sync.self, Watch.self, Export.self, Import.self, Index.self, Inspect.self, Check.self, Backup.self, Restore.self, ResetID.self,
            ForgetPeer.self, Repair.self,
            StressWriter.self,
        ]
    )
}

extension TopGun {
    /// Refuses arguments that are not valid UTF-8 before parsing: Swift would repair
    /// them to U+FFFD, and two different keys would become one.
    static func main() async {
        for i in 1..<max(1, Int(CommandLine.argc)) {
            guard let raw = CommandLine.unsafeArgv[i], String(validatingCString: raw) != nil else {
                FileHandle.standardError.write(Data("Error: argument \(i) is not valid UTF-8\n".utf8))
                Foundation.exit(1)
            }
        }
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
            // Output that did not reach its destination (a full disk, a closed pipe) is
            // a failure, not a success with a truncated answer.
            if fflush(nil) != 0 {
                throw CLIError("cannot write standard output: \(String(cString: strerror(errno)))")
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// `--data DIR`, shared by the data commands.
struct DataOption: ParsableArguments {
    @Option(name: .long, help: "Database directory.")
    var data: String = "./topgun-data"

    /// Opens an existing database read-only: a mistyped path is an error, not a new
    /// empty database, and a read-only directory can be read.
    func openForReading() throws -> Store {
        try Store(path: data, options: .init(readOnly: true, verification: .full))
    }

    /// Opens (or creates) the database for writing; an existing file is verified page
    /// by page first, so a damaged one is an error, never a crash.
    func open() throws -> Store {
        try Store(path: data, options: .init(verification: .full))
    }
}

/// A command failure: printed as one `Error: …` line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `MAP KEY`, shared by the commands that address one entry.
struct EntryArguments: ParsableArguments {
    @Argument(help: "Map name.") var map: String
    @Argument(help: "Key.") var key: String
}

/// `MAP KEY JSON`, shared by the commands that write one value.
struct EntryValueArguments: ParsableArguments {
    @OptionGroup var entry: EntryArguments
    @Argument(help: "Value as JSON.") var json: String

    /// Parses the JSON, opens the store at `data` and applies the mutation `make` builds.
    ///
    /// - Throws: `CLIError` when the value is refused.
    func apply(in data: String, _ make: (_ map: String, _ key: String, _ value: Value) -> Mutation) throws {
        let value = try Value(json: json)
        let store = try Store(path: data, options: .init(verification: .full))
        let outcome = try store.apply([make(entry.map, entry.key, value)])[0]
        if case .rejected(let why) = outcome { throw CLIError("\(why)") }
    }
}

/// `--token-file F`: the shared secret of a replica mesh, surrounding whitespace trimmed.
struct TokenOption: ParsableArguments {
    @Option(help: "File holding the shared secret peers must present.") var tokenFile: String

    func secret() throws -> [UInt8] {
        guard let token = FileManager.default.contents(atPath: tokenFile), !token.isEmpty else {
            throw CLIError("token file \(tokenFile) is missing or empty")
        }
        // The file's bytes as they are, surrounding ASCII whitespace trimmed: decoding
        // them as text replaced every invalid byte with U+FFFD, so 11 bytes of 0xFF
        // passed for 33 and matched any other 11 invalid bytes.
        let bytes = [UInt8](token)
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else {
            throw CLIError("token file \(tokenFile) holds only whitespace")
        }
        return Array(bytes[first...last])
    }

    /// The file's text when it holds a JWT (three base64url parts whose first decodes
    /// to a JSON header naming an `alg`): this node then syncs as that user.
    func jwt() throws -> String? {
        let text = String(decoding: try secret(), as: UTF8.self)
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" } })
        else { return nil }
        var header = parts[0].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while header.count % 4 != 0 { header += "=" }
        guard let data = Data(base64Encoded: header), let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            json["alg"] != nil
        else { return nil }
        return text
    }
}
