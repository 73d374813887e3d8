import ArgumentParser
import Foundation
import Logging
import TopGunCore
import TopGunReplication
import TopGunStore

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sync this database with a server, both ways, over one connection this side opens.",
        discussion: """
            The server is tcp://HOST:PORT (topgun serve --listen) or ws://HOST:PORT/sync,
            wss://HOST:PORT/sync (topgun serve --http, or a proxy in front of it).
            Runs until interrupted; with --once it stops when both sides hold each other's
            writes, prints what moved, and exits 0 (1, with the reason, when the server
            cannot be reached or refuses).
            Example:
              topgun sync --data ./phone --server ws://127.0.0.1:8080/sync --token-file secret --once
            """)

    @OptionGroup var options: DataOption
    @Option(help: "The server's URL: tcp://HOST:PORT, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH.") var server: String
    @OptionGroup var token: TokenOption
    @Flag(help: "Sync until caught up both ways, then exit.") var once = false
    @Flag(help: "Allow plain TCP or HTTP beyond loopback (anyone on the path can read the link and write to it).") var insecure = false
    @Option(help: "With --once: give up after this many seconds.") var timeout: Double = 60
    @Option(help: "PEM certificates trusted for a wss:// server (default: the system's).") var tlsCA: String?

    /// One line per write the server refused (already reverted here).
    static func report(_ rejection: WriteRejection) {
        print("refused by the server, reverted here: \(rejection.map)/\(rejection.key): \(rejection.reason)")
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        guard let address = ReplicaNode.PeerAddress(url: server) else {
            throw CLIError("bad --server \(server), expected tcp://HOST:PORT, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH")
        }
        let secret = try token.secret()
        let jwt = try token.jwt()
        let db = try Database(path: options.data, options: .init(durability: .durable))
        if once {
            let node = try ReplicaNode(
                store: db.store,
                configuration: .init(
                    listen: nil, token: jwt == nil ? secret : [], push: true, watchOtherProcesses: false, trustRoots: tlsCA, bearerToken: jwt,
                    allowsPlaintext: insecure))
            let refusals = node.addRejectionObserver { Self.report($0) }
            defer { node.removeRejectionObserver(refusals) }
            let report: SyncReport
            do {
                report = try await node.syncOnce(with: address, timeout: .milliseconds(Int(timeout * 1_000)))
            } catch {
                throw CLIError("sync with \(server) failed: \(error)")
            }
            print("pulled \(report.opsPulled) ops, pushed \(report.entriesPushed) log entries; both sides hold each other's writes")
            if let notice = report.notice { FileHandle.standardError.write(Data("warning: the server reports \(notice)\n".utf8)) }
            // A one-shot sync is the app's only running node: its log sheds the entries
            // later writes superseded here, as a running node's does every GC interval.
            try db.store.compactLog()
            db.close()
            return
        }
        // Writes by other processes (`topgun put` on the same files) are pushed too.
        let session =
            try jwt.map { try db.sync(with: server, jwt: $0, trustRoots: tlsCA, watchOtherProcesses: true, allowsPlaintext: insecure) }
            ?? db.sync(with: server, token: secret, trustRoots: tlsCA, watchOtherProcesses: true, allowsPlaintext: insecure)
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { tasks in
                tasks.addTask { for await rejection in session.rejections() { Self.report(rejection) } }
                tasks.addTask { for await status in session.statusUpdates() { print("\(status)") } }
                await tasks.waitForAll()
            }
        } onCancel: {
            Task { await session.stop() }
        }
    }
}
