import TopGunCore
import TopGunStore

/// A write a server refused: the policy does not let the pushing principal write that
/// record, or the op was not the client's own. The client returns its record to the
/// server's state (`Store.revert(_:serverState:)`) and reports the refusal.
///
/// On the wire (REJECTED): `reason length u16 | reason | segment`, the segment holding
/// the refused op and, when the client may read it, the server's state of the record.
public struct WriteRejection: Sendable, Equatable {
    public var map: String { operation.map }
    public var key: String { operation.key }
    /// Why, for people: "not permitted: user:alice may not write notes/bob:1".
    public var reason: String
    /// The refused operation, as pushed.
    public var operation: ReplicatedOperation
    /// The server's state of the record when it refused (nil: none, or not readable).
    public var current: ReplicatedOperation?

    public init(reason: String, operation: ReplicatedOperation, current: ReplicatedOperation?) {
        self.reason = reason
        self.operation = operation
        self.current = current
    }

    /// The reason's kind, for metrics: the text before the first colon.
    public var category: String { String(reason.prefix { $0 != ":" }) }

    func frame(origin: NodeID) -> Frame {
        var body: [UInt8] = []
        // At most 1 KiB, cut on a scalar boundary: the reason stays valid UTF-8 (a
        // name can be one Character of 64 KiB).
        var text: [UInt8] = []
        for scalar in reason.unicodeScalars {
            let bytes = Array(String(scalar).utf8)
            if text.count + bytes.count > 1_024 { break }
            text += bytes
        }
        body.appendBigEndian(UInt16(text.count))
        body += text
        var entries = [LoggedOperation(sequence: HLCTimestamp(millis: 1, counter: 0, node: origin), operation: operation)]
        if let current { entries.append(LoggedOperation(sequence: HLCTimestamp(millis: 2, counter: 0, node: origin), operation: current)) }
        body += Segment(origin: origin, entries: entries).encoded()
        return Frame(.rejected, body)
    }

    init(_ frame: Frame) throws(ReplicationError) {
        guard frame.body.count >= 2 else { throw ReplicationError(.malformed, "REJECTED of \(frame.body.count) bytes") }
        let count = Int(frame.body.withUnsafeBytes { $0.loadBigEndian(as: UInt16.self) })
        guard frame.body.count >= 2 + count, let reason = String(validating: frame.body[2..<(2 + count)], as: UTF8.self) else {
            throw ReplicationError(.malformed, "REJECTED reason")
        }
        let segment = try Segment(decoding: Array(frame.body[(2 + count)...]))
        guard let first = segment.entries.first, segment.entries.count <= 2 else { throw ReplicationError(.malformed, "REJECTED operations") }
        let current = segment.entries.count == 2 ? segment.entries[1].operation : nil
        guard current.map({ $0.map == first.operation.map && $0.key == first.operation.key && $0.payload.kind == first.operation.payload.kind }) ?? true
        else {
            throw ReplicationError(.malformed, "REJECTED state is for another record")
        }
        self.init(reason: reason, operation: first.operation, current: current)
    }
}

/// What a server takes from ops a principal pushes: the one rule for segments and
/// repairs (also what the simulation's server applies).
public struct WriteScreen: Sendable {
    public let access: Access
    /// The pushing node; a non-replica may only contribute its own writes.
    public let peer: NodeID
    /// The kind of a map on the server (nil: no such map). Users write only into maps
    /// that exist, with their kind: the first writer of a map fixes its kind for
    /// everyone, so that is the operator's to decide.
    public let kindOf: @Sendable (String) -> CRDTKind?

    public init(access: Access, peer: NodeID, kindOf: @escaping @Sendable (String) -> CRDTKind?) {
        self.access = access
        self.peer = peer
        self.kindOf = kindOf
    }

    public enum Verdict: Sendable {
        case take(ReplicatedOperation)
        /// Nothing of the op is the client's own (state it received from others, sent
        /// back in a repair or after a reconnect): dropped without a word.
        case ignore
        case reject(String)
    }

    /// The part of `op` the principal may contribute, or why not.
    public func screen(_ op: ReplicatedOperation, isRepair: Bool) -> Verdict {
        var op = op
        if !access.principal.isReplica {
            switch op.payload {
            case .lww:
                guard op.timestamp.node == peer else {
                    return isRepair ? .ignore : .reject("foreign origin: \(access.principal) may push only writes stamped with its own node id \(peer)")
                }
            case .orSet(let set):
                // Adds it made itself; removes of any tag it saw (a repair's state holds
                // tombstones it received as well as its own: removing again is a no-op,
                // and a remove the log did not carry must not be lost).
                let own = set.entries.filter { $0.key.node == peer && $0.value.timestamp.node == peer }
                guard !own.isEmpty || !set.tombstones.isEmpty else { return .ignore }
                op.payload = .orSet(ORSet(entries: own, tombstones: set.tombstones))
            case .counter(let counter):
                guard counter.positive[peer] != nil || counter.negative[peer] != nil else { return .ignore }
                op.payload = .counter(
                    PNCounter(positive: counter.positive.filter { $0.key == peer }, negative: counter.negative.filter { $0.key == peer }))
            }
        }
        guard access.mayWrite(map: op.map, key: op.key) else {
            return .reject("not permitted: \(access.principal) may not write \(op.map)/\(op.key)")
        }
        if !access.principal.isReplica {
            guard let kind = kindOf(op.map) else {
                return .reject("unknown map: \(op.map) does not exist on the server (users write only maps an operator created)")
            }
            guard kind == op.payload.kind else { return .reject("kind mismatch: \(op.map) holds \(kind), not \(op.payload.kind)") }
        }
        return .take(op)
    }
}
