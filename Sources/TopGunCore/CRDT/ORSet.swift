/// The state of one key of an observed-remove map (TopGun's `ORMap` entry): a
/// multiset of values, each added under a unique tag, plus the tags removed.
///
/// A tag is the HLC of the add. Remove tombstones the tags it observed, so an add
/// concurrent with a remove survives (add wins). Merge unions the tombstones, unions
/// the live entries and drops tombstoned tags; for one tag seen with two contents (only
/// TopGun's `mergeKey` path produces that) the greater (timestamp, value digest) wins,
/// which TopGun's `merge()` would not do. Commutative, associative, idempotent;
/// O(n + m) in the entries and tombstones of the two sides.
public struct ORSet: Hashable, Sendable {
    /// One added value.
    public struct Entry: Hashable, Sendable {
        public var value: Value
        /// When the entry was last written; equals the tag for plain adds.
        public var timestamp: HLCTimestamp
        public var ttlMillis: UInt64?

        public init(value: Value, timestamp: HLCTimestamp, ttlMillis: UInt64? = nil) {
            self.value = value
            self.timestamp = timestamp
            self.ttlMillis = ttlMillis
        }

        /// True when `self` wins over `other` for the same tag (`LWWOrder`).
        public func wins(over other: Entry) -> Bool {
            LWWOrder.wins(
                timestamp: timestamp, digest: value.digest, ttl: ttlMillis,
                over: other.timestamp, digest: other.value.digest, ttl: other.ttlMillis)
        }
    }

    /// Live entries by tag.
    public private(set) var entries: [HLCTimestamp: Entry]
    /// Tags removed; an entry with one of these tags is never (re)admitted.
    public private(set) var tombstones: Set<HLCTimestamp>

    public init(entries: [HLCTimestamp: Entry] = [:], tombstones: Set<HLCTimestamp> = []) {
        self.entries = entries.filter { !tombstones.contains($0.key) }
        self.tombstones = tombstones
    }

    /// True when no live entry remains (tombstones may remain).
    public var isEmpty: Bool { entries.isEmpty }

    /// Live values at wall time `now`, ordered by tag (the same order on every replica).
    public func values(at now: UInt64) -> [Value] {
        entries.sorted { $0.key < $1.key }.compactMap { _, e in
            if let ttl = e.ttlMillis, ttl > 0, e.timestamp.millis &+ ttl < now { return nil }
            return e.value
        }
    }

    /// Adds `value` under `tag` (a fresh HLC).
    ///
    /// - Returns: false if the tag was already removed or holds an entry that wins.
    @discardableResult
    public mutating func add(_ value: Value, tag: HLCTimestamp, ttlMillis: UInt64? = nil) -> Bool {
        apply(tag: tag, entry: Entry(value: value, timestamp: tag, ttlMillis: ttlMillis))
    }

    /// Inserts or replaces the entry under `tag` when it is not tombstoned and wins.
    @discardableResult
    public mutating func apply(tag: HLCTimestamp, entry: Entry) -> Bool {
        if tombstones.contains(tag) { return false }
        if let current = entries[tag], !entry.wins(over: current) { return false }
        entries[tag] = entry
        return true
    }

    /// Removes every observed entry whose value equals `value`.
    ///
    /// - Returns: the tags removed, in tag order.
    @discardableResult
    public mutating func remove(_ value: Value) -> [HLCTimestamp] {
        let tags = entries.filter { $0.value.value == value }.keys.sorted()
        for tag in tags { removeTag(tag) }
        return tags
    }

    /// Tombstones `tag` whether or not it was observed (TopGun's `applyTombstone`).
    @discardableResult
    public mutating func removeTag(_ tag: HLCTimestamp) -> Bool {
        let inserted = tombstones.insert(tag).inserted
        let removed = entries.removeValue(forKey: tag) != nil
        return inserted || removed
    }

    /// Forgets tombstones older than `cutoff` (TopGun's `prune`); safe only once no
    /// replica can still deliver an add with such a tag.
    ///
    /// - Returns: the tags forgotten, in order.
    @discardableResult
    public mutating func pruneTombstones(olderThan cutoff: HLCTimestamp) -> [HLCTimestamp] {
        let old = tombstones.filter { $0 < cutoff }.sorted()
        tombstones.subtract(old)
        return old
    }

    /// Merges `other` into `self`.
    ///
    /// - Returns: true when the state changed.
    @discardableResult
    public mutating func merge(_ other: ORSet) -> Bool {
        var changed = false
        for tag in other.tombstones where !tombstones.contains(tag) {
            tombstones.insert(tag)
            entries.removeValue(forKey: tag)
            changed = true
        }
        for (tag, entry) in other.entries where apply(tag: tag, entry: entry) {
            changed = true
        }
        return changed
    }
}
