/// One entry of a last-writer-wins map (TopGun's `LWWRecord`): a value or a
/// tombstone, the HLC of the write, and an optional time to live.
///
/// Merge keeps the greater record under a total order: timestamp first; for equal
/// timestamps (only after a bug or a reused node id) the greater value digest, then
/// the TTL. TopGun keeps whichever arrived first there, which can diverge; a total
/// order makes merge commutative, associative and idempotent. O(1) plus a digest of
/// the two values when timestamps tie.
public struct LWWRecord: Hashable, Sendable {
    /// The value, or nil for a tombstone (a delete).
    public var value: Value?
    public var timestamp: HLCTimestamp
    /// Milliseconds after `timestamp.millis` at which the value stops being visible.
    public var ttlMillis: UInt64?

    public init(value: Value?, timestamp: HLCTimestamp, ttlMillis: UInt64? = nil) {
        self.value = value
        self.timestamp = timestamp
        self.ttlMillis = ttlMillis
    }

    /// A tombstone written at `timestamp`.
    public static func tombstone(at timestamp: HLCTimestamp) -> LWWRecord {
        LWWRecord(value: nil, timestamp: timestamp)
    }

    public var isTombstone: Bool { value == nil }

    /// The value as seen at wall time `now`: nil for tombstones and expired records
    /// (visible up to and including `millis + ttl`, as in TopGun).
    public func visibleValue(at now: UInt64) -> Value? {
        guard let value else { return nil }
        if let ttl = ttlMillis, ttl > 0, timestamp.millis &+ ttl < now { return nil }
        return value
    }

    /// Digest of the value used for tie-breaks and Merkle entries; 0 for a tombstone.
    public var valueDigest: UInt64 { value?.digest ?? 0 }

    /// True when `self` wins over `other` in the merge order.
    public func wins(over other: LWWRecord) -> Bool {
        LWWOrder.wins(
            timestamp: timestamp, digest: valueDigest, ttl: ttlMillis,
            over: other.timestamp, digest: other.valueDigest, ttl: other.ttlMillis)
    }

    /// Merges `incoming` into `self`.
    ///
    /// - Returns: true when the state changed.
    @discardableResult
    public mutating func merge(_ incoming: LWWRecord) -> Bool {
        guard incoming.wins(over: self) else { return false }
        self = incoming
        return true
    }

    /// The merge of two optional records (nil = no record yet).
    public static func merged(_ a: LWWRecord?, _ b: LWWRecord?) -> LWWRecord? {
        guard var a else { return b }
        guard let b else { return a }
        a.merge(b)
        return a
    }
}

/// The last-writer-wins order: the one rule for LWW values and OR-Map entries alike.
/// The newer HLC wins; on equal HLCs the larger value digest (0 for a tombstone); then
/// the longer TTL. Digests are computed only when the HLCs tie.
public enum LWWOrder {
    @inlinable
    public static func wins(
        timestamp a: HLCTimestamp, digest da: @autoclosure () -> UInt64, ttl ta: UInt64?,
        over b: HLCTimestamp, digest db: @autoclosure () -> UInt64, ttl tb: UInt64?
    ) -> Bool {
        if a != b { return a > b }
        let (x, y) = (da(), db())
        if x != y { return x > y }
        return (ta ?? 0) > (tb ?? 0)
    }
}
