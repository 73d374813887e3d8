import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import TopGunCore
import TopGunStore

/// A replica: serves its op log to peers that pull from it, and pulls from its own
/// peers, applying their segments through the store's merge path.
///
/// Every node is both server and client; there is no leader. Ops a node receives are
/// logged in its own op log too, so chains and stars converge; idempotent merges stop
/// echoes.
public final class ReplicaNode: Sendable {
    /// Where a peer listens.
    public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
        /// How frames travel to the peer.
        public enum Transport: Sendable, Hashable {
            /// Frames on a TCP connection (TLS when the node has TLS files).
            case tcp
            /// Binary WebSocket messages after an HTTP upgrade on `path`; `secure` is
            /// `wss://` (TLS, the host name verified against the system's or the node's
            /// trust roots).
            case webSocket(path: String, secure: Bool)
        }

        /// Host name or IP address.
        public var host: String
        /// TCP port.
        public var port: Int
        /// TCP or WebSocket.
        public var transport: Transport

        public init(host: String, port: Int, transport: Transport = .tcp) {
            self.host = host
            self.port = port
            self.transport = transport
        }

        /// `HOST:PORT` (TCP).
        public init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), port > 0, port < 65536
            else { return nil }
            self.init(host: String(text[..<colon]), port: port)
        }

        /// `tcp://HOST:PORT`, `ws://HOST:PORT/PATH` or `wss://HOST:PORT/PATH` (the port
        /// defaults to 80 and 443 for WebSocket URLs, the path to `/sync`).
        public init?(url: String) {
            let schemes: [(String, Transport?)] = [("tcp://", .tcp), ("ws://", nil), ("wss://", nil)]
            guard let (scheme, _) = schemes.first(where: { url.hasPrefix($0.0) }) else { return nil }
            let rest = url.dropFirst(scheme.count)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let authority = String(rest[..<slash])
            let path = slash == rest.endIndex ? "/sync" : String(rest[slash...])
            let secure = scheme == "wss://"
            if scheme == "tcp://" {
                guard slash == rest.endIndex || rest[slash...] == "/" else { return nil }
                self.init(authority)
                return
            }
            let host: String
            let port: Int
            if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
                guard let p = Int(authority[authority.index(after: colon)...]), p > 0, p < 65536 else { return nil }
                (host, port) = (String(authority[..<colon]), p)
            } else {
                (host, port) = (authority, secure ? 443 : 80)
            }
            guard !host.isEmpty else { return nil }
            self.init(host: host, port: port, transport: .webSocket(path: path, secure: secure))
        }

        public var description: String {
            switch transport {
            case .tcp: "\(host):\(port)"
            case .webSocket(let path, let secure): "\(secure ? "wss" : "ws")://\(host):\(port)\(path)"
            }
        }
    }

    public struct TLSFiles: Sendable, Equatable {
        /// This node's certificate (chain), presented to peers.
        public var certificate: String
        public var privateKey: String
        /// Certificates trusted when connecting to peers; default: `certificate` itself
        /// (every node shares one self-signed certificate).
        public var trustRoots: String?
        /// Mutual TLS: this node's listeners (TCP and WebSocket) accept only clients
        /// presenting a certificate these CA certificates signed. Nodes always present
        /// their own certificate when they connect.
        public var clientCA: String?

        public init(certificate: String, privateKey: String, trustRoots: String? = nil, clientCA: String? = nil) {
            self.certificate = certificate
            self.privateKey = privateKey
            self.trustRoots = trustRoots
            self.clientCA = clientCA
        }
    }

    public struct Configuration: Sendable {
        public var listen: PeerAddress?
        /// TLS for every connection, served and pulled (nil = plain TCP).
        public var tls: TLSFiles?
        public var peers: [PeerAddress]
        /// The shared secret every peer must present.
        public var token: [UInt8]
        /// What this node pulls from its peers (empty = everything).
        public var subscription: Subscription
        public var maxFrameBytes: Int
        /// Ops per segment.
        public var segmentSize: Int
        /// Segments a server sends before waiting for an acknowledgement.
        public var maxInFlightSegments: Int
        /// How often the op-log head is checked for new entries (catches writes of
        /// other processes on the same files).
        public var pollInterval: Duration
        /// How often a puller asks its peers for a Merkle repair (nil = only on gaps).
        public var antiEntropyInterval: Duration?
        public var handshakeTimeout: Duration
        /// Garbage collection: every `gcInterval`, remove op-log entries and the
        /// tombstones they wrote that are older than `retention` and acknowledged by
        /// every known peer (see `Store.collectGarbage`; nil = never collect).
        public var retention: Duration?
        public var gcInterval: Duration
        /// A HEARTBEAT is sent on a connection that wrote nothing for this long.
        public var heartbeatInterval: Duration
        /// A connection on which nothing arrived for this long is closed (and a
        /// puller dials again): a frozen link is noticed within this time.
        public var idleTimeout: Duration
        /// A pulling session that refused an entry (clock drift, GC horizon) ends this
        /// long after, so the entry is offered again.
        public var heldRetryInterval: Duration
        /// Links this node dials offer its log too, so the peer pulls it over the same
        /// connection (two-way sync; an app without a listen address needs it).
        public var push: Bool
        /// The HTTP listener: WebSocket sync on `GET /sync`, `/healthz`, and
        /// `httpRoutes` (TLS with the node's TLS files).
        public var http: PeerAddress?
        /// PEM certificates trusted for `wss://` servers (default: the node's TLS trust
        /// roots, else the system's).
        public var trustRoots: String?
        /// Extra plain routes of the HTTP listener, such as `/metrics`.
        public var httpRoutes: [String: @Sendable () -> (contentType: String, body: String)]
        /// When set, `httpRoutes` answer 401 unless the request carries
        /// `Authorization: Bearer <this>` (`/healthz` stays open, for load balancers).
        public var httpRoutesToken: [UInt8]?
        /// Watch the op-log head for commits by other processes on the same files (one
        /// read per `pollInterval` for the whole node); commits of this process wake the
        /// streams directly.
        public var watchOtherProcesses: Bool
        /// A JWT this node presents to the servers it dials instead of proving the
        /// shared secret: it then syncs as that user, within the server's policy, and
        /// pushes only its own writes (an app). `token` is unused then.
        public var bearerToken: String?
        /// Who may read and write what on this node (nil: every authenticated peer may
        /// do everything). Replaced at run time with `ReplicaNode.reload(policy:)`.
        public var policy: Policy?
        /// Verifies the JWTs of connecting clients (nil: only the shared secret is
        /// accepted).
        public var tokenVerifier: TokenVerifier?
        /// A subscriber more than this many log entries behind — and behind by more
        /// than twice the records this node holds — catches up by a Merkle repair (each
        /// changed record once, in its current state) instead of the log (every op).
        public var catchUpByRepairAfter = 10_000
        /// Node ids (devices) one user may sync from: each is a peer garbage collection
        /// waits for, until it acknowledges or is forgotten.
        public var maxDevicesPerUser = 32
        /// Plain TCP and plain HTTP (`ws://`) to or on addresses other than loopback. A
        /// plain link can be read, and after a genuine handshake written, by anyone on
        /// its path; false refuses such a configuration unless the node has TLS files.
        public var allowsPlaintext = false

        /// Checks what a node refuses to run with: a shared secret shorter than
        /// `ReplicaNode.minimumSecretBytes`, a node that dials replicas without a secret,
        /// and plain links beyond loopback unless `allowsPlaintext`.
        ///
        /// - Throws: `ReplicationError(.invalidConfiguration)` saying what to change.
        public func validate() throws(ReplicationError) {
            if !token.isEmpty && token.count < Handshake.minimumSecretBytes {
                throw ReplicationError(
                    .invalidConfiguration,
                    "the shared secret is \(token.count) bytes; at least \(Handshake.minimumSecretBytes) are needed (make one with `head -c 32 /dev/urandom | base64`)")
            }
            if token.isEmpty && bearerToken == nil && !peers.isEmpty {
                throw ReplicationError(.invalidConfiguration, "dialling peers needs the shared secret or a JWT")
            }
            if let listen, tls == nil, !allowsPlaintext, !isLoopback(listen.host) { throw plaintextRefusal("listening on \(listen.host)") }
            if let http, tls == nil, !allowsPlaintext, !isLoopback(http.host) { throw plaintextRefusal("HTTP on \(http.host)") }
            for peer in peers { try checkLink(to: peer) }
        }

        /// Refuses a plain link to `peer` beyond loopback unless `allowsPlaintext`.
        ///
        /// - Throws: `ReplicationError(.invalidConfiguration)`.
        public func checkLink(to peer: PeerAddress) throws(ReplicationError) {
            guard !allowsPlaintext, !isLoopback(peer.host) else { return }
            switch peer.transport {
            case .tcp where tls == nil: throw plaintextRefusal("the link to \(peer)")
            case .webSocket(_, secure: false): throw plaintextRefusal("the link to \(peer)")
            case .tcp, .webSocket: return
            }
        }

        private func plaintextRefusal(_ what: String) -> ReplicationError {
            ReplicationError(
                .invalidConfiguration,
                "\(what) is plain text beyond loopback: anyone on the path can read it, and write to it after a genuine handshake; use TLS (--tls-cert/--tls-key, wss://) or allow plain links explicitly (--insecure)")
        }

        public init(
            listen: PeerAddress?, peers: [PeerAddress] = [], token: [UInt8], subscription: Subscription = .init(),
            maxFrameBytes: Int = Frame.defaultMaxBytes, segmentSize: Int = 1_000, maxInFlightSegments: Int = 4,
            pollInterval: Duration = .milliseconds(20), antiEntropyInterval: Duration? = .seconds(60),
            handshakeTimeout: Duration = .seconds(5), tls: TLSFiles? = nil, retention: Duration? = nil,
            gcInterval: Duration = .seconds(60), heartbeatInterval: Duration = .seconds(1), idleTimeout: Duration = .seconds(5),
            heldRetryInterval: Duration = .seconds(10), push: Bool = true, watchOtherProcesses: Bool = true,
            http: PeerAddress? = nil, httpRoutes: [String: @Sendable () -> (contentType: String, body: String)] = [:],
            trustRoots: String? = nil, bearerToken: String? = nil, policy: Policy? = nil, tokenVerifier: TokenVerifier? = nil,
            maxDevicesPerUser: Int = 32, catchUpByRepairAfter: Int = 10_000, allowsPlaintext: Bool = false, httpRoutesToken: [UInt8]? = nil
        ) {
            self.allowsPlaintext = allowsPlaintext
            self.httpRoutesToken = httpRoutesToken
            self.maxDevicesPerUser = maxDevicesPerUser
            self.catchUpByRepairAfter = catchUpByRepairAfter
            self.bearerToken = bearerToken
            self.policy = policy
            self.tokenVerifier = tokenVerifier
            self.trustRoots = trustRoots
            self.http = http
            self.httpRoutes = httpRoutes
            self.push = push
            self.watchOtherProcesses = watchOtherProcesses
            self.heartbeatInterval = heartbeatInterval
            self.heldRetryInterval = heldRetryInterval
            self.idleTimeout = idleTimeout
            self.tls = tls
            self.retention = retention
            self.gcInterval = gcInterval
            self.listen = listen
            self.peers = peers
            self.token = token
            self.subscription = subscription
            self.maxFrameBytes = maxFrameBytes
            self.segmentSize = segmentSize
            self.maxInFlightSegments = maxInFlightSegments
            self.pollInterval = pollInterval
            self.antiEntropyInterval = antiEntropyInterval
            self.handshakeTimeout = handshakeTimeout
        }
    }

    /// Counters for logs, tests and metrics.
    public struct Statistics: Sendable, Equatable {
        public var segmentsSent = 0
        public var segmentsApplied = 0
        public var segmentsRejected = 0
        public var opsApplied = 0
        public var bytesSent = 0
        public var bytesReceived = 0
        public var rawBytesSent = 0
        public var handshakesRefused = 0
        public var repairsSent = 0
        /// DIGESTS frames received (each asks for a repair).
        public var repairsRequested = 0
        /// Repairs sent whole (each ends with RESUME); DIGESTS that arrive while one is
        /// being sent are merged into the next.
        public var repairsServed = 0
        /// Sessions refused because the peer presented this node's id or one that
        /// already had a live session.
        public var duplicateIDsRefused = 0
        /// Connections closed because nothing arrived within the idle timeout.
        public var idleTimeouts = 0
        /// Operations refused one by one as invalid (a value too deep or too large…).
        public var opsRefusedInvalid = 0
        /// Links to peers this node pulls from that ended in an error (refused, cut,
        /// timed out, failed TLS); each is dialled again after a backoff.
        public var linksDown = 0
        /// Pushed writes this node refused, by reason ("not permitted", "foreign origin").
        public var writesRejected: [String: Int] = [:]
        /// This node's pushed writes that a server refused (and that were reverted here).
        public var rejectionsReceived = 0
        /// Connections refused for a bad JWT, by reason.
        public var tokensRefused: [String: Int] = [:]
        /// Each peer's wall clock minus this node's, ms, told at its last handshake.
        public var clockOffsets: [NodeID: Int64] = [:]
        /// Operations refused because their stamps were ahead of this clock by more
        /// than the drift bound, by the peer that sent them.
        public var refusedForClockDrift: [NodeID: Int] = [:]
        /// Damaged records this store removed (`Store.heal`) to fetch them again from
        /// the peers it pulls from, and those a peer or a write brought back, since the
        /// store was created (kept in the store).
        public var recordsQuarantined: UInt64 = 0
        /// Accepted connections whose session has not ended yet.
        public var connectionsOpen = 0
        /// Users' writes taken under this node's stamps because the app's clock was
        /// ahead by more than the drift bound.
        public var writesRestamped = 0
        /// NOTICE frames peers sent about this node, by code ("clock drift").
        public var notices: [String: Int] = [:]
        public var recordsRestored: UInt64 = 0
        public init() {}
    }

    /// The shortest shared secret a node accepts, in bytes (256 bits).
    public static let minimumSecretBytes = Handshake.minimumSecretBytes

    public let store: Store
    public let configuration: Configuration
    let logger: Logger
    let group: any EventLoopGroup
    /// The node made `group` and shuts it down.
    let ownsGroup: Bool
    let stats = Mutex(Statistics())
    /// Bumped when this node removed damaged records: links to peers send DIGESTS.
    let repairWanted = ChangeSignal()
    /// Accepted connections whose session has not ended (TCP and HTTP listeners).
    let openConnections = Atomic<Int>(0)
    /// Refused handshakes, logged at a bounded rate.
    let refusals: RefusalLog
    /// The policy now in force (see `reload(policy:)`).
    let policy: Mutex<Policy?>
    /// Bumped by every policy reload.
    let policyGeneration = Atomic<Int>(0)
    /// The policy generation each user's app was last brought up to date under, by a
    /// Merkle repair over what it may read (a changed grant can let it see records its
    /// cursor already passed).
    let repairedUnder = Mutex<[NodeID: Int]>([:])
    /// Origin node ids of ops replicas sent this process: a user's app may not claim
    /// them as its own (it would write under a replica's name).
    let replicaOrigins = Mutex<Set<NodeID>>([])
    /// Accepted sessions: who, and how to end them.
    let sessions = Mutex<(next: Int, open: [Int: (principal: Principal, close: @Sendable () -> Void)])>((0, [:]))
    /// Writes servers refused, for sync sessions (see `SyncSession.rejections`).
    let rejectionObservers = Mutex<[Int: @Sendable (WriteRejection) -> Void]>([:])
    /// Cursors acknowledged by subscribers, for write concern.
    let acknowledged = Mutex<[NodeID: HLCTimestamp]>([:])
    /// Acknowledgements waiting to count for garbage collection.
    let acknowledgements = Mutex(AcknowledgementTracker())
    /// Peers with a live session served by this node: a second one with the same id
    /// is refused.
    let liveSessions = Mutex<[NodeID: LiveSession]>([:])
    /// Peers this node dialled and is connected to now (links per peer).
    let dialled = Mutex<[NodeID: Int]>([:])
    /// Peers whose log a link pulls now. One link at a time per peer: the stored cursor,
    /// and holding it back before a refused entry, assume a single ordered stream (two
    /// nodes that both dial each other have two links, each able to pull).
    let pulling = Mutex<Set<NodeID>>([])

    /// Claims the pull of `peer`'s log for one link; false when another link has it.
    func claimPull(of peer: NodeID) -> Bool {
        pulling.withLock { $0.insert(peer).inserted }
    }

    /// Ends the pull of `peer`'s log by one link, and closes the other links to the peer
    /// that could pull it, so one of them takes over when it reconnects.
    func releasePull(of peer: NodeID) {
        _ = pulling.withLock { $0.remove(peer) }
        let closers = standby.withLock { $0.removeValue(forKey: peer) ?? [:] }
        for close in closers.values { close() }
    }

    /// Links that could pull a peer's log but do not, because another link does.
    let standby = Mutex<[NodeID: [Int: @Sendable () -> Void]]>([:])
    let standbyIDs = Atomic<Int>(0)

    func standBy(for peer: NodeID, close: @escaping @Sendable () -> Void) -> Int {
        let id = standbyIDs.add(1, ordering: .relaxed).newValue
        standby.withLock { $0[peer, default: [:]][id] = close }
        return id
    }

    func endStandby(_ id: Int, for peer: NodeID) {
        standby.withLock { _ = $0[peer]?.removeValue(forKey: id) }
    }
    /// Configured peers that completed a handshake since start: until all have, their
    /// node ids may be missing from `peers` and garbage collection waits.
    let contacted = Mutex<Set<PeerAddress>>([])
    let boundPort = Mutex<Int?>(nil)
    let httpPort = Mutex<Int?>(nil)
    let readiness = Readiness()
    let httpReadiness = Readiness()
    /// The wake-up signals of the running links' streams, bumped on every new commit.
    let streams = Mutex<(next: Int, signals: [Int: ChangeSignal])>((0, [:]))
    /// Bumped on every acknowledgement a subscriber sends.
    let acknowledgementsChanged = ChangeSignal()
    let serverTLS: NIOSSLContext?
    /// For peers addressed by IP address.
    let clientTLS: NIOSSLContext?
    /// For peers addressed by host name: the name is verified.
    let clientTLSByName: NIOSSLContext?

    /// - Throws: `ReplicationError(.invalidConfiguration)` for a configuration
    ///   `Configuration.validate()` refuses; `NIOSSLError` when TLS files cannot be read.
    ///
    /// - Parameter eventLoopGroup: the SwiftNIO threads to run on; by default the node
    ///   makes one thread of its own (many nodes in one process should share a group).
    public init(
        store: Store, configuration: Configuration, logger: Logger = Logger(label: "topgun.replication"),
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) throws {
        try configuration.validate()
        self.store = store
        self.configuration = configuration
        self.policy = Mutex(configuration.policy)
        self.logger = logger
        self.refusals = RefusalLog(logger: logger)
        self.group = eventLoopGroup ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.ownsGroup = eventLoopGroup == nil
        if let tls = configuration.tls {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: tls.privateKey, format: .pem)
            var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            if let clientCA = tls.clientCA {
                // Clients are authenticated by their certificate's chain (they have no
                // host name to check).
                server.certificateVerification = .noHostnameVerification
                server.trustRoots = .file(clientCA)
            }
            serverTLS = try NIOSSLContext(configuration: TLSPolicy.hardened(server))
            var client = TLSConfiguration.makeClientConfiguration()
            client.trustRoots = .file(tls.trustRoots ?? tls.certificate)
            client.certificateChain = chain
            client.privateKey = .privateKey(key)
            // A peer addressed by host name is verified against its certificate's names
            // (SAN); one addressed by IP against the trust roots only.
            clientTLSByName = try NIOSSLContext(configuration: TLSPolicy.hardened(client))
            client.certificateVerification = .noHostnameVerification
            clientTLS = try NIOSSLContext(configuration: TLSPolicy.hardened(client))
        } else {
            serverTLS = nil
            clientTLS = nil
            clientTLSByName = nil
        }
    }

    // The last reference can go away on one of the group's own threads, where a
    // blocking shutdown is forbidden: shut down without waiting.
    deinit { if ownsGroup { group.shutdownGracefully { _ in } } }

    public var statistics: Statistics {
        var out = stats.withLock { $0 }
        out.connectionsOpen = openConnections.load(ordering: .relaxed)
        if let totals = try? store.damageTotals() { (out.recordsQuarantined, out.recordsRestored) = totals }
        return out
    }

    /// Puts `policy` in force: new sessions get it, and every accepted session open now
    /// is closed, so its peer reconnects under the new rules (`topgun serve` calls this
    /// on SIGHUP).
    public func reload(policy: Policy?) {
        self.policy.withLock {
            $0 = policy
            policyGeneration.add(1, ordering: .relaxed)
        }
        let closers = sessions.withLock { $0.open.values.map(\.close) }
        logger.notice("policy reloaded; closing open sessions", metadata: ["sessions": "\(closers.count)", "rules": "\(policy?.rules.count ?? 0)"])
        for close in closers { close() }
    }

    /// Open accepted sessions by principal (`user:alice`, `node:…`).
    public var sessionsByPrincipal: [String: Int] {
        sessions.withLock { open in
            var out: [String: Int] = [:]
            for session in open.open.values { out[session.principal.description, default: 0] += 1 }
            return out
        }
    }

    func openSession(_ principal: Principal, close: @escaping @Sendable () -> Void) -> Int {
        sessions.withLock {
            $0.next += 1
            $0.open[$0.next] = (principal, close)
            return $0.next
        }
    }

    func closeSession(_ id: Int) { _ = sessions.withLock { $0.open.removeValue(forKey: id) } }

    /// Calls `observer` with every write a server refuses from this node (after it was
    /// reverted here); returns a token for `removeRejectionObserver`.
    public func addRejectionObserver(_ observer: @escaping @Sendable (WriteRejection) -> Void) -> Int {
        let id = standbyIDs.add(1, ordering: .relaxed).newValue
        rejectionObservers.withLock { $0[id] = observer }
        return id
    }

    /// Stops calling an observer added with `addRejectionObserver`.
    public func removeRejectionObserver(_ id: Int) { _ = rejectionObservers.withLock { $0.removeValue(forKey: id) } }

    /// What a peer authenticated as `principal` may do here.
    func access(for principal: Principal) -> Access { Access(principal: principal, policy: policy.withLock { $0 }) }

    /// `access(for:)` and the policy generation it was built under, read together.
    func accessAndGeneration(for principal: Principal) -> (Access, Int) {
        policy.withLock { (Access(principal: principal, policy: $0), policyGeneration.load(ordering: .relaxed)) }
    }

    /// Peers with a live link now, accepted or dialled.
    public var connectedPeers: Set<NodeID> {
        Set(liveSessions.withLock { $0.keys }).union(dialled.withLock { Set($0.keys) })
    }

    /// How far `peer` has acknowledged this node's log (this run; GC persists it).
    public func acknowledgedCursor(of peer: NodeID) -> HLCTimestamp? {
        acknowledged.withLock { $0[peer] }
    }

    /// The port the server is bound to (useful with port 0), once listening.
    public var listeningPort: Int? { boundPort.withLock { $0 } }

    /// Waits until `run()` is listening and returns the port (useful with port 0).
    ///
    /// - Throws: `ReplicationError(.protocolViolation)` when the node has no listen
    ///   address; the bind error when binding failed; `CancellationError` when `run()`
    ///   ended first.
    public func listening() async throws -> Int {
        guard configuration.listen != nil else {
            throw ReplicationError(.protocolViolation, "this node has no listen address")
        }
        return try await readiness.wait()
    }

    /// Waits until the HTTP listener (`Configuration.http`) is bound and returns its port.
    ///
    /// - Throws: as `listening()`.
    public func listeningHTTP() async throws -> Int {
        guard configuration.http != nil else {
            throw ReplicationError(.protocolViolation, "this node has no HTTP listener")
        }
        return try await httpReadiness.wait()
    }

    /// Runs the server and the pullers until the task is cancelled.
    public func run() async throws {
        try await run(observer: nil, events: nil)
    }

    /// `run()` reporting the links it dials to `observer` and `events` (sync sessions).
    func run(observer: (any LinkObserver)?, events: (@Sendable (LinkEvent) -> Void)?) async throws {
        defer {
            readiness.resolve(.failure(CancellationError()))
            httpReadiness.resolve(.failure(CancellationError()))
        }
        try await withThrowingDiscardingTaskGroup { tasks in
            if let listen = configuration.listen {
                let server: NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never>
                do {
                    server = try await bind(listen)
                } catch {
                    readiness.resolve(.failure(error))
                    throw error
                }
                tasks.addTask { try await self.serve(server) }
            }
            if let http = configuration.http {
                let server: NIOAsyncChannel<EventLoopFuture<HTTPConnection>, Never>
                do {
                    server = try await bindHTTP(http)
                } catch {
                    httpReadiness.resolve(.failure(error))
                    throw error
                }
                httpReadiness.resolve(.success(httpPort.withLock { $0 } ?? http.port))
                tasks.addTask { try await self.serveHTTP(server) }
            }
            for peer in configuration.peers {
                tasks.addTask { await self.pull(from: peer, observer: observer, status: events) }
            }
            if configuration.listen == nil && configuration.http == nil && configuration.peers.isEmpty && configuration.retention == nil {
                return
            }
            // Damage met by a reader is healed at once: the damaged records leave the
            // Merkle digests, and the links to peers compare digests now, so a peer that
            // holds a record sends it back.
            if !store.healedAtOpen.isEmpty {
                logger.error("healed op-log damage found at open", metadata: ["healed": "\(store.healedAtOpen)"])
            }
            tasks.addTask {
                var seen = self.store.damageSignal.generation
                while !Task.isCancelled {
                    if self.store.hasNotedDamage { try self.healNotedDamage() }
                    seen = await self.store.damageSignal.wait(after: seen)
                }
            }
            // New commits wake the streams: this process's at once, other processes'
            // through one watch of the log head.
            tasks.addTask {
                var seen = self.store.commits.generation
                while !Task.isCancelled {
                    seen = await self.store.commits.wait(after: seen)
                    self.wakeStreams()
                }
            }
            if configuration.watchOtherProcesses {
                tasks.addTask {
                    var head = try self.store.logHead()
                    while !Task.isCancelled {
                        try await Task.sleep(for: self.configuration.pollInterval)
                        let now = try self.store.logHead()
                        if now != head {
                            head = now
                            self.wakeStreams()
                        }
                    }
                }
            }
            // Garbage collection with a retention; without one (apps), only the log's
            // superseded LWW entries go.
            // A failed pass is logged and tried again next time: it must not end the
            // node (an app's session would stop for good).
            tasks.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: self.configuration.gcInterval)
                    do {
                        if let retention = self.configuration.retention {
                            try self.collectGarbage(retention: retention)
                        } else {
                            try self.compactLog()
                        }
                    } catch {
                        self.logger.error("garbage collection failed; trying again later", metadata: ["error": "\(error)"])
                    }
                }
            }

        }
    }

    /// Waits until `k` subscribers have acknowledged `sequence` (TopGun's
    /// WriteConcern "replicated to K"), or `timeout` passes.
    ///
    /// - Returns: how many subscribers had acknowledged it when the wait ended.
    public func waitUntilReplicated(_ sequence: HLCTimestamp, toPeers k: Int, timeout: Duration) async -> Int {
        let reached: @Sendable () -> Int = { self.acknowledged.withLock { $0.values.filter { $0 >= sequence }.count } }
        return await withTaskGroup(of: Int?.self) { group in
            group.addTask {
                var seen = self.acknowledgementsChanged.generation
                while !Task.isCancelled {
                    if reached() >= k { return reached() }
                    seen = await self.acknowledgementsChanged.wait(after: seen)
                }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            _ = await group.next()
            group.cancelAll()
            return reached()
        }
    }

    /// Registers a link's stream signal; it is bumped on every new commit.
    func register(_ signal: ChangeSignal) -> Int {
        streams.withLock { streams in
            streams.next += 1
            streams.signals[streams.next] = signal
            return streams.next
        }
    }

    func unregister(_ registration: Int) {
        _ = streams.withLock { $0.signals.removeValue(forKey: registration) }
    }

    /// Heals the damage this process's readers met (`Store.heal`), logs what was
    /// removed, and has every link to a peer compare Merkle digests now, so the peers'
    /// repairs send the removed records back.
    func healNotedDamage() throws {
        let report = try store.heal()
        guard !report.isEmpty else { return }
        logger.error(
            "damaged data removed; asking peers for the records", metadata: ["healed": "\(report)", "peers": "\(configuration.peers.count)"])
        repairWanted.notify()
    }

    func wakeStreams() {
        for signal in streams.withLock({ Array($0.signals.values) }) { signal.notify() }
    }

    /// Removes the log's superseded LWW entries (`Store.compactLog`).
    func compactLog() throws {
        let removed = try store.compactLog()
        if removed > 0 { logger.debug("superseded log entries removed", metadata: ["log_entries": "\(removed)"]) }
    }

    /// One garbage-collection pass (in bounded steps until done).
    func collectGarbage(retention: Duration) throws {
        let unmet = contacted.withLock { met in configuration.peers.filter { !met.contains($0) } }
        guard unmet.isEmpty else {
            logger.info("garbage collection waits for first contact with configured peers", metadata: ["peers": "\(unmet)"])
            try compactLog()
            return
        }
        let age = milliseconds(retention) ?? 0
        let now = store.now
        let cutoff = HLCTimestamp(millis: now > age ? now - age : 0, counter: 0, node: NodeID(0))
        let store = self.store
        let confirmed = try acknowledgements.withLock { try $0.confirmed { try store.peerCursor($0) } }
        var report = try store.collectGarbage(olderThan: cutoff, acknowledgements: confirmed)
        var removed = (report.tombstonesRemoved, report.logEntriesRemoved, report.supersededRemoved)
        while report.hasMore {
            report = try store.collectGarbage(olderThan: cutoff)
            removed.0 += report.tombstonesRemoved
            removed.1 += report.logEntriesRemoved
            removed.2 += report.supersededRemoved
        }
        if removed != (0, 0, 0) {
            logger.info(
                "garbage collected",
                metadata: ["tombstones": "\(removed.0)", "log_entries": "\(removed.1)", "superseded_entries": "\(removed.2)"])
        }
        if let waiting = report.waitingFor {
            logger.debug("garbage collection waits for a peer's acknowledgement", metadata: ["peer": "\(waiting)"])
        }
    }

    // MARK: Channels

    /// The frame pipeline of an accepted connection (`host` nil) or of one dialled to
    /// `host`, behind TLS when the node has TLS files.
    func pipeline(_ channel: any Channel, host: String?) throws -> NIOAsyncChannel<Frame, Frame> {
        if host == nil, let serverTLS {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverTLS))
        } else if let host, let clientTLS, let clientTLSByName {
            let byName = !isIPAddress(host)
            try channel.pipeline.syncOperations.addHandler(
                try NIOSSLClientHandler(context: byName ? clientTLSByName : clientTLS, serverHostname: byName ? host : nil))
        }
        return try framePipeline(channel, accepting: host == nil)
    }

    /// Frames, idle detection and heartbeats over a byte stream (TCP, or WebSocket
    /// messages through `WebSocketFrameBridge`).
    func framePipeline(_ channel: any Channel, accepting: Bool) throws -> NIOAsyncChannel<Frame, Frame> {
        let gate = accepting ? HandshakeGate() : nil
        if let gate {
            try channel.pipeline.syncOperations.addHandler(gate)
            try channel.pipeline.syncOperations.addHandler(ActivityStamp())
        }
        // Bytes, not whole frames, count as activity: a large segment arriving slowly
        // is not an idle link.
        try channel.pipeline.syncOperations.addHandler(
            IdleStateHandler(readTimeout: .nanoseconds(nanoseconds(configuration.idleTimeout)), writeTimeout: .nanoseconds(nanoseconds(configuration.heartbeatInterval))))
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxBytes: configuration.maxFrameBytes, gate: gate)))
        try channel.pipeline.syncOperations.addHandler(CloseOnError())
        try channel.pipeline.syncOperations.addHandler(FrameWriter())
        try channel.pipeline.syncOperations.addHandler(HeartbeatHandler(idleTimeout: configuration.idleTimeout) { [self] in
            stats.withLock { $0.idleTimeouts += 1 }
            logger.warning("link idle, closing it", metadata: ["timeout": "\(configuration.idleTimeout)"])
        })
        // Two frames wait for the link at most: a frame may be 32 MB, and a peer that
        // sends faster than the link handles its frames is read no further.
        return try NIOAsyncChannel<Frame, Frame>(
            wrappingChannelSynchronously: channel, configuration: .init(backPressureStrategy: .init(lowWatermark: 1, highWatermark: 2)))
    }

    func bind(_ address: PeerAddress) async throws -> NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never> {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture { try self.pipeline(channel, host: nil) }
            }
        let port = server.channel.localAddress?.port ?? address.port
        boundPort.withLock { $0 = port }
        readiness.resolve(.success(port))
        logger.info("listening", metadata: ["address": "\(address.host):\(server.channel.localAddress?.port ?? 0)"])
        return server
    }

    func serve(_ server: NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never>) async throws {
        try await withThrowingDiscardingTaskGroup { sessions in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    openConnections.add(1, ordering: .relaxed)
                    sessions.addTask {
                        defer { self.openConnections.subtract(1, ordering: .relaxed) }
                        do {
                            try await Listener(node: self, channel: connection).run()
                        } catch {
                            self.logger.info("session ended", metadata: ["error": "\(error)"])
                        }
                    }
                }
            }
        }
    }

    func connect(_ peer: PeerAddress) async throws -> NIOAsyncChannel<Frame, Frame> {
        try configuration.checkLink(to: peer)
        if case .webSocket(let path, let secure) = peer.transport {
            return try await connectWebSocket(peer, path: path, secure: secure)
        }
        return try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .connect(host: peer.host, port: peer.port) { channel in
                channel.eventLoop.makeCompletedFuture { try self.pipeline(channel, host: peer.host) }
            }
    }
}

/// True for `localhost` and loopback address literals (127.0.0.0/8, ::1).
func isLoopback(_ host: String) -> Bool {
    if host == "localhost" { return true }
    var v4 = in_addr()
    if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
    let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    var v6 = in6_addr()
    guard inet_pton(AF_INET6, bare, &v6) == 1 else { return false }
    return withUnsafeBytes(of: &v6) { $0.elementsEqual([UInt8](repeating: 0, count: 15) + [1]) }
}

/// True for an IPv4 or IPv6 address literal (which TLS cannot send as SNI).
func isIPAddress(_ host: String) -> Bool {
    var scratch = [UInt8](repeating: 0, count: 16)
    return inet_pton(AF_INET, host, &scratch) == 1 || inet_pton(AF_INET6, host, &scratch) == 1
}

/// `duration` in whole nanoseconds (NIO's `TimeAmount`).
func nanoseconds(_ duration: Duration) -> Int64 {
    let c = duration.components
    return c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
}

/// A result set once (the listener's port, or why there is none) and the tasks
/// waiting for it.
final class Readiness: Sendable {
    private let state = Mutex<(result: Result<Int, any Error>?, waiting: [CheckedContinuation<Int, any Error>])>((nil, []))

    /// Sets the result unless one is set already, and wakes every waiter.
    func resolve(_ result: Result<Int, any Error>) {
        let waiting = state.withLock { state -> [CheckedContinuation<Int, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiting = [] }
            return state.waiting
        }
        for waiter in waiting { waiter.resume(with: result) }
    }

    func wait() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<Int, any Error>? in
                if let result = state.result { return result }
                state.waiting.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
