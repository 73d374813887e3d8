import Foundation
import TopGunCore
import TopGunReplication
import TopGunStore
import TopGunTestSupport

/// A deterministic simulation of N replicas: real stores in temporary directories,
/// one seeded generator driving local writes of every CRDT kind, a virtual network
/// that drops, duplicates, delays, reorders and partitions segments (encoded and
/// decoded like on the wire), virtual clocks with skew (beyond the drift limit too),
/// restarts, garbage collection and Merkle repair. `run()` heals everything at the
/// end and returns the invariant violations (empty = all held).
public final class Simulation {
    public struct Options: Sendable {
        public var nodes = 3
        public var steps = 400
        public var keys = 12
        public init() {}
    }

    struct Message {
        let from: Int
        let to: Int
        /// The receiver's cursor the segment was cut after.
        let after: HLCTimestamp?
        let bytes: [UInt8]
        var deliverAt: Int
    }

    /// A live session: `from` streams its log to `to`; `cursor` is where the stream
    /// has read to, `sentThrough` the end of the last segment put on the network.
    struct Session {
        var cursor: HLCTimestamp?
        var sentThrough: HLCTimestamp?
    }

    struct Link: Hashable {
        let from: Int
        let to: Int
    }

    struct Node {
        var store: Store?
        let dir: String
        let clock: ManualWallClock
        let id: NodeID
        var lastIssued: HLCTimestamp = .zero
    }

    public let seed: UInt64
    let options: Options
    var rng: SplitMix64
    var nodes: [Node] = []
    var network: [Message] = []
    var partitioned: Set<[Int]> = []
    var sessions: [Link: Session] = [:]
    /// Each node's replicator state for acknowledgements from its subscribers.
    var trackers: [AcknowledgementTracker] = []
    /// What `to` subscribes to from `from` (partial replicas; absent = everything).
    var scopes: [Link: PeerScope] = [:]
    /// Records changed by Merkle repairs so far (repairs inside sessions are progress).
    var repairsApplied = 0
    /// Wall clocks of nodes away on a clock excursion, to return to.
    var excursions: [Int: UInt64] = [:]
    /// Records damaged on purpose and restored from a peer.
    public var corruptionsHealed = 0
    /// Nodes form a chain 0-1-2-… (only neighbours talk) instead of a full mesh.
    let chain: Bool
    /// App nodes after the servers: no listen address; each connects to node 0 now and
    /// then, pushes its log and pulls node 0's over that connection, and disconnects.
    /// Node 0 learns of an app only when it first connects.
    var clients: Range<Int> = 0..<0
    /// Apps connected now.
    var connected: Set<Int> = []
    var step = 0
    /// Every op a node applied locally, as logged: the full history.
    var history: [ReplicatedOperation] = []
    /// Acknowledged local LWW writes: (node, map, key, stamp).
    var acknowledged: [(Int, String, String, HLCTimestamp)] = []
    /// On some seeds the apps are users (JWT principals `u<i>`) under `policy` instead
    /// of replicas: node 0 filters what it sends them and screens what they push.
    var users = false
    static let policy = try! Policy(
        json: Array(
            #"""
            {"rules": [
              {"who": "role:replica", "maps": "*", "allow": ["read", "write"]},
              {"who": "*", "maps": ["lww", "set"], "keys": "{sub}:*", "allow": ["read", "write"]},
              {"who": "*", "maps": "lww", "keys": "k*", "allow": ["read"]},
              {"who": "*", "maps": "count", "allow": ["read"]}
            ]}
            """#.utf8))
    /// Users' writes node 0 refused, and those it took, by `map/key/stamp`.
    var refused: Set<String> = []
    var taken: Set<String> = []
    public private(set) var violations: [String] = []
    let root: String

    public init(seed: UInt64, options: Options = .init()) throws {
        self.seed = seed
        self.options = options
        self.rng = SplitMix64(seed: seed)
        self.root = try makeTemporaryDirectory()
        self.chain = seed & 1 == 1
        let appCount = seed >> 2 & 1 == 1 ? 1 + Int(seed >> 3 & 1) : 0
        for i in 0..<options.nodes + appCount {
            let clock = ManualWallClock(1_700_000_000_000 + UInt64.random(in: 0..<2_000, using: &rng))
            var node = Node(store: nil, dir: "\(root)/n\(i)", clock: clock, id: NodeID(UInt64(i + 1)))
            node.store = try open(node)
            nodes.append(node)
            trackers.append(AcknowledgementTracker())
        }
        clients = options.nodes..<(options.nodes + appCount)
        users = appCount > 0 && seed >> 4 & 1 == 1
        // Some seeds start with partial replicas, widened later (backfill by digests).
        if seed >> 1 & 1 == 1 {
            let choices: [[String]] = [["lww"], ["set", "count"], ["lww", "set"]]
            for i in nodes.indices {
                for j in nodes.indices where linked(i, j) && Bool.random(using: &rng) {
                    scopes[Link(from: i, to: j)] = PeerScope(maps: choices.randomElement(using: &rng)!)
                }
            }
        }
        // Configured peers: each node has met its neighbours once, so garbage
        // collection waits for them (as `topgun serve` waits for first contact).
        for i in nodes.indices where !clients.contains(i) {
            for j in nodes.indices where linked(i, j) && !clients.contains(j) { try nodes[i].store!.registerPeer(nodes[j].id) }
        }
        // An app knows its server from the start.
        for c in clients { try nodes[c].store!.registerPeer(nodes[0].id) }
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    /// What app `i` may do on node 0, when the apps are users.
    func access(_ i: Int) -> Access? {
        users && clients.contains(i) ? Access(principal: Principal(subject: "u\(i)", roles: []), policy: Self.policy) : nil
    }

    static func identity(_ op: ReplicatedOperation) -> String { "\(op.map)/\(op.key)/\(op.timestamp)" }

    /// A user's write the policy does not allow: refused wherever it is pushed.
    func forbidden(_ op: ReplicatedOperation) -> Bool {
        guard users, let app = nodes.firstIndex(where: { $0.id == op.timestamp.node }), let access = access(app) else { return false }
        return !access.mayWrite(map: op.map, key: op.key)
    }

    /// Node `at` records node `peer` as known: a user's app under its principal.
    func register(_ peer: Int, at: Int) throws {
        if let access = access(peer) {
            guard try nodes[at].store!.claimPeer(nodes[peer].id, user: access.principal.subject) else { return fail("node id of app \(peer) bound elsewhere") }
        } else {
            try nodes[at].store!.registerPeer(nodes[peer].id)
        }
    }

    /// Node 0 screens ops a user's app pushed (as the server's link does), applies
    /// what it takes, and the app reverts what it refused (the REJECTED frames).
    func screened(
        _ entries: [LoggedOperation], from app: Int, isRepair: Bool, _ apply: ([LoggedOperation]) throws -> [ApplyOutcome]
    ) throws -> [ApplyOutcome] {
        let access = access(app)!
        let server = nodes[0].store!
        let screen = WriteScreen(access: access, peer: nodes[app].id, kindOf: { server.kind(ofMap: $0) })
        var kept: [LoggedOperation] = []
        var rejected: [ReplicatedOperation] = []
        for entry in entries {
            switch screen.screen(entry.operation, isRepair: isRepair) {
            case .take(let op): kept.append(LoggedOperation(sequence: entry.sequence, operation: op))
            case .ignore: continue
            case .reject: rejected.append(entry.operation)
            }
        }
        let outcomes = try apply(kept)
        for (outcome, entry) in zip(outcomes, kept) {
            if case .rejected(.beyondHorizon) = outcome {
                rejected.append(entry.operation)
            } else if !outcome.holdsCursor, case .rejected = outcome {
                continue
            } else if !outcome.holdsCursor {
                taken.insert(Self.identity(entry.operation))
            }
        }
        for op in rejected {
            refused.insert(Self.identity(op))
            // A refused state (a repair) stands for the adds it carries.
            if case .orSet(let set) = op.payload {
                for tag in set.entries.keys where tag.node == nodes[app].id { refused.insert("\(op.map)/\(op.key)/\(tag)") }
            }
            let current = access.mayRead(map: op.map, key: op.key) ? try nodes[0].store!.stateOperation(map: op.map, key: op.key) : nil
            try nodes[app].store?.revert(op, serverState: current.flatMap { $0.payload.kind == op.payload.kind ? $0 : nil })
        }
        return outcomes
    }

    func open(_ node: Node) throws -> Store {
        try Store(path: node.dir, options: .init(durability: .noSync, maxClockDriftMillis: 60_000, wallClock: node.clock, nodeID: node.id))
    }

    func fail(_ message: String) { violations.append("seed \(seed) step \(step): \(message)") }

    /// Runs the scenario; returns the violations.
    @discardableResult
    public func run() throws -> [String] {
        for s in 0..<options.steps {
            step = s
            try act()
        }
        try heal()
        try checkInvariants()
        return violations
    }

    // MARK: Actions

    func act() throws {
        let i = Int.random(in: 0..<nodes.count, using: &rng)
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<40: try localWrite(i)
        case 40..<65: try ship(from: Int.random(in: 0..<nodes.count, using: &rng), to: i)
        case 65..<85: try deliver()
        case 85..<89: skewClock(i)
        case 89..<92: try restart(i)
        case 92: togglePartition()
        case 93: toggleApp()
        case 94: try collectLog(i)
        case 95: try collectRetention(i)
        case 96: widen(i)
        case 97: try reusedStamp(i)
        case 98 where Bool.random(using: &rng): try corrupt(i)
        default: try repair(i, from: Int.random(in: 0..<nodes.count, using: &rng))
        }
        for n in nodes { n.clock.advance(by: UInt64.random(in: 0..<5, using: &rng)) }
    }

    func localWrite(_ i: Int) throws {
        guard let store = nodes[i].store else { return }
        var key = "k\(Int.random(in: 0..<options.keys, using: &rng))"
        if users, let owner = clients.randomElement(using: &rng), Bool.random(using: &rng) {
            // Someone's space: a user's own, another user's (refused), or node 0's write
            // into a user's space.
            key = "u\(owner):" + key
        }
        let mutation: Mutation
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: mutation = .set(map: "lww", key: key, value: nil, ttlMillis: nil)
        case 1, 2: mutation = .set(map: "lww", key: key, value: .int(Int64.random(in: 0..<1_000, using: &rng)), ttlMillis: nil)
        case 3: mutation = .add(map: "set", key: key, value: .int(Int64.random(in: 0..<3, using: &rng)), ttlMillis: nil)
        case 4: mutation = .remove(map: "set", key: key, value: .int(Int64.random(in: 0..<3, using: &rng)))
        default: mutation = .increment(map: "count", key: key, by: Int64.random(in: -3...5, using: &rng))
        }
        let before = try store.lastSequence()
        let outcome = try store.apply([mutation])[0]
        guard case .applied(let stamp) = outcome else { return }
        if stamp <= nodes[i].lastIssued { fail("node \(i) issued \(stamp) after \(nodes[i].lastIssued)") }
        nodes[i].lastIssued = stamp
        for entry in try store.operations(after: before) { history.append(entry.operation) }
        if case .set(let map, let key, _, _) = mutation { acknowledged.append((i, map, key, stamp)) }
    }

    /// A buggy peer (or a reused node id) issues a second write with exactly the stamp of
    /// an existing LWW record but another value; it reaches node `i` directly and the
    /// rest through replication. The value-digest tie-break must make everyone agree.
    func reusedStamp(_ i: Int) throws {
        // A user's app pushes only writes stamped with its own id.
        guard let store = nodes[i].store, access(i) == nil else { return }
        let key = "k\(Int.random(in: 0..<options.keys, using: &rng))"
        guard case .lww(let record)? = try store.state(map: "lww", key: key) else { return }
        let op = ReplicatedOperation.lww(map: "lww", key: key, value: .int(Int64.random(in: 1_000..<2_000, using: &rng)), timestamp: record.timestamp)
        // A stamp refused for drift (this node's clock went back since) never entered
        // the system, so it is not part of the history either.
        if case .rejected = try store.apply([op])[0] { return }
        history.append(op)
    }

    /// Whether `a` and `b` talk: servers in a mesh or chain; an app with node 0 only.
    func linked(_ a: Int, _ b: Int) -> Bool {
        if clients.contains(a) || clients.contains(b) { return (a == 0 || b == 0) && a != b }
        return a != b && (!chain || abs(a - b) == 1)
    }

    /// Whether the link between `a` and `b` exists now (an app is connected).
    func reachable(_ a: Int, _ b: Int) -> Bool {
        linked(a, b) && (!clients.contains(a) || connected.contains(a)) && (!clients.contains(b) || connected.contains(b))
    }

    /// An app connects (both ways over one connection) or disconnects (the connection
    /// and everything in flight on it go).
    func toggleApp() {
        guard let app = clients.randomElement(using: &rng) else { return }
        if connected.contains(app) {
            connected.remove(app)
            closeSessions { $0.from == app || $0.to == app }
        } else {
            connected.insert(app)
        }
    }

    /// Node `from` streams the next segment of its log to `to` in their session (opened
    /// on first use, like a connection), and puts it on the network. A session whose
    /// messages sit undelivered is a connection that stays open but stalls.
    func ship(from: Int, to: Int) throws {
        guard reachable(from, to), nodes[from].store != nil, nodes[to].store != nil else { return }
        guard let segment = try nextSegment(from: from, to: to, limit: Int.random(in: 1...40, using: &rng)) else { return }
        if Int.random(in: 0..<10, using: &rng) == 0 { return }  // dropped
        let message = Message(from: from, to: to, after: segment.after, bytes: segment.bytes, deliverAt: step + Int.random(in: 0..<20, using: &rng))
        network.append(message)
        if Int.random(in: 0..<10, using: &rng) == 0 { network.append(message) }  // duplicated
    }

    /// The server side of a session: on open, the subscriber's cursor (a Merkle repair
    /// first when the log was truncated past it); then the log after the stream cursor,
    /// minus what the subscriber already holds.
    func nextSegment(from: Int, to: Int, limit: Int) throws -> (after: HLCTimestamp?, bytes: [UInt8])? {
        let sender = nodes[from].store!
        let link = Link(from: from, to: to)
        let scope = scopes[link] ?? .all
        if sessions[link] == nil {
            // SUBSCRIBE: the server remembers its subscriber from now on (and a server an
            // app connects to, the app, whose log it pulls on the same connection).
            try register(to, at: from)
            try register(from, at: to)
            let receiver = nodes[to].store!
            let cursor = try receiver.peerCursor(nodes[from].id)
            // A cursor taken under a narrower subscription: backfill by digests first.
            if cursor != nil, !(try receiver.peer(nodes[from].id)?.scope?.covers(scope) ?? false) {
                let head = try sender.logHead()
                guard try repair(to, from: from) else { return nil }
                try receiver.recordRepair(fromPeer: nodes[from].id, through: head, scope: scope)
            }
            let resumed = try receiver.peerCursor(nodes[from].id)
            sessions[link] = Session(cursor: resumed, sentThrough: resumed)
        }
        var session = sessions[link]!
        defer { sessions[link] = session }
        while true {
            switch try sender.readLog(after: session.cursor, limit: limit) {
            case .truncated:
                // The log no longer holds what the stream needs: repair, then go on
                // after the head read before the repair.
                let head = try sender.logHead()
                guard try repair(to, from: from) else {
                    // Something was refused: the cursor stays, the session ends, and a
                    // later session offers it again.
                    sessions[link] = nil
                    return nil
                }
                try nodes[to].store!.recordRepair(fromPeer: nodes[from].id, through: head, scope: scope)
                session.cursor = head
                session.sentThrough = try nodes[to].store!.peerCursor(nodes[from].id)
            case .operations(let entries, let readThrough):
                guard let last = readThrough else { return nil }
                session.cursor = last
                // A user reads what the policy grants; a user's app pushes its own writes.
                let reader = access(to)
                let ownOnly = access(from) != nil
                let wanted = entries.filter {
                    (scope.maps.isEmpty || scope.maps.contains($0.operation.map))
                        && (reader?.mayRead(map: $0.operation.map, key: $0.operation.key) ?? true)
                        && (!ownOnly || $0.operation.timestamp.node == nodes[from].id)
                }
                if wanted.isEmpty && reader == nil && !ownOnly { continue }
                // The subscriber's cursor becomes where the log was read (filtered
                // entries included, as the link does).
                let after = session.sentThrough
                session.sentThrough = last
                return (after, Segment(origin: nodes[from].id, entries: wanted, through: last).encoded())
            }
        }
    }

    /// The subscriber's side of a segment: applied with its cursor when it continues
    /// from it (an ordered stream), else merged alone; then acknowledged.
    @discardableResult
    func receive(_ bytes: [UInt8], from: Int, to: Int, after: HLCTimestamp?) throws -> [ApplyOutcome] {
        guard let receiver = nodes[to].store else { return [] }
        let segment: Segment
        do {
            segment = try Segment(decoding: bytes)
        } catch {
            return []  // rejected whole: nothing applied
        }
        guard try receiver.peerCursor(nodes[from].id) == after else {
            if access(from) != nil {
                return try screened(segment.entries, from: from, isRepair: false) { try receiver.apply($0.map(\.operation)) }
            }
            return try receiver.apply(segment.entries.map(\.operation))
        }
        let scope = scopes[Link(from: from, to: to)] ?? .all
        let outcomes =
            access(from) != nil
            ? try screened(segment.entries, from: from, isRepair: false) {
                try receiver.apply($0, fromPeer: nodes[from].id, cursor: segment.lastSequence, scope: scope)
            }
            : try receiver.apply(segment.entries, fromPeer: nodes[from].id, cursor: segment.lastSequence, scope: scope)
        // The acknowledgement is the stored cursor: it stops before a refused entry. A
        // partial subscriber's never counts for garbage collection.
        if scope == .all, let cursor = try receiver.peerCursor(nodes[from].id) {
            trackers[from].record(nodes[to].id, acked: cursor, peerHead: try receiver.lastSequence())
        }
        if outcomes.contains(where: \.holdsCursor) {
            // A held cursor must not be passed by the session's next segments: the
            // subscriber ends the session and the refused entry is offered again later.
            closeSessions { $0 == Link(from: from, to: to) }
        }
        return outcomes
    }

    /// Delivers one due message, in random order; partitioned links hold theirs.
    func deliver() throws {
        let due = network.indices.filter { network[$0].deliverAt <= step && !partitioned.contains([network[$0].from, network[$0].to].sorted()) }
        guard let pick = due.randomElement(using: &rng) else { return }
        let message = network.remove(at: pick)
        var bytes = message.bytes
        if Int.random(in: 0..<50, using: &rng) == 0 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= 0x5A }  // corrupted
        try receive(bytes, from: message.from, to: message.to, after: message.after)
    }

    /// Node `i` restarts its links with a subscription to everything.
    func widen(_ i: Int) {
        for link in scopes.keys where link.to == i { scopes[link] = nil }
        closeSessions { $0.to == i }
    }

    func skewClock(_ i: Int) {
        let clock = nodes[i].clock
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: clock.set(clock.milliseconds() - UInt64.random(in: 0..<5_000, using: &rng))  // backwards
        case 1: clock.advance(by: 120_000)  // beyond the drift limit of its peers
        case 2:
            // An excursion of a day, and later the return.
            if let away = excursions.removeValue(forKey: i) {
                clock.set(away)
            } else {
                excursions[i] = clock.milliseconds()
                clock.advance(by: 86_400_000)
            }
        default: clock.advance(by: UInt64.random(in: 0..<3_000, using: &rng))
        }
    }

    /// Disk damage on node `i`: a record that another replica holds in the same state
    /// fails its digest. The node heals as a replica node does when a reader meets the
    /// damage — it removes the record and repairs from a peer — and gets the record back.
    func corrupt(_ i: Int) throws {
        guard let store = nodes[i].store, !clients.contains(i) else { return }
        let key = "k\(Int.random(in: 0..<options.keys, using: &rng))"
        // A record stamped beyond this node's drift bound (its clock came back from an
        // excursion) would come back only once the clocks agree: not this case.
        guard let state = try store.state(map: "lww", key: key), case .lww(let record) = state,
            record.timestamp.millis <= nodes[i].clock.milliseconds() + 60_000
        else { return }
        let holder = nodes.indices.first { j in
            j != i && !clients.contains(j) && reachable(i, j) && !partitioned.contains([i, j].sorted())
                && (try? nodes[j].store?.state(map: "lww", key: key)) == state
        }
        guard let holder else { return }
        try Damage.breakRecord(store, "lww", key)
        if (try? store.state(map: "lww", key: key)) != nil { fail("a damaged record lww/\(key) was read as whole") }
        let report = try store.heal()
        if report.quarantined != ["lww/\(key)"] { fail("heal removed \(report.quarantined), not lww/\(key)") }
        _ = try repair(i, from: holder)
        if try store.state(map: "lww", key: key) != state { fail("lww/\(key) did not come back from node \(holder)") }
        if try !store.quarantinedRecords().isEmpty { fail("records still quarantined: \(try store.quarantinedRecords())") }
        corruptionsHealed += 1
    }

    func restart(_ i: Int) throws {
        closeSessions { $0.from == i || $0.to == i }
        nodes[i].store = nil
        if Bool.random(using: &rng) { nodes[i].clock.set(nodes[i].clock.milliseconds() - 10_000) }  // rebooted with a slow clock
        nodes[i].store = try open(nodes[i])
    }

    func togglePartition() {
        let a = Int.random(in: 0..<nodes.count, using: &rng)
        let b = Int.random(in: 0..<nodes.count, using: &rng)
        guard a != b else { return }
        let link = [a, b].sorted()
        if partitioned.contains(link) {
            partitioned.remove(link)
        } else {
            partitioned.insert(link)
            // Some cut connections are noticed (closed); others stay open and stall.
            if Bool.random(using: &rng) { closeSessions { Set([$0.from, $0.to]) == Set(link) } }
        }
    }

    func closeSessions(_ matches: (Link) -> Bool) {
        for link in sessions.keys where matches(link) { sessions[link] = nil }
        network.removeAll { matches(Link(from: $0.from, to: $0.to)) }
    }

    /// Collects what every known peer has acknowledged, at any age.
    func collectLog(_ i: Int) throws {
        try collectGarbage(i, cutoff: HLCTimestamp(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0)))
    }

    /// Time-based retention as `topgun serve --retention` runs it: a cutoff some time in
    /// the past; acknowledgements still gate everything.
    func collectRetention(_ i: Int) throws {
        let now = nodes[i].clock.milliseconds()
        try collectGarbage(i, cutoff: HLCTimestamp(millis: now > 300 ? now - 300 : 0, counter: 0, node: NodeID(0)))
    }

    func collectGarbage(_ i: Int, cutoff: HLCTimestamp) throws {
        guard let store = nodes[i].store else { return }
        let confirmed = try trackers[i].confirmed { try store.peerCursor($0) }
        var report = try store.collectGarbage(olderThan: cutoff, acknowledgements: confirmed)
        while report.hasMore { report = try store.collectGarbage(olderThan: cutoff) }
    }

    /// Anti-entropy: `to` sends its bucket digests, `from` answers with the records of
    /// differing buckets.
    @discardableResult
    func repair(_ to: Int, from: Int) throws -> Bool {
        guard reachable(to, from), let receiver = nodes[to].store, let sender = nodes[from].store else { return false }
        if partitioned.contains([to, from].sorted()) { return false }
        var digests: [String: [UInt16: [UInt64]]] = [:]
        // Digests node 0 sends a user's app cover what the user may read; the records
        // node 0 sends it, too.
        let pusher = access(from)
        for map in Set(receiver.maps.keys).union(sender.maps.keys) {
            digests[map] = try receiver.bucketDigests(map: map, pusher?.readable(in: map) ?? .all)
        }
        let reader = access(to)
        let ops = try sender.repairOperations(theirs: digests, visible: reader.map { access in { @Sendable map in access.readable(in: map) } })
        let outcomes =
            pusher != nil
            ? try screened(ops.map { LoggedOperation(sequence: .zero, operation: $0) }, from: from, isRepair: true) {
                try receiver.apply($0.map(\.operation), repairFrom: nodes[from].id)
            }
            : try receiver.apply(ops, repairFrom: nodes[from].id)
        repairsApplied += outcomes.filter(\.isApplied).count
        return !outcomes.contains(where: \.holdsCursor)
    }

    // MARK: Healing and invariants

    /// Clocks agree, links heal, and rounds of shipping and repair run until quiescent.
    func heal() throws {
        // Past every wall clock and every stamp issued (a clock set back keeps issuing
        // stamps ahead of it), so nothing is refused for drift any more.
        let stamps = nodes.compactMap { $0.store?.clockHighWater.millis }
        let now = max(nodes.map { $0.clock.milliseconds() }.max()!, stamps.max() ?? 0) + 1_000
        for n in nodes { n.clock.set(now) }
        partitioned.removeAll()
        // Messages still in flight arrive (in order per link) before the logs are read.
        network.sort { $0.deliverAt < $1.deliverAt }
        while !network.isEmpty {
            let message = network.removeFirst()
            try receive(message.bytes, from: message.from, to: message.to, after: message.after)
        }
        for i in nodes.indices where nodes[i].store == nil { nodes[i].store = try open(nodes[i]) }
        for i in nodes.indices { widen(i) }
        connected = Set(clients)
        // Shipping logs alone must converge: every op reaches every node through the
        // sessions along the links (stalled ones resume where they were).
        try shipUntilQuiet()
        // Visible state, not digests: a tombstone one node collected and another still
        // holds is no divergence.
        let states = try nodes.map { try visibleState($0.store!) }
        if nodes.indices.contains(where: { states[$0] != expected($0, states[0]) }) {
            let peers = try nodes.map { node in try node.store!.peers().map { "\($0.node.rawValue):\($0.cursor):r\($0.refusedBeyondHorizon)" } }
            fail("op-log shipping alone did not converge: \((1..<states.count).map { diff(expected($0, states[0]), states[$0]) }) peers \(peers) horizons \(nodes.map { $0.store!.garbageCollectionHorizon }) chain \(chain)")
        }
        // Merkle repair then finds nothing to do.
        for to in nodes.indices {
            for from in nodes.indices where linked(from, to) { try repair(to, from: from) }
        }
        // Everyone has applied everything: with every acknowledgement in, all nodes
        // collect the same tombstones, and then even the digests agree.
        for _ in 0..<2 {
            try shipUntilQuiet()
            for i in nodes.indices {
                let store = nodes[i].store!
                var acks: [NodeID: HLCTimestamp] = [:]
                for j in nodes.indices where linked(i, j) {
                    acks[nodes[j].id] = min(try nodes[j].store!.peerCursor(nodes[i].id) ?? .zero, try store.lastSequence() ?? .zero)
                }
                var report = try store.collectGarbage(olderThan: .init(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0)), acknowledgements: acks)
                while report.hasMore { report = try store.collectGarbage(olderThan: .init(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0))) }
            }
        }
    }

    /// Rounds of shipping along every link until nothing changes any more.
    func shipUntilQuiet() throws {
        for _ in 0..<50 {
            var moved = false
            let repairedBefore = repairsApplied
            for to in nodes.indices {
                for from in nodes.indices where linked(from, to) {
                    while let segment = try nextSegment(from: from, to: to, limit: 500) {
                        let outcomes = try receive(segment.bytes, from: from, to: to, after: segment.after)
                        if outcomes.contains(where: \.isApplied) { moved = true }
                        // The subscriber ended the session over a refused entry.
                        if sessions[Link(from: from, to: to)] == nil { break }
                    }
                    // Refused entries are offered again on the next connection.
                    sessions[Link(from: from, to: to)] = nil
                }
            }
            if repairsApplied != repairedBefore { moved = true }
            if !moved { break }
        }
    }

    func digests(_ store: Store) throws -> [String: [UInt16: [UInt64]]] {
        var out: [String: [UInt16: [UInt64]]] = [:]
        for map in store.maps.keys { out[map] = try store.bucketDigests(map: map) }
        return out
    }

    func visibleState(_ store: Store) throws -> [String: [String: String]] {
        var out: [String: [String: String]] = [:]
        for map in ["lww", "set", "count"] {
            var m: [String: String] = [:]
            try store.scan(map: map) { key, state in
                switch state {
                case .lww(let r): if let v = r.value { m[key] = v.json }
                case .orMap(let s): if !s.isEmpty { m[key] = Value.array(s.values(at: 0)).json }
                case .counter(let c): m[key] = String(c.value)
                }
                return true
            }
            out[map] = m
        }
        return out
    }

    /// What node `i` should hold when converged with node 0's `state`: all of it, or
    /// for a user's app what the policy lets it read.
    func expected(_ i: Int, _ state: [String: [String: String]]) -> [String: [String: String]] {
        guard let access = access(i) else { return state }
        var out = state
        for (map, records) in state { out[map] = records.filter { access.mayRead(map: map, key: $0.key) } }
        return out
    }

    func checkInvariants() throws {
        let states = try nodes.map { try visibleState($0.store!) }
        for i in 1..<states.count where states[i] != expected(i, states[0]) {
            fail("node \(i) differs from node 0: \(diff(expected(i, states[0]), states[i]))")
        }
        // Users: no app holds a record its principal may not read, and no write node 0
        // refused survives anywhere.
        let lost = refused.subtracting(taken)
        for i in nodes.indices {
            if let access = access(i) {
                for (map, records) in states[i] {
                    for key in records.keys where !access.mayRead(map: map, key: key) { fail("app \(i) holds \(map)/\(key), which it may not read") }
                }
            }
            try nodes[i].store!.scan(map: "count") { key, state in
                if case .counter(let c) = state, users, clients.contains(where: { c.positive[nodes[$0].id] != nil || c.negative[nodes[$0].id] != nil }) {
                    fail("node \(i) holds a user's refused increment of count/\(key)")
                }
                return true
            }
            for id in lost {
                let parts = id.split(separator: "/", maxSplits: 2).map(String.init)
                switch try nodes[i].store!.state(map: parts[0], key: parts[1]) {
                case .lww(let r)?: if "\(r.timestamp)" == parts[2] { fail("node \(i) holds the refused write \(id)") }
                case .orMap(let set)?: if set.entries.keys.contains(where: { "\($0)" == parts[2] }) { fail("node \(i) holds the refused add \(id)") }
                default: break
                }
            }
        }
        let servers = nodes.indices.filter { access($0) == nil }
        let roots = try servers.map { i in
            try ["lww", "set", "count"].map { map in try (0..<UInt16(Partitioner.partitionCount)).map { try nodes[i].store!.merkleRoot(map: map, partition: $0) } }
        }
        for i in 1..<roots.count where roots[i] != roots[0] {
            fail("node \(servers[i]) Merkle roots differ from node 0")
        }
        // The reference model: every op ever applied locally, merged with Core's CRDTs.
        var lww: [String: LWWRecord] = [:]
        var sets: [String: ORSet] = [:]
        var counters: [String: PNCounter] = [:]
        for op in history where !lost.contains(Self.identity(op)) && !forbidden(op) {
            switch op.payload {
            case .lww(let encoded, let ttl):
                let value = try encoded.map { try Value(messagePack: $0) }
                lww[op.key] = LWWRecord.merged(lww[op.key], LWWRecord(value: value, timestamp: op.timestamp, ttlMillis: ttl))
            case .orSet(let d): sets[op.key, default: ORSet()].merge(d)
            case .counter(let d): counters[op.key, default: PNCounter()].merge(d)
            }
        }
        var model: [String: [String: String]] = ["lww": [:], "set": [:], "count": [:]]
        for (k, r) in lww { if let v = r.value { model["lww"]![k] = v.json } }
        for (k, s) in sets where !s.isEmpty { model["set"]![k] = Value.array(s.values(at: 0)).json }
        for (k, c) in counters { model["count"]![k] = String(c.value) }
        if states[0] != model { fail("replicas differ from the reference model: \(diff(model, states[0]))") }
        // No acknowledged write lost: every acknowledged LWW write is the final record
        // or lost to a newer one.
        for (i, map, key, stamp) in acknowledged where !lost.contains("\(map)/\(key)/\(stamp)") && !(access(i).map { !$0.mayWrite(map: map, key: key) } ?? false) {
            for (j, node) in nodes.enumerated() where access(j)?.mayRead(map: map, key: key) ?? true {
                guard case .lww(let r)? = try node.store!.state(map: map, key: key) else {
                    // Absent is fine only where a newer tombstone superseded it and was
                    // collected.
                    if let final = lww[key], final.value == nil, final.timestamp >= stamp, node.store!.garbageCollectionHorizon >= final.timestamp {
                        continue
                    }
                    fail("write \(stamp) by node \(i) to \(key) missing on node \(j)")
                    continue
                }
                if r.timestamp < stamp { fail("write \(stamp) by node \(i) to \(key) regressed to \(r.timestamp) on node \(j)") }
            }
        }
        for node in nodes {
            let report = try node.store!.check()
            for p in report.problems { fail("check on \(node.id): \(p)") }
        }
    }

    func diff(_ a: [String: [String: String]], _ b: [String: [String: String]]) -> String {
        var out: [String] = []
        for map in Set(a.keys).union(b.keys).sorted() {
            let x = a[map] ?? [:]
            let y = b[map] ?? [:]
            for key in Set(x.keys).union(y.keys).sorted() where x[key] != y[key] {
                out.append("\(map)/\(key): \(x[key] ?? "-") vs \(y[key] ?? "-")")
            }
        }
        return out.prefix(5).joined(separator: "; ")
    }
}

extension Simulation {
    /// A digest of the final visible state, to compare runs.
    public var fingerprint: String {
        guard let state = try? visibleState(nodes[0].store!) else { return "" }
        return state.keys.sorted().map { map in map + ":" + state[map]!.keys.sorted().map { "\($0)=\(state[map]![$0]!)" }.joined(separator: ",") }.joined(separator: ";")
    }
}
