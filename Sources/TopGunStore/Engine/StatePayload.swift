import TopGunCore

/// Compact binary payloads of PN-Counter and OR-Map states, in records and in the op
/// log. Merging works on the bytes: no `Value` trees, no dictionaries per op.
///
/// Counter: `count u16`, then `count` × (`node u64`, `positive u64`, `negative u64`),
/// sorted by node, all big-endian.
///
/// OR-Map key: `entries u32`, `tombstones u32`, then entries sorted by tag —
/// (`tag 16 B`, `timestamp 16 B`, `ttl u64` (0 = none), `length u32`, MessagePack
/// value) — then the tombstoned tags, sorted, 16 bytes each.
enum StatePayload {
    static func corrupt(_ what: String) -> StoreError { StoreError(.corruptRecord, what) }

    // MARK: Counter

    static func encode(_ counter: PNCounter, into out: inout [UInt8]) {
        // One node's totals (every delta a replica ships): no set, no sort.
        if counter.positive.count <= 1 && counter.negative.count <= 1 {
            let p = counter.positive.first
            let n = counter.negative.first
            if let node = p?.key ?? n?.key, p == nil || n == nil || p!.key == n!.key {
                out.appendBigEndian(UInt16(1))
                out.appendBigEndian(node.rawValue)
                out.appendBigEndian(p?.value ?? 0)
                out.appendBigEndian(n?.value ?? 0)
                return
            }
        }
        let nodes = Set(counter.positive.keys).union(counter.negative.keys).sorted()
        out.appendBigEndian(UInt16(nodes.count))
        for node in nodes {
            out.appendBigEndian(node.rawValue)
            out.appendBigEndian(counter.positive[node] ?? 0)
            out.appendBigEndian(counter.negative[node] ?? 0)
        }
    }

    static func counterEntries(_ raw: UnsafeRawBufferPointer) throws(StoreError) -> Int {
        guard raw.count >= 2 else { throw corrupt("counter payload of \(raw.count) bytes") }
        let n = Int(raw.loadBigEndian(as: UInt16.self))
        guard raw.count == 2 + n * 24 else { throw corrupt("counter payload length") }
        return n
    }

    /// The per-node totals of a counter payload, read in place: (node, positive, negative).
    static func counterTotals(_ raw: UnsafeRawBufferPointer) throws(StoreError) -> [(NodeID, UInt64, UInt64)] {
        let n = try counterEntries(raw)
        return (0..<n).map { i in (NodeID(loadBE(raw, 2 + i * 24)), loadBE(raw, 2 + i * 24 + 8), loadBE(raw, 2 + i * 24 + 16)) }
    }

    /// The value of a counter payload, read in place; nil when a total overflows or the
    /// value is outside the `Int64` range (the one range rule, `PNCounter.value`).
    static func counterValue(_ raw: UnsafeRawBufferPointer) throws(StoreError) -> Int64? {
        let n = try counterEntries(raw)
        return PNCounter.value(
            adding: 0, by: NodeID(0),
            to: (0..<n).lazy.map { i in (NodeID(loadBE(raw, 2 + i * 24)), loadBE(raw, 2 + i * 24 + 8), loadBE(raw, 2 + i * 24 + 16)) })
    }

    /// The tags of an OR-Map payload's live entries, read without decoding values.
    static func liveTags(_ raw: UnsafeRawBufferPointer) throws(StoreError) -> [HLCTimestamp] {
        var l = ORLayout()
        try layout(raw, into: &l)
        return l.entryOffsets.map { stamp(raw, $0) }
    }

    static func decodeCounter(_ raw: UnsafeRawBufferPointer) throws(StoreError) -> PNCounter {
        let n = try counterEntries(raw)
        var p: [NodeID: UInt64] = [:]
        var m: [NodeID: UInt64] = [:]
        for i in 0..<n {
            let node = NodeID(loadBE(raw, 2 + i * 24))
            p[node] = loadBE(raw, 2 + i * 24 + 8)
            m[node] = loadBE(raw, 2 + i * 24 + 16)
        }
        return PNCounter(positive: p, negative: m)
    }

    /// Per-node maximum of `stored` (nil = empty) and `delta`, into `out`.
    ///
    /// - Returns: true when the result differs from `stored`.
    static func mergeCounter(
        stored: UnsafeRawBufferPointer?, delta: UnsafeRawBufferPointer, into out: inout [UInt8]
    ) throws(StoreError) -> Bool {
        let a = try stored.map { (s) throws(StoreError) in try counterEntries(s) } ?? 0
        let b = try counterEntries(delta)
        out.removeAll(keepingCapacity: true)
        out.appendBigEndian(UInt16(0))
        var i = 0
        var j = 0
        var count = 0
        var changed = false
        while i < a || j < b {
            let na: UInt64 = i < a ? loadBE(stored!, 2 + i * 24) : .max
            let nb: UInt64 = j < b ? loadBE(delta, 2 + j * 24) : .max
            if i < a && (j >= b || na < nb) {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: stored![(2 + i * 24)..<(2 + i * 24 + 24)]))
                i += 1
            } else if j < b && (i >= a || nb < na) {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: delta[(2 + j * 24)..<(2 + j * 24 + 24)]))
                changed = true
                j += 1
            } else {
                let (pa, ma): (UInt64, UInt64) = (loadBE(stored!, 2 + i * 24 + 8), loadBE(stored!, 2 + i * 24 + 16))
                let (pb, mb): (UInt64, UInt64) = (loadBE(delta, 2 + j * 24 + 8), loadBE(delta, 2 + j * 24 + 16))
                if pb > pa || mb > ma { changed = true }
                out.appendBigEndian(na)
                out.appendBigEndian(max(pa, pb))
                out.appendBigEndian(max(ma, mb))
                i += 1
                j += 1
            }
            count += 1
        }
        out.withUnsafeMutableBytes { $0.storeBytes(of: UInt16(count).bigEndian, as: UInt16.self) }
        return changed
    }

    // MARK: OR-Map

    static func encode(_ set: ORSet, into out: inout [UInt8]) {
        out.appendBigEndian(UInt32(set.entries.count))
        out.appendBigEndian(UInt32(set.tombstones.count))
        for (tag, entry) in set.entries.sorted(by: { $0.key < $1.key }) {
            appendEntry(tag: tag, entry: entry, into: &out)
        }
        for tag in set.tombstones.sorted() { appendStamp(tag, &out) }
    }

    static func appendEntry(tag: HLCTimestamp, entry: ORSet.Entry, into out: inout [UInt8]) {
        appendStamp(tag, &out)
        appendStamp(entry.timestamp, &out)
        out.appendBigEndian(entry.ttlMillis ?? 0)
        let lengthAt = out.count
        out.appendBigEndian(UInt32(0))
        entry.value.encode(into: &out)
        let length = UInt32(out.count - lengthAt - 4)
        out.withUnsafeMutableBytes { $0.storeBigEndian(length, toByteOffset: lengthAt) }
    }

    /// Offsets of the entries and of the tombstone list in an OR-Map payload.
    struct ORLayout {
        var entryOffsets: [Int] = []
        var tombstonesAt = 0
        var tombstoneCount = 0
    }

    static func layout(_ raw: UnsafeRawBufferPointer, into layout: inout ORLayout) throws(StoreError) {
        guard raw.count >= 8 else { throw corrupt("OR-Map payload of \(raw.count) bytes") }
        let entries = Int(raw.loadBigEndian(as: UInt32.self))
        let tombstones = Int(raw.loadBigEndian(fromByteOffset: 4, as: UInt32.self))
        guard entries <= raw.count / 44, tombstones <= raw.count / 16 else { throw corrupt("OR-Map counts") }
        layout.entryOffsets.removeAll(keepingCapacity: true)
        var offset = 8
        for _ in 0..<entries {
            guard offset + 44 <= raw.count else { throw corrupt("OR-Map entry truncated") }
            let length = Int(raw.loadBigEndian(fromByteOffset: offset + 40, as: UInt32.self))
            guard offset + 44 + length <= raw.count else { throw corrupt("OR-Map value truncated") }
            layout.entryOffsets.append(offset)
            offset += 44 + length
        }
        guard offset + tombstones * 16 == raw.count else { throw corrupt("OR-Map tombstones length") }
        layout.tombstonesAt = offset
        layout.tombstoneCount = tombstones
    }

    /// The digest of an OR-Map payload: its live entries only. Tombstoned tags are left
    /// out so that a replica that has collected a tag (see `Store.collectGarbage`) and
    /// one that still holds it digest alike: they hold the same values, and a Merkle
    /// difference between them would start a repair that only brings the tag back.
    /// Entries are self-delimiting, so their bytes name the set of entries exactly.
    /// A payload too short to hold the counts digests whole (it then fails checks).
    static func liveDigest(ofORSet raw: UnsafeRawBufferPointer) -> UInt64 {
        guard raw.count >= 8 else { return Digest64.hash(raw) }
        let tombstones = Int(raw.loadBigEndian(fromByteOffset: 4, as: UInt32.self))
        guard tombstones <= (raw.count - 8) / 16 else { return Digest64.hash(raw) }
        return Digest64.hash(UnsafeRawBufferPointer(rebasing: raw[8..<(raw.count - tombstones * 16)]))
    }

    /// The digest a state payload of `kind` is stored and compared under.
    static func digest(of raw: UnsafeRawBufferPointer, kind: CRDTKind) -> UInt64 {
        kind == .orMap ? liveDigest(ofORSet: raw) : Digest64.hash(raw)
    }

    /// Removes `tags` from the tombstones of the OR-Map payload `raw`, writing the result
    /// to `out`. Live entries are untouched, so the digest does not change.
    ///
    /// - Returns: how many tags were removed (0 leaves `out` empty) and the newest.
    static func pruneTombstones(
        _ raw: UnsafeRawBufferPointer, removing tags: Set<HLCTimestamp>, into out: inout [UInt8]
    ) throws(StoreError) -> (count: Int, newest: HLCTimestamp) {
        var l = ORLayout()
        try layout(raw, into: &l)
        out.removeAll(keepingCapacity: true)
        var kept: [Int] = []
        var newest = HLCTimestamp.zero
        for i in 0..<l.tombstoneCount {
            let tag = stamp(raw, l.tombstonesAt + i * 16)
            if tags.contains(tag) { newest = max(newest, tag) } else { kept.append(l.tombstonesAt + i * 16) }
        }
        let removed = l.tombstoneCount - kept.count
        guard removed > 0 else { return (0, .zero) }
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[0..<4]))
        out.appendBigEndian(UInt32(kept.count))
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[8..<l.tombstonesAt]))
        for offset in kept { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + 16)])) }
        return (removed, newest)
    }

    /// True when the well-formed OR-Map payload `raw` holds `tag` among its tombstones
    /// (they are the payload's last, sorted, 16-byte items).
    static func hasTombstone(_ raw: UnsafeRawBufferPointer, _ tag: HLCTimestamp) -> Bool {
        let count = Int(raw.loadBigEndian(fromByteOffset: 4, as: UInt32.self))
        return containsStamp(raw, at: raw.count - count * 16, count: count, tag)
    }

    /// Binary search for `tag` among `count` sorted 16-byte stamps at `start`.
    static func containsStamp(_ raw: UnsafeRawBufferPointer, at start: Int, count: Int, _ tag: HLCTimestamp) -> Bool {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            let t = stamp(raw, start + mid * 16)
            if t == tag { return true }
            if t < tag { lo = mid + 1 } else { hi = mid }
        }
        return false
    }

    static func decodeORSet(_ raw: UnsafeRawBufferPointer) throws(StoreError) -> ORSet {
        var l = ORLayout()
        try layout(raw, into: &l)
        var entries: [HLCTimestamp: ORSet.Entry] = [:]
        for offset in l.entryOffsets {
            let length = Int(raw.loadBigEndian(fromByteOffset: offset + 40, as: UInt32.self))
            let value: Value
            do throws(ValueCodingError) {
                value = try Value(messagePack: UnsafeRawBufferPointer(rebasing: raw[(offset + 44)..<(offset + 44 + length)]))
            } catch {
                throw StoreError(.corruptRecord, "OR-Map value: \(error)", underlying: error)
            }
            let ttl: UInt64 = loadBE(raw, offset + 32)
            entries[stamp(raw, offset)] = ORSet.Entry(value: value, timestamp: stamp(raw, offset + 16), ttlMillis: ttl == 0 ? nil : ttl)
        }
        var tombstones = Set<HLCTimestamp>()
        for i in 0..<l.tombstoneCount { tombstones.insert(stamp(raw, l.tombstonesAt + i * 16)) }
        return ORSet(entries: entries, tombstones: tombstones)
    }

    /// Merges the OR-Map `delta` into `stored` (nil = empty), writing the result to
    /// `out`: tombstones united, entries united minus tombstones, and for a tag on both
    /// sides the greater (timestamp, value digest, ttl).
    ///
    /// - Returns: true when the result differs from `stored`.
    static func mergeORSet(
        stored: UnsafeRawBufferPointer?, delta: ORSet, scratch: inout ORLayout, into out: inout [UInt8]
    ) throws(StoreError) -> Bool {
        if let stored { try layout(stored, into: &scratch) } else { scratch = ORLayout() }
        let tombstonesAt = scratch.tombstonesAt
        let tombstoneCount = scratch.tombstoneCount
        func storedTombstone(_ tag: HLCTimestamp) -> Bool {
            guard let stored else { return false }
            return containsStamp(stored, at: tombstonesAt, count: tombstoneCount, tag)
        }
        let deltaEntries = delta.entries.sorted { $0.key < $1.key }.filter {
            !delta.tombstones.contains($0.key) && !storedTombstone($0.key)
        }
        out.removeAll(keepingCapacity: true)
        out.appendBigEndian(UInt32(0))
        out.appendBigEndian(UInt32(0))
        var changed = false
        var count = 0
        var j = 0
        for offset in scratch.entryOffsets {
            let tag = stamp(stored!, offset)
            while j < deltaEntries.count && deltaEntries[j].key < tag {
                appendEntry(tag: deltaEntries[j].key, entry: deltaEntries[j].value, into: &out)
                changed = true
                count += 1
                j += 1
            }
            let length = Int(stored!.loadBigEndian(fromByteOffset: offset + 40, as: UInt32.self))
            if delta.tombstones.contains(tag) {
                changed = true
                continue
            }
            if j < deltaEntries.count && deltaEntries[j].key == tag {
                let incoming = deltaEntries[j].value
                j += 1
                let current = try decodeEntry(stored!, offset, length)
                if incoming.timestamp != current.timestamp || incoming.value != current.value || incoming.ttlMillis != current.ttlMillis,
                    incoming.wins(over: current)
                {
                    appendEntry(tag: tag, entry: incoming, into: &out)
                    changed = true
                    count += 1
                    continue
                }
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: stored![offset..<(offset + 44 + length)]))
            count += 1
        }
        while j < deltaEntries.count {
            appendEntry(tag: deltaEntries[j].key, entry: deltaEntries[j].value, into: &out)
            changed = true
            count += 1
            j += 1
        }
        // Tombstones: sorted union.
        let newTombstones = delta.tombstones.filter { !storedTombstone($0) }.sorted()
        var t = 0
        var k = 0
        while t < scratch.tombstoneCount || k < newTombstones.count {
            let s: HLCTimestamp? = t < scratch.tombstoneCount ? stamp(stored!, scratch.tombstonesAt + t * 16) : nil
            if let s, k >= newTombstones.count || s < newTombstones[k] {
                appendStamp(s, &out)
                t += 1
            } else {
                appendStamp(newTombstones[k], &out)
                changed = true
                k += 1
            }
        }
        let totalTombstones = UInt32(scratch.tombstoneCount + newTombstones.count)
        out.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt32(count).bigEndian, as: UInt32.self)
            $0.storeBigEndian(totalTombstones, toByteOffset: 4)
        }
        return changed
    }

    static func decodeEntry(_ raw: UnsafeRawBufferPointer, _ offset: Int, _ length: Int) throws(StoreError) -> ORSet.Entry {
        do throws(ValueCodingError) {
            let value = try Value(messagePack: UnsafeRawBufferPointer(rebasing: raw[(offset + 44)..<(offset + 44 + length)]))
            let ttl: UInt64 = loadBE(raw, offset + 32)
            return ORSet.Entry(value: value, timestamp: stamp(raw, offset + 16), ttlMillis: ttl == 0 ? nil : ttl)
        } catch {
            throw StoreError(.corruptRecord, "OR-Map value: \(error)", underlying: error)
        }
    }

    // MARK: Bytes

    @inline(__always)
    static func appendStamp(_ t: HLCTimestamp, _ out: inout [UInt8]) {
        out.appendBigEndian(t.packedTime)
        out.appendBigEndian(t.node.rawValue)
    }

    @inline(__always)
    static func loadBE<T: FixedWidthInteger>(_ raw: UnsafeRawBufferPointer, _ offset: Int) -> T {
        raw.loadBigEndian(fromByteOffset: offset, as: T.self)
    }

    @inline(__always)
    static func stamp(_ raw: UnsafeRawBufferPointer, _ offset: Int) -> HLCTimestamp {
        HLCTimestamp(loadingFrom: raw.baseAddress! + offset)
    }
}
