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
    var step = 0
    /// Every op a node applied locally, as logged: the full history.
    var history: [ReplicatedOperation] = []
    /// Acknowledged local LWW writes: (node, map, key, stamp).
    var acknowledged: [(Int, String, String, HLCTimestamp)] = []
    public private(set) var violations: [String] = []
    let root: String

    public init(seed: UInt64, options: Options = .init()) throws {
        self.seed = seed
        self.options = options
        self.rng = SplitMix64(seed: seed)
        self.root = try makeTemporaryDirectory()
        for i in 0..<options.nodes {
            let clock = ManualWallClock(1_700_000_000_000 + UInt64.random(in: 0..<2_000, using: &rng))
            var node = Node(store: nil, dir: "\(root)/n\(i)", clock: clock, id: NodeID(UInt64(i + 1)))
            node.store = try open(node)
            nodes.append(node)
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

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
        case 92..<95: togglePartition()
        case 95..<97: try collectLog(i)
        case 97: try reusedStamp(i)
        default: try repair(i, from: Int.random(in: 0..<nodes.count, using: &rng))
        }
        for n in nodes { n.clock.advance(by: UInt64.random(in: 0..<5, using: &rng)) }
    }

    func localWrite(_ i: Int) throws {
        guard let store = nodes[i].store else { return }
        let key = "k\(Int.random(in: 0..<options.keys, using: &rng))"
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
        guard let store = nodes[i].store else { return }
        let key = "k\(Int.random(in: 0..<options.keys, using: &rng))"
        guard case .lww(let record)? = try store.state(map: "lww", key: key) else { return }
        let op = ReplicatedOperation.lww(map: "lww", key: key, value: .int(Int64.random(in: 1_000..<2_000, using: &rng)), timestamp: record.timestamp)
        // A stamp refused for drift (this node's clock went back since) never entered
        // the system, so it is not part of the history either.
        if case .rejected = try store.apply([op])[0] { return }
        history.append(op)
    }

    /// Node `from` cuts a segment after `to`'s cursor and puts it on the network.
    func ship(from: Int, to: Int) throws {
        guard from != to, let sender = nodes[from].store, let receiver = nodes[to].store else { return }
        let after = try receiver.peerCursor(nodes[from].id)
        let entries = try sender.operations(after: after, limit: Int.random(in: 1...40, using: &rng))
        guard !entries.isEmpty else { return }
        let bytes = Segment(origin: nodes[from].id, entries: entries).encoded()
        if Int.random(in: 0..<10, using: &rng) == 0 { return }  // dropped
        let message = Message(from: from, to: to, after: after, bytes: bytes, deliverAt: step + Int.random(in: 0..<20, using: &rng))
        network.append(message)
        if Int.random(in: 0..<10, using: &rng) == 0 { network.append(message) }  // duplicated
    }

    /// Delivers one due message, in random order; partitioned links hold theirs.
    func deliver() throws {
        let due = network.indices.filter { network[$0].deliverAt <= step && !partitioned.contains([network[$0].from, network[$0].to].sorted()) }
        guard let pick = due.randomElement(using: &rng) else { return }
        let message = network.remove(at: pick)
        guard let receiver = nodes[message.to].store else { return }
        var bytes = message.bytes
        if Int.random(in: 0..<50, using: &rng) == 0 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= 0x5A }  // corrupted
        let segment: Segment
        do {
            segment = try Segment(decoding: bytes)
        } catch {
            return  // rejected whole: nothing applied
        }
        // Applying out of order is harmless (merges commute); the cursor only moves when
        // the segment continues from it, as on an ordered TCP stream.
        let current = try receiver.peerCursor(nodes[message.from].id)
        if current == message.after {
            _ = try receiver.apply(segment.entries, fromPeer: nodes[message.from].id, cursor: segment.lastSequence)
        } else {
            _ = try receiver.apply(segment.entries.map(\.operation))
        }
    }

    func skewClock(_ i: Int) {
        let clock = nodes[i].clock
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: clock.set(clock.milliseconds() - UInt64.random(in: 0..<5_000, using: &rng))  // backwards
        case 1: clock.advance(by: 120_000)  // beyond the drift limit of its peers
        default: clock.advance(by: UInt64.random(in: 0..<3_000, using: &rng))
        }
    }

    func restart(_ i: Int) throws {
        nodes[i].store = nil
        if Bool.random(using: &rng) { nodes[i].clock.set(nodes[i].clock.milliseconds() - 10_000) }  // rebooted with a slow clock
        nodes[i].store = try open(nodes[i])
    }

    func togglePartition() {
        let a = Int.random(in: 0..<nodes.count, using: &rng)
        let b = Int.random(in: 0..<nodes.count, using: &rng)
        guard a != b else { return }
        let link = [a, b].sorted()
        if partitioned.contains(link) { partitioned.remove(link) } else { partitioned.insert(link) }
    }

    /// Truncates a node's op log to what every other node has applied (peers that fell
    /// behind it later are repaired by Merkle digests).
    func collectLog(_ i: Int) throws {
        guard let store = nodes[i].store else { return }
        var acks: [HLCTimestamp] = []
        for (j, other) in nodes.enumerated() where j != i {
            guard let cursor = try other.store?.peerCursor(nodes[i].id) else { return }
            acks.append(cursor)
        }
        try store.collectGarbage(olderThan: .zero, acknowledged: acks)
    }

    /// Anti-entropy: `to` sends its bucket digests, `from` answers with the records of
    /// differing buckets.
    func repair(_ to: Int, from: Int) throws {
        guard to != from, let receiver = nodes[to].store, let sender = nodes[from].store else { return }
        if partitioned.contains([to, from].sorted()) { return }
        var digests: [String: [UInt16: [UInt64]]] = [:]
        for map in Set(receiver.maps.keys).union(sender.maps.keys) { digests[map] = try receiver.bucketDigests(map: map) }
        let ops = try sender.repairOperations(theirs: digests)
        _ = try receiver.apply(ops)
    }

    // MARK: Healing and invariants

    /// Clocks agree, links heal, and rounds of shipping and repair run until quiescent.
    func heal() throws {
        let now = nodes.map { $0.clock.milliseconds() }.max()! + 1_000
        for n in nodes { n.clock.set(now) }
        partitioned.removeAll()
        network.removeAll()
        for i in nodes.indices where nodes[i].store == nil { nodes[i].store = try open(nodes[i]) }
        // Shipping logs alone must converge: every op reaches every node through the op
        // logs (truncation only drops what all peers applied; refused ops are re-offered).
        for _ in 0..<50 {
            var moved = false
            for to in nodes.indices {
                for from in nodes.indices where from != to {
                    let receiver = nodes[to].store!
                    let sender = nodes[from].store!
                    while true {
                        let after = try receiver.peerCursor(nodes[from].id)
                        let entries = try sender.operations(after: after, limit: 500)
                        guard let last = entries.last else { break }
                        let outcomes = try receiver.apply(entries, fromPeer: nodes[from].id, cursor: last.sequence)
                        if outcomes.contains(where: \.isApplied) { moved = true }
                        if try receiver.peerCursor(nodes[from].id) == after { break }
                    }
                }
            }
            if !moved { break }
        }
        let shipped = try nodes.map { try digests($0.store!) }
        if shipped.contains(where: { $0 != shipped[0] }) { fail("op-log shipping alone did not converge") }
        // Merkle repair then finds nothing to do.
        for to in nodes.indices {
            for from in nodes.indices where from != to { try repair(to, from: from) }
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

    func checkInvariants() throws {
        let states = try nodes.map { try visibleState($0.store!) }
        for i in 1..<states.count where states[i] != states[0] {
            fail("node \(i) differs from node 0: \(diff(states[0], states[i]))")
        }
        let roots = try nodes.map { node in
            try ["lww", "set", "count"].map { map in try (0..<UInt16(Partitioner.partitionCount)).map { try node.store!.merkleRoot(map: map, partition: $0) } }
        }
        for i in 1..<roots.count where roots[i] != roots[0] { fail("node \(i) Merkle roots differ from node 0") }
        // The reference model: every op ever applied locally, merged with Core's CRDTs.
        var lww: [String: LWWRecord] = [:]
        var sets: [String: ORSet] = [:]
        var counters: [String: PNCounter] = [:]
        for op in history {
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
        for (i, map, key, stamp) in acknowledged {
            for (j, node) in nodes.enumerated() {
                guard case .lww(let r)? = try node.store!.state(map: map, key: key) else {
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
