import Logging
import NIOCore
import NIOPosix
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
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `host:port`.
        public init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), port > 0, port < 65536
            else { return nil }
            self.init(host: String(text[..<colon]), port: port)
        }

        public var description: String { "\(host):\(port)" }
    }

    public struct Configuration: Sendable {
        public var listen: PeerAddress?
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

        public init(
            listen: PeerAddress?, peers: [PeerAddress] = [], token: [UInt8], subscription: Subscription = .init(),
            maxFrameBytes: Int = Frame.defaultMaxBytes, segmentSize: Int = 1_000, maxInFlightSegments: Int = 4,
            pollInterval: Duration = .milliseconds(20), antiEntropyInterval: Duration? = .seconds(60),
            handshakeTimeout: Duration = .seconds(5)
        ) {
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
        public init() {}
    }

    public let store: Store
    public let configuration: Configuration
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let stats = Mutex(Statistics())
    /// Cursors acknowledged by subscribers, for write concern.
    let acknowledged = Mutex<[NodeID: HLCTimestamp]>([:])
    let boundPort = Mutex<Int?>(nil)

    public init(store: Store, configuration: Configuration, logger: Logger = Logger(label: "topgun.replication")) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    deinit { try? group.syncShutdownGracefully() }

    public var statistics: Statistics { stats.withLock { $0 } }

    /// The port the server is bound to (useful with port 0), once listening.
    public var listeningPort: Int? { boundPort.withLock { $0 } }

    /// Runs the server and the pullers until the task is cancelled.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { tasks in
            if let listen = configuration.listen {
                let server = try await bind(listen)
                tasks.addTask { try await self.serve(server) }
            }
            for peer in configuration.peers {
                tasks.addTask { await self.pull(from: peer) }
            }
            if configuration.listen == nil && configuration.peers.isEmpty { return }
            // Keep the group alive until cancellation (graceful shutdown).
            tasks.addTask {
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3_600)) }
            }
        }
    }

    /// Waits until `k` subscribers have acknowledged `sequence` (TopGun's
    /// WriteConcern "replicated to K"), or `timeout` passes.
    ///
    /// - Returns: how many subscribers had acknowledged it when the wait ended.
    public func waitUntilReplicated(_ sequence: HLCTimestamp, toPeers k: Int, timeout: Duration) async -> Int {
        let deadline = ContinuousClock.now + timeout
        while true {
            let reached = acknowledged.withLock { $0.values.filter { $0 >= sequence }.count }
            if reached >= k || ContinuousClock.now >= deadline || Task.isCancelled { return reached }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    // MARK: Channels

    func pipeline(_ channel: any Channel) throws -> NIOAsyncChannel<Frame, Frame> {
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxBytes: configuration.maxFrameBytes)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
        return try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
    }

    func bind(_ address: PeerAddress) async throws -> NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never> {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture { try self.pipeline(channel) }
            }
        boundPort.withLock { $0 = server.channel.localAddress?.port }
        logger.info("listening", metadata: ["address": "\(address.host):\(server.channel.localAddress?.port ?? 0)"])
        return server
    }

    func serve(_ server: NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never>) async throws {
        try await withThrowingDiscardingTaskGroup { sessions in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    sessions.addTask {
                        do {
                            try await ServerSession(node: self, channel: connection).run()
                        } catch {
                            self.logger.info("session ended", metadata: ["error": "\(error)"])
                        }
                    }
                }
            }
        }
    }

    func connect(_ peer: PeerAddress) async throws -> NIOAsyncChannel<Frame, Frame> {
        try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .connect(host: peer.host, port: peer.port) { channel in
                channel.eventLoop.makeCompletedFuture { try self.pipeline(channel) }
            }
    }
}

/// Compares secrets in time independent of where they differ.
func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(truncatingIfNeeded: a.count ^ b.count)
    for i in 0..<max(a.count, b.count) {
        diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
    }
    return diff == 0
}
