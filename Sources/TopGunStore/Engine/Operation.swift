import TopGunCore

/// A replicated operation: a CRDT state change with its origin HLC, as stored in the
/// op log and shipped between replicas. Applying it twice changes nothing.
public struct ReplicatedOperation: Sendable, Equatable {
    /// What the operation carries.
    public enum Payload: Sendable, Equatable {
        /// An LWW write: the canonical MessagePack bytes of the value (nil = delete).
        /// The bytes are stored as they are, never re-encoded.
        case lww(encodedValue: [UInt8]?, ttlMillis: UInt64?)
        /// An OR-Map delta for one key (entries added, tags removed).
        case orSet(ORSet)
        /// PN-Counter totals for one key (usually one node's new totals).
        case counter(PNCounter)

        /// The CRDT kind of the map this payload belongs to (also its wire tag).
        public var kind: CRDTKind {
            switch self {
            case .lww: .lww
            case .orSet: .orMap
            case .counter: .counter
            }
        }
    }

    public var map: String
    public var key: String
    /// The HLC of the write at its origin replica (for LWW, the record's timestamp).
    public var timestamp: HLCTimestamp
    public var payload: Payload

    public init(map: String, key: String, timestamp: HLCTimestamp, payload: Payload) {
        self.map = map
        self.key = key
        self.timestamp = timestamp
        self.payload = payload
    }

    /// An LWW write of `value` (nil deletes).
    public static func lww(
        map: String, key: String, value: Value?, timestamp: HLCTimestamp, ttlMillis: UInt64? = nil
    ) -> ReplicatedOperation {
        ReplicatedOperation(map: map, key: key, timestamp: timestamp, payload: .lww(encodedValue: value?.encoded, ttlMillis: ttlMillis))
    }
}

/// A local change, stamped with a fresh local HLC when the writer applies it.
public enum Mutation: Sendable {
    /// LWW set (nil deletes).
    case set(map: String, key: String, value: Value?, ttlMillis: UInt64?)
    /// LWW set of bytes already in canonical MessagePack (no re-encoding).
    case setEncoded(map: String, key: String, encodedValue: [UInt8]?, ttlMillis: UInt64?)
    /// OR-Map add.
    case add(map: String, key: String, value: Value, ttlMillis: UInt64?)
    /// OR-Map remove of every observed entry equal to `value`.
    case remove(map: String, key: String, value: Value)
    /// OR-Map remove of every observed entry of `key`.
    case removeAll(map: String, key: String)
    /// PN-Counter add (negative decrements).
    case increment(map: String, key: String, by: Int64)
    /// Atomic read-modify-write of an LWW entry inside the write transaction: the
    /// closure gets the current value and returns the new one (nil deletes). Throwing
    /// leaves the entry unchanged and fails only this mutation.
    case update(map: String, key: String, ttlMillis: UInt64?, @Sendable (Value?) throws -> Value?)
}

/// What happened to one operation or mutation of a batch.
public enum ApplyOutcome: Sendable, Equatable {
    /// The state changed; the op was logged under this op-log key.
    case applied(HLCTimestamp)
    /// A duplicate or stale op: nothing changed, nothing was logged.
    case unchanged
    /// Refused; nothing changed.
    case rejected(OperationRejection)
    /// An `update` closure threw; nothing changed.
    case failed(UpdateFailure)
    /// Stamped further ahead of this node's clock than the drift bound, by a user's app
    /// whose clock is ahead: taken under a fresh stamp of this node instead (logged
    /// under this op-log key), so the write is not lost and this clock does not jump.
    /// The app is told to return to the stored state (REJECTED).
    case restamped(HLCTimestamp)

    public var isApplied: Bool {
        switch self {
        case .applied, .restamped: true
        default: false
        }
    }

    /// A refusal that may pass later (clock drift) or needs a repair (GC horizon): a
    /// replication cursor must not move past it.
    public var holdsCursor: Bool {
        switch self {
        case .rejected(.clockDrift), .rejected(.beyondHorizon): true
        default: false
        }
    }
}

/// The error an `update` closure threw, carried back to the writer.
public struct UpdateFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The thrown error's description.
    public var message: String
    /// The thrown error itself.
    public var error: any Error

    public init(_ error: any Error) {
        message = "\(error)"
        self.error = error
    }

    public var description: String { message }

    public static func == (a: UpdateFailure, b: UpdateFailure) -> Bool { a.message == b.message }
}

/// A committed operation read back from the op log.
public struct LoggedOperation: Sendable, Equatable {
    /// The local apply HLC: the op-log key, strictly increasing in commit order.
    public var sequence: HLCTimestamp
    public var operation: ReplicatedOperation

    public init(sequence: HLCTimestamp, operation: ReplicatedOperation) {
        self.sequence = sequence
        self.operation = operation
    }
}
