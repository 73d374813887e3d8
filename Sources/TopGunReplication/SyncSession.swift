import Logging
import NIOCore
import Synchronization
import TopGunCore
import TopGunStore

/// A database syncing with one server over the connection it opens (TCP or
/// WebSocket): its writes go up, the server's (and other apps') come down, through
/// disconnects, resuming from stored cursors. See `Database.sync(with:token:)`.
///
/// ```swift
/// let sync = try db.sync(with: "wss://example.com/sync", token: jwt)
/// for await status in sync.statusUpdates() { print(status) }  // offline, connecting, syncing, idle
/// try await notes.set("n1", note)
/// try await sync.waitUntilPushed()                          // on the server now
/// ```
public final class SyncSession: Sendable {
    /// Where the session stands.
    public enum Status: Sendable, Equatable {
        /// Not connected; `lastError` says why the last attempt failed (nil before any).
        case offline(lastError: String?)
        /// Dialling, or in the handshake.
        case connecting
        /// Connected, exchanging what the other side lacks.
        case syncing
        /// Connected and caught up both ways.
        case idle
    }

    struct State {
        var connected = false
        var lastError: String?
        var attempting = false
        var pulled: HLCTimestamp = .zero
        var remoteHead: HLCTimestamp = .zero
        var pushed: HLCTimestamp = .zero
        /// This connection's link reported the server's head and the server subscribed
        /// to this log: until both, "caught up" cannot be judged.
        var heardHead = false
        var heardSubscription = false
        var pulledOps = 0
        var status: Status = .offline(lastError: nil)
        var watchers: [Int: AsyncStream<Status>.Continuation] = [:]
        var rejectionWatchers: [Int: AsyncStream<WriteRejection>.Continuation] = [:]
        var nextWatcher = 0
        var stopped = false
        var notice: ReplicationError?
    }

    /// The node underneath (no listen address; one link to the server).
    public let node: ReplicaNode
    /// The server this session syncs with.
    public let server: ReplicaNode.PeerAddress
    let state = Mutex(State())
    /// Bumped on every change of progress or connection.
    let progress = ChangeSignal()
    let task = Mutex<[Task<Void, Never>]>([])
    /// Log scanned through, and the newest own write found (see `headToPush`).
    let ownHead = Mutex<(scanned: HLCTimestamp, own: HLCTimestamp)>((.zero, .zero))

    init(node: ReplicaNode, server: ReplicaNode.PeerAddress) {
        self.node = node
        self.server = server
    }

    /// The current status.
    public var status: Status { state.withLock { $0.status } }

    /// The last problem the server reported about this database, if any: for example
    /// `.clockDrift` when its writes are refused because this device's clock is ahead.
    /// The session goes on; the writes are offered again.
    public var notice: ReplicationError? { state.withLock { $0.notice } }

    /// The status now, then every change, until the session stops.
    public func statusUpdates() -> AsyncStream<Status> {
        let (stream, continuation) = AsyncStream.makeStream(of: Status.self, bufferingPolicy: .bufferingNewest(16))
        let id = state.withLock { state -> Int in
            continuation.yield(state.status)
            if state.stopped {
                continuation.finish()
                return 0
            }
            state.nextWatcher += 1
            state.watchers[state.nextWatcher] = continuation
            return state.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) } }
        return stream
    }

    /// Local op-log entries the server has not acknowledged yet (syncing as a user:
    /// this database's own writes among them; it pushes nothing else).
    public func pendingChanges() throws -> Int {
        let pushed = state.withLock { $0.pushed }
        if node.configuration.bearerToken != nil { return try node.store.ownEntries(of: node.store.nodeID, after: pushed).count }
        return try node.store.logEntryCount(after: pushed)
    }

    /// The newest log entry the server must acknowledge: the log head, or syncing as a
    /// user the newest of this database's own writes (the rest is never pushed, so
    /// the server's cursor moves past it only with a later own write).
    func headToPush() throws -> HLCTimestamp {
        guard node.configuration.bearerToken != nil else { return try node.store.lastSequence() ?? .zero }
        let (scanned, known) = ownHead.withLock { $0 }
        let head = try node.store.lastSequence() ?? .zero
        guard head > scanned else { return known }
        let newest = try node.store.ownEntries(of: node.store.nodeID, after: scanned == .zero ? nil : scanned).last
        let own = max(known, newest ?? .zero)
        ownHead.withLock { $0 = (head, own) }
        return own
    }

    /// Waits until the server has acknowledged every local write made before the call
    /// (write concern for apps); waits through disconnects.
    ///
    /// - Throws: `CancellationError` when the task is cancelled or the session stopped.
    public func waitUntilPushed() async throws {
        let head = try headToPush()
        guard head > .zero else { return }
        var seen = progress.generation
        while state.withLock({ $0.pushed }) < head {
            try checkRunning()
            seen = await progress.wait(after: seen)
        }
    }

    /// Waits until the session is connected and caught up both ways: the server holds
    /// every local write (made up to now) and this store the server's log through its
    /// head when the connection opened.
    ///
    /// - Throws: `CancellationError` when the task is cancelled or the session stopped.
    public func waitUntilIdle() async throws {
        var seen = progress.generation
        while true {
            try checkRunning()
            let head = try headToPush()
            if status == .idle && state.withLock({ $0.pushed >= head }) { return }
            seen = await progress.wait(after: seen)
        }
    }

    private func checkRunning() throws {
        try Task.checkCancellation()
        if state.withLock({ $0.stopped }) { throw CancellationError() }
    }

    /// Stops syncing and closes the connection; waits in progress throw
    /// `CancellationError` and status streams end.
    public func stop() async {
        let running = task.withLock { task -> [Task<Void, Never>] in
            defer { task = [] }
            return task
        }
        for t in running { t.cancel() }
        for t in running { await t.value }
        let (status, watchers, rejectionWatchers) = state.withLock {
            state -> (Status, [AsyncStream<Status>.Continuation], [AsyncStream<WriteRejection>.Continuation]) in
            state.stopped = true
            state.connected = false
            state.status = .offline(lastError: state.lastError)
            defer {
                state.watchers = [:]
                state.rejectionWatchers = [:]
            }
            return (state.status, Array(state.watchers.values), Array(state.rejectionWatchers.values))
        }
        for watcher in rejectionWatchers { watcher.finish() }
        progress.notify()
        for watcher in watchers {
            watcher.yield(status)
            watcher.finish()
        }
    }

    deinit {
        for t in task.withLock({ $0 }) { t.cancel() }
    }

    /// Ops received from the server so far.
    public var opsPulled: Int { node.statistics.opsApplied }

    /// Writes of this database the server refused (its policy does not let this user
    /// write there), from now on until the session stops. Each was already reverted
    /// here: the record is back to the server's state.
    public func rejections() -> AsyncStream<WriteRejection> {
        let (stream, continuation) = AsyncStream.makeStream(of: WriteRejection.self, bufferingPolicy: .bufferingNewest(1_000))
        if state.withLock({ $0.stopped }) {
            continuation.finish()
            return stream
        }
        let id = node.addRejectionObserver { continuation.yield($0) }
        let stops = state.withLock { state -> Int in
            state.nextWatcher += 1
            state.rejectionWatchers[state.nextWatcher] = continuation
            return state.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in
            self?.node.removeRejectionObserver(id)
            _ = self?.state.withLock { $0.rejectionWatchers.removeValue(forKey: stops) }
        }
        return stream
    }

    func start() {
        let observer = Observer(session: self)
        let events: @Sendable (LinkEvent) -> Void = { [weak self] event in self?.handle(event) }
        let node = self.node
        // Local commits can end "idle": recompute the status after each.
        let commits = Task { [weak self] in
            var seen = node.store.commits.generation
            while !Task.isCancelled {
                seen = await node.store.commits.wait(after: seen)
                self?.update { _ in }
            }
        }
        task.withLock { $0 = [Task { try? await node.run(observer: observer, events: events) }, commits] }
    }

    func handle(_ event: LinkEvent) {
        update { state in
            switch event {
            case .connecting:
                state.attempting = true
            case .connected:
                state.connected = true
                state.lastError = nil
            case .disconnected(let error):
                state.connected = false
                state.attempting = false
                state.heardHead = false
                state.heardSubscription = false
                if let error, !(error is CancellationError) { state.lastError = "\(error)" }
            }
        }
    }

    /// Changes the state, recomputes the status and tells the watchers.
    func update(_ change: (inout State) -> Void) {
        let localHead = (try? headToPush()) ?? .zero
        let (status, watchers) = state.withLock { state -> (Status?, [AsyncStream<Status>.Continuation]) in
            change(&state)
            let next: Status =
                if !state.connected {
                    state.attempting ? .connecting : .offline(lastError: state.lastError)
                } else if state.heardHead && state.heardSubscription && state.pulled >= state.remoteHead && state.pushed >= localHead {
                    .idle
                } else {
                    .syncing
                }
            guard next != state.status else { return (nil, []) }
            state.status = next
            return (next, Array(state.watchers.values))
        }
        progress.notify()
        if let status { for watcher in watchers { watcher.yield(status) } }
    }

    struct Observer: LinkObserver {
        weak var session: SyncSession?

        func pulled(through cursor: HLCTimestamp, remoteHead: HLCTimestamp) {
            session?.update { state in
                state.pulled = max(state.pulled, cursor)
                state.remoteHead = max(state.remoteHead, remoteHead)
                state.heardHead = true
            }
        }

        func pushed(through cursor: HLCTimestamp) {
            session?.update { state in
                state.pushed = max(state.pushed, cursor)
                state.heardSubscription = true
            }
        }

        func noticed(_ notice: ReplicationError) {
            session?.update { $0.notice = notice }
        }
    }
}

extension Database {
    /// Starts syncing with the server at `url` (`tcp://HOST:PORT`, `ws://HOST:PORT/sync`
    /// or `wss://…`), presenting `token`: this database's writes are pushed, the
    /// server's pulled, over one connection this side opens, until `stop()`.
    ///
    /// `watchOtherProcesses`: also push writes other processes make on the same files
    /// (one read of the log head per 20 ms); in-process writes are pushed at once.
    /// `allowsPlaintext`: permit `tcp://` without TLS files and `ws://` to a host other
    /// than loopback (anyone on the path can read and alter such a link).
    ///
    /// - Throws: `ReplicationError(.malformed)` for a URL that is none of these;
    ///   `.invalidConfiguration` for a secret under `ReplicaNode.minimumSecretBytes` or
    ///   a plain link beyond loopback.
    public func sync(
        with url: String, token: [UInt8], trustRoots: String? = nil, watchOtherProcesses: Bool = false, allowsPlaintext: Bool = false,
        logger: Logger = Logger(label: "topgun.sync"), eventLoopGroup: (any EventLoopGroup)? = nil
    ) throws -> SyncSession {
        try sync(url, token: token, jwt: nil, trustRoots, watchOtherProcesses, allowsPlaintext, logger, eventLoopGroup)
    }

    /// Starts syncing as a user: like `sync(with:token:)`, but the database presents
    /// `jwt` (a JSON Web Token the server verifies) instead of the replicas' secret. The
    /// server's policy decides what it reads and writes; writes it refuses are reverted
    /// here and reported by `SyncSession.rejections()`. Use `wss://` or TLS: the token
    /// is a bearer credential.
    public func sync(
        with url: String, jwt: String, trustRoots: String? = nil, watchOtherProcesses: Bool = false, allowsPlaintext: Bool = false,
        logger: Logger = Logger(label: "topgun.sync"), eventLoopGroup: (any EventLoopGroup)? = nil
    ) throws -> SyncSession {
        try sync(url, token: [], jwt: jwt, trustRoots, watchOtherProcesses, allowsPlaintext, logger, eventLoopGroup)
    }

    private func sync(
        _ url: String, token: [UInt8], jwt: String?, _ trustRoots: String?, _ watchOtherProcesses: Bool, _ allowsPlaintext: Bool,
        _ logger: Logger, _ eventLoopGroup: (any EventLoopGroup)?
    ) throws -> SyncSession {
        guard let server = ReplicaNode.PeerAddress(url: url) else {
            throw ReplicationError(.malformed, "\(url) is not a tcp://, ws:// or wss:// URL")
        }
        let node = try ReplicaNode(
            store: store,
            configuration: .init(
                listen: nil, peers: [server], token: token, push: true, watchOtherProcesses: watchOtherProcesses, trustRoots: trustRoots,
                bearerToken: jwt, allowsPlaintext: allowsPlaintext),
            logger: logger, eventLoopGroup: eventLoopGroup)
        let session = SyncSession(node: node, server: server)
        session.start()
        return session
    }
}

/// What `ReplicaNode.syncOnce(with:timeout:)` moved.
public struct SyncReport: Sendable, Equatable {
    /// Operations from the server that changed this store.
    public var opsPulled: Int
    /// This node's log entries the server acknowledged during the sync.
    public var entriesPushed: Int
    /// What the server reported about this node, if anything (its clock is ahead, so
    /// the server took its writes under its own stamps).
    public var notice: ReplicationError?

    public init(opsPulled: Int, entriesPushed: Int, notice: ReplicationError? = nil) {
        self.opsPulled = opsPulled
        self.entriesPushed = entriesPushed
        self.notice = notice
    }
}

extension ReplicaNode {
    /// One connection to `server`: pulls its log through the head it had when the link
    /// opened and pushes this node's log until the server acknowledged everything
    /// written before the call, then closes.
    ///
    /// - Throws: the connection's or handshake's error (unreachable, refused,
    ///   unsupported version), `ReplicationError(.timeout)` after `timeout`, or
    ///   `.protocolViolation` when the server closed the link before both sides were
    ///   caught up.
    public func syncOnce(with server: PeerAddress, timeout: Duration) async throws -> SyncReport {
        // As a user, only this node's own writes are pushed.
        let localHead =
            configuration.bearerToken != nil
            ? try store.ownEntries(of: store.nodeID, after: nil).last ?? .zero : try store.lastSequence() ?? .zero
        let progress = OnceProgress()
        let deadline = ContinuousClock.now + timeout
        let caughtUp = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.session(with: server, observer: progress) {}
                return false
            }
            group.addTask {
                await progress.waitUntilCaughtUp(localHead: localHead)
                return true
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw ReplicationError(.timeout, "not caught up with \(server) within \(timeout)")
            }
            defer { group.cancelAll() }
            do {
                return try await group.next() ?? false
            } catch {
                // A server that refused this node's writes for its clock said so: that is
                // the error, not the timeout or the closed link it led to.
                if let notice = progress.state.withLock({ $0.notice }) { throw notice }
                throw error
            }
        }
        guard caughtUp else {
            if let notice = progress.state.withLock({ $0.notice }) { throw notice }
            throw ReplicationError(.protocolViolation, "\(server) closed the connection before both sides were caught up")
        }
        let from = progress.state.withLock { $0.firstPushed } ?? localHead
        let pushed = try store.logEntryCount(after: from) - store.logEntryCount(after: localHead)
        // Caught up is not success while a record was left out as damaged: it is
        // removed (`Store.heal`) and fetched from the server by digests.
        if store.hasNotedDamage { try healNotedDamage() }
        if try !store.quarantinedRecords().isEmpty {
            // Within what is left of the timeout, like the rest of the sync.
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { _ = try await self.repair(from: server) }
                group.addTask {
                    try await Task.sleep(until: deadline)
                    throw ReplicationError(.timeout, "damaged records not restored from \(server) within \(timeout)")
                }
                defer { group.cancelAll() }
                try await group.next()
            }
            let left = try store.quarantinedRecords()
            guard left.isEmpty else {
                throw ReplicationError(
                    .damagedData,
                    "\(left.count) damaged records were removed and \(server) does not hold them: \(left.prefix(10).joined(separator: ", "))")
            }
        }
        return SyncReport(opsPulled: statistics.opsApplied, entriesPushed: max(0, pushed), notice: progress.state.withLock { $0.notice })
    }
}

/// Progress of one link, for `syncOnce`.
final class OnceProgress: LinkObserver {
    struct State {
        var pulled: HLCTimestamp?
        var remoteHead: HLCTimestamp = .zero
        var pushed: HLCTimestamp?
        var firstPushed: HLCTimestamp?
        var notice: ReplicationError?
    }

    let state = Mutex(State())
    let changed = ChangeSignal()

    func pulled(through cursor: HLCTimestamp, remoteHead: HLCTimestamp) {
        state.withLock { state in
            state.pulled = max(state.pulled ?? .zero, cursor)
            state.remoteHead = max(state.remoteHead, remoteHead)
        }
        changed.notify()
    }

    func pushed(through cursor: HLCTimestamp) {
        state.withLock { state in
            if state.firstPushed == nil { state.firstPushed = cursor }
            state.pushed = max(state.pushed ?? .zero, cursor)
        }
        changed.notify()
    }

    func noticed(_ notice: ReplicationError) {
        state.withLock { $0.notice = notice }
        changed.notify()
    }

    func waitUntilCaughtUp(localHead: HLCTimestamp) async {
        var seen = changed.generation
        while !Task.isCancelled {
            let done = state.withLock { state in
                guard let pulled = state.pulled, let pushed = state.pushed else { return false }
                return pulled >= state.remoteHead && pushed >= localHead
            }
            if done { return }
            seen = await changed.wait(after: seen)
        }
    }
}
