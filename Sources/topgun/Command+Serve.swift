import ArgumentParser
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import UnixSignals
import TopGunCore
import TopGunReplication
import TopGunStore

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a replica node: serve this database's op log and pull from peers.",
        discussion: """
            Example:
              topgun serve --data ./a --listen 127.0.0.1:7001 --peer 127.0.0.1:7002 --token-file secret
            Stops cleanly on SIGINT or SIGTERM.
            """)

    @OptionGroup var options: DataOption
    @Option(help: "Address to listen on, HOST:PORT (port 0 picks a free one).") var listen: String?
    @Option(name: .customLong("peer"), help: "A peer to pull from, HOST:PORT (repeatable).") var peers: [String] = []
    @OptionGroup var token: TokenOption
    @Option(help: "Replicate only these maps (comma-separated).") var maps: String?
    @Option(help: "Replicate only these partitions (comma-separated ids).") var partitions: String?
    @Option(help: "Seconds between anti-entropy rounds (0 = only when needed).") var antiEntropy: Int = 60
    @Option(
        help: "HTTP listener on HOST:PORT: WebSocket sync on GET /sync, Prometheus metrics on /metrics, /healthz (port 0 picks one).")
    var http: String?
    @Option(help: "Another name for --http (it serves /metrics).") var metrics: String?
    @Option(
        help: ArgumentHelp(
            "Collect op-log entries and tombstones older than this many seconds once every known peer has acknowledged them (default: keep).",
            discussion: "A peer that never comes back holds collection back until `topgun forget-peer` declares it gone."))
    var retention: Int?
    @Option(help: "Seconds without any data before a connection is dropped and re-dialled (heartbeats every quarter of it).")
    var idleTimeout: Double = 5
    @Option(help: "PEM certificate for TLS between replicas (with --tls-key).") var tlsCert: String?
    @Option(help: "PEM private key for TLS.") var tlsKey: String?
    @Option(help: "PEM certificates trusted for peers (default: --tls-cert).") var tlsCA: String?
    @Option(help: "Mutual TLS: accept only peers presenting a certificate these PEM CA certificates signed.") var tlsClientCA: String?
    @Option(
        help: ArgumentHelp(
            "durable (default: fsync every commit), no-meta-sync (a machine crash may lose the newest commits), or no-sync.",
            valueName: "mode"))
    var durability: DurabilityMode = .durable
    @Option(help: "JSON policy file: who may read and write which maps and keys (deny by default; SIGHUP reloads it).")
    var policy: String?
    @Option(help: "File holding the HS256 key for client JWTs (its text, surrounding whitespace trimmed).") var jwtSecretFile: String?
    @Option(help: "PEM public key (ES256 or RS256) for client JWTs (repeatable).") var jwtPublicKey: [String] = []
    @Option(help: "Required iss claim of client JWTs.") var jwtIssuer: String?
    @Option(help: "Required aud claim of client JWTs.") var jwtAudience: String?
    @Option(
        help: ArgumentHelp(
            "Refuse merged stamps more than this many seconds ahead of this clock (default 60).",
            discussion: "A peer whose clock (or HLC, after a clock excursion) ran ahead has its new writes refused until real time catches up; a larger bound for a while accepts them (loudly: each handshake logs the offset)."))
    var maxClockDrift: Int = 60
    @Option(help: "File holding a bearer token that GET /metrics requires (Authorization: Bearer <token>; /healthz stays open).")
    var metricsTokenFile: String?
    @Flag(help: "Label /metrics series with users' subjects (topgun_user_sessions{subject}); by default labels name node ids only.")
    var metricsSubjects = false
    @Flag(help: "Allow plain TCP or HTTP beyond loopback (anyone on the path can read the link and write to it).") var insecure = false

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = Logger(label: "topgun.serve")
        let secret = try token.secret()
        let listenAddress = try listen.map { try Self.listenAddress($0, flag: "--listen") }
        let peerAddresses = try peers.map { text in
            guard let a = ReplicaNode.PeerAddress(text) else { throw CLIError("bad --peer \(text), expected HOST:PORT") }
            return a
        }
        var tls: ReplicaNode.TLSFiles?
        switch (tlsCert, tlsKey) {
        case (let cert?, let key?): tls = .init(certificate: cert, privateKey: key, trustRoots: tlsCA, clientCA: tlsClientCA)
        case (nil, nil): tls = nil
        default: throw CLIError("--tls-cert and --tls-key go together")
        }
        if tlsClientCA != nil && tls == nil { throw CLIError("--tls-client-ca needs --tls-cert and --tls-key") }
        guard idleTimeout >= 0.2 else { throw CLIError("--idle-timeout must be at least 0.2 seconds") }
        // Every page of an existing file is verified before liblmdb opens it.
        if FileManager.default.fileExists(atPath: options.data + "/data.mdb") {
            let file = Store.verifyFile(path: options.data)
            guard file.isIntact else {
                throw CLIError("\(options.data)/data.mdb is damaged: \(file.problems.prefix(3).joined(separator: "; "))")
            }
            logger.info(
                "data file verified",
                metadata: [
                    "pages": "\(file.pagesVisited)", "seconds": "\(file.seconds)",
                    "seconds_per_gb": "\(file.fileBytes > 0 ? file.seconds / (Double(file.fileBytes) / 1e9) : 0)",
                ])
        }
        let policyRules = try policy.map { path in
            do { return try Policy.load(path: path) } catch { throw CLIError("\(error)") }
        }
        var verifier: TokenVerifier?
        if jwtSecretFile != nil || !jwtPublicKey.isEmpty {
            let secret = try jwtSecretFile.map { path in
                guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read --jwt-secret-file \(path)") }
                return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            let keys = try jwtPublicKey.map { path in
                guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read --jwt-public-key \(path)") }
                return String(decoding: data, as: UTF8.self)
            }
            do {
                verifier = try await TokenVerifier(hmacSecret: secret, publicKeysPEM: keys, issuer: jwtIssuer, audience: jwtAudience)
            } catch {
                throw CLIError("\(error)")
            }
            if policyRules == nil {
                logger.warning("client JWTs are accepted without --policy: every user may read and write everything")
            }
        }
        guard maxClockDrift > 0 else { throw CLIError("--max-clock-drift must be at least 1 second") }
        var storeOptions = durability.storeOptions
        storeOptions.maxClockDriftMillis = UInt64(maxClockDrift) * 1_000
        let store = try Store(path: options.data, options: storeOptions)
        if let http, let metrics, http != metrics { throw CLIError("--metrics is another name for --http: give one address") }
        let httpAddress = try (http ?? metrics).map { try Self.listenAddress($0, flag: http != nil ? "--http" : "--metrics") }
        let registry = httpAddress != nil ? PrometheusCollectorRegistry() : nil
        var routes: [String: @Sendable () -> (contentType: String, body: String)] = [:]
        if let registry {
            routes["/metrics"] = {
                var bytes: [UInt8] = []
                registry.emit(into: &bytes)
                return ("text/plain; version=0.0.4", String(decoding: bytes, as: UTF8.self))
            }
        }
        let metricsToken = try metricsTokenFile.map { path in
            guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read --metrics-token-file \(path)") }
            let token = Array(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
            guard token.count >= 16 else { throw CLIError("the metrics token in \(path) is \(token.count) bytes; use at least 16 (`head -c 32 /dev/urandom | base64`)") }
            return token
        }
        if metricsToken != nil && httpAddress == nil { throw CLIError("--metrics-token-file needs --http") }
        let subscription = Subscription(
            maps: maps?.split(separator: ",").map(String.init) ?? [],
            partitions: partitions?.split(separator: ",").compactMap { UInt16($0) } ?? [])
        let node = try ReplicaNode(
            store: store,
            configuration: .init(
                listen: listenAddress, peers: peerAddresses, token: secret, subscription: subscription,
                antiEntropyInterval: antiEntropy > 0 ? .seconds(antiEntropy) : nil, tls: tls,
                retention: retention.map { .seconds($0) },
                // Collect at least twice per retention period, at most once a minute.
                gcInterval: .seconds(max(1, min(60, (retention ?? 120) / 2))),
                heartbeatInterval: .milliseconds(Int(idleTimeout * 250)), idleTimeout: .milliseconds(Int(idleTimeout * 1_000)),
                http: httpAddress, httpRoutes: routes, policy: policyRules, tokenVerifier: verifier, allowsPlaintext: insecure,
                httpRoutesToken: metricsToken),
            logger: logger)
        let service = NodeService(node: node, logger: logger, registry: registry, metricsSubjects: metricsSubjects, policyFile: policy)
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("stopped", metadata: ["node": "\(store.nodeID)"])
    }

    /// `HOST:PORT` for a listener (port 0 picks a free one).
    static func listenAddress(_ text: String, flag: String) throws -> ReplicaNode.PeerAddress {
        if let address = ReplicaNode.PeerAddress(text) { return address }
        if text.hasSuffix(":0"), text.count > 2 { return ReplicaNode.PeerAddress(host: String(text.dropLast(2)), port: 0) }
        throw CLIError("bad \(flag) \(text), expected HOST:PORT")
    }
}

/// Runs a replica node under swift-service-lifecycle (graceful shutdown on signals).
struct NodeService: Service {
    let node: ReplicaNode
    let logger: Logger
    let registry: PrometheusCollectorRegistry?
    let metricsSubjects: Bool
    /// Reloaded on SIGHUP.
    let policyFile: String?

    func run() async throws {
        do {
            try await runUntilShutdown()
        } catch is CancellationError {
            logger.info("shutting down")
        }
    }

    func runUntilShutdown() async throws {
        try await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await node.run() }
                if let registry {
                    tasks.addTask { try await MetricsEndpoint(registry: registry, node: node, subjects: metricsSubjects).publish() }
                }
                tasks.addTask {
                    // SIGHUP: read the policy file again; a file that does not parse
                    // leaves the old policy in force.
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        guard let policyFile else {
                            logger.info("SIGHUP: no --policy file to reload")
                            continue
                        }
                        do {
                            node.reload(policy: try Policy.load(path: policyFile))
                        } catch {
                            logger.error("SIGHUP: the policy file was not reloaded; the old policy stays", metadata: ["error": "\(error)"])
                        }
                    }
                }
                tasks.addTask {
                    // Announce the bound port once listening (scripts and tests read it).
                    if node.configuration.http != nil, let port = try? await node.listeningHTTP() {
                        FileHandle.standardOutput.write(Data("http on port \(port)\nmetrics on port \(port)\n".utf8))
                    }
                    if node.configuration.listen != nil, let port = try? await node.listening() {
                        FileHandle.standardOutput.write(Data("listening on port \(port)\n".utf8))
                    }
                    while true { try await Task.sleep(for: .seconds(3_600)) }
                }
                try await tasks.next()
                tasks.cancelAll()
            }
        }
    }
}

/// `--durability`: how often commits are flushed to disk.
enum DurabilityMode: String, ExpressibleByArgument, CaseIterable {
    case durable
    case noMetaSync = "no-meta-sync"
    case noSync = "no-sync"

    var storeOptions: Store.Options {
        switch self {
        case .durable: .init(durability: .durable)
        case .noMetaSync: .init(durability: .noMetaSync)
        case .noSync: .init(durability: .noSync)
        }
    }
}
