import ArgumentParser
import Foundation
import Logging
import TopGunReplication
import TopGunStore

struct Repair: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge a healthy peer's full state into this replica by Merkle digests, overriding the GC horizon.",
        discussion: """
            For a node that refused a peer's writes as older than its GC horizon (see
            `topgun inspect`), or that was away longer than the retention: every record
            that differs is fetched from the peer and merged, writes the horizon would
            refuse included (a deleted key whose tombstone was collected here comes back if
            the peer still holds it). The peer's cursor then moves past what was repaired.
            Damaged records (`topgun check` names them) are removed first, so the peer's
            copies come back; a damaged op-log entry is removed and its record logged again.
            A damaged data directory (or one given --fresh) is moved aside to
            DIR.damaged-<time> and rebuilt from the peer as a new replica with a fresh node
            id; run `topgun forget-peer OLD-ID` on the nodes that knew the old one.
            Example: topgun repair --data ./b --from 10.0.0.1:7001 --token-file secret
            """)

    @OptionGroup var options: DataOption
    @Option(help: "The healthy peer, HOST:PORT.") var from: String
    @OptionGroup var token: TokenOption
    @Option(help: "Seconds to wait for the peer.") var timeout: Double = 30
    @Flag(help: "Rebuild from the peer into a new store even if this one opens.") var fresh = false
    @Flag(help: "Allow plain TCP or HTTP beyond loopback (anyone on the path can read the link and write to it).") var insecure = false

    func run() async throws {
        guard let address = ReplicaNode.PeerAddress(from) else { throw CLIError("bad --from \(from), expected HOST:PORT") }
        let store: Store
        do {
            guard !fresh else { throw StoreError(.corruptFile, "a fresh rebuild was asked for") }
            store = try options.open()
        } catch let error as StoreError where error.code == .corruptFile || error.code == .corruptRecord {
            // Nothing of the damaged store is trusted: it is kept aside, and the peer's
            // state is all the new replica holds.
            let aside = options.data + ".damaged-\(Int(Date().timeIntervalSince1970))"
            try FileManager.default.moveItem(atPath: options.data, toPath: aside)
            FileHandle.standardError.write(
                Data(
                    "\(error.message); moved to \(aside), rebuilding from \(from) (indexes are local to each replica: create them again with `topgun index`)\n"
                        .utf8))
            store = try options.open()
        }
        // What is damaged goes first: a damaged record's Merkle digest matched the peer's,
        // so the repair would not have sent it.
        let healed = try store.heal(everything: true)
        if !healed.isEmpty { FileHandle.standardError.write(Data("healed: \(healed)\n".utf8)) }
        let node = try ReplicaNode(
            store: store, configuration: .init(
                listen: nil, token: try token.secret(), handshakeTimeout: .milliseconds(Int(timeout * 1_000)), allowsPlaintext: insecure),
            logger: Logger(label: "topgun.repair"))
        let report = try await node.repair(from: address)
        print("repaired from \(report.peer): \(report.received) records received, \(report.applied) applied, cursor \(report.head)")
        let missing = try store.quarantinedRecords()
        if !missing.isEmpty {
            throw CLIError("\(missing.count) damaged records were removed and \(from) does not hold them: \(missing.prefix(10).joined(separator: ", "))")
        }
        if report.refused > 0 {
            throw CLIError("\(report.refused) records were refused for clock drift (this clock is behind the peer's); the cursor did not move: fix the clock and run the repair again")
        }
    }
}
