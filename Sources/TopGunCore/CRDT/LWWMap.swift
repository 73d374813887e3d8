/// An in-memory last-writer-wins map: keys to `LWWRecord`s.
///
/// The store keeps the same records on disk; this type is the reference model that
/// tests and simulations compare the store against, and a convenience for embedders
/// that merge small maps in memory.
public struct LWWMap: Hashable, Sendable {
    public private(set) var records: [String: LWWRecord] = [:]

    public init() {}

    /// Merges `record` into the entry for `key`; returns true when the state changed.
    @discardableResult
    public mutating func merge(key: String, _ record: LWWRecord) -> Bool {
        guard let current = records[key] else {
            records[key] = record
            return true
        }
        guard record.wins(over: current) else { return false }
        records[key] = record
        return true
    }

    /// Merges every record of `other` into `self`.
    public mutating func merge(_ other: LWWMap) {
        for (key, record) in other.records { merge(key: key, record) }
    }

    /// The visible value of `key` at wall time `now`.
    public func value(forKey key: String, at now: UInt64) -> Value? {
        records[key]?.visibleValue(at: now)
    }

    /// Removes tombstones older than `cutoff` (TopGun's `prune`); returns their keys, sorted.
    @discardableResult
    public mutating func pruneTombstones(olderThan cutoff: HLCTimestamp) -> [String] {
        let old = records.filter { $0.value.isTombstone && $0.value.timestamp < cutoff }.keys.sorted()
        for key in old { records.removeValue(forKey: key) }
        return old
    }
}
