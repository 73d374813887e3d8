import LMDB
import TopGunCore

/// What one garbage-collection step removed.
public struct GarbageCollectionReport: Sendable, Equatable {
    /// LWW tombstones removed from `records`.
    public var tombstonesRemoved = 0
    /// OR-Map tombstoned tags removed from their records.
    public var tagsRemoved = 0
    /// Op-log entries removed.
    public var logEntriesRemoved = 0
    /// LWW entries removed because a later write of their record superseded them (no
    /// reader ships them; see `Store.collectGarbage`), counted apart from the above.
    public var supersededRemoved = 0
    /// True when the step stopped at its bound and more may remain.
    public var hasMore = false
    /// The known peer whose acknowledgement holds collection back (it has not applied
    /// entries old enough to go), if any.
    public var waitingFor: NodeID?

    public init() {}
}

extension Store {
    /// Removes op-log entries, and the LWW tombstones they logged, once they are both
    /// older than `cutoff` and acknowledged by every known peer.
    ///
    /// The rule, safe by construction: an entry goes only when every replica in
    /// `peers` (those this store pulls from and those that pull from it, persisted
    /// across restarts) has applied it, and — so that an older write still travelling
    /// through that peer cannot arrive later — this store has pulled the peer's own log
    /// up to where it stood when it acknowledged (the replicator checks the second part
    /// before it passes an acknowledgement here). A peer that never acknowledges holds
    /// collection back until `forgetPeer` declares it gone. `cutoff` is a minimum age
    /// (time-based retention), never a reason to remove something unacknowledged.
    ///
    /// A tombstone is removed together with the log entry that wrote it, if it is still
    /// the record's state. The newest removed tombstone stamp becomes the GC horizon
    /// (persisted): an LWW op older than the horizon for a key without a record may be
    /// a write that tombstone superseded, so it is refused as `.beyondHorizon` — loudly:
    /// a peer cursor stops before it and the refusal is counted on the peer's record.
    /// Under this rule that only happens with a replica that was not known or was
    /// forgotten; `apply(_:overridingHorizon:)` is the operator's repair.
    ///
    /// Then, whatever the acknowledgements, the step goes on through the rest of the log
    /// and removes LWW entries that a later write of their record superseded: readers
    /// step over them (`operations(after:)`), so no peer needs them, and the log stays
    /// near one entry per record. This pass reads at most what the step has left of
    /// `maxSteps`, resumes where the last step stopped and starts over at the end of
    /// the log; it keeps the log's last entry, and it never sets `hasMore`.
    ///
    /// - Parameters:
    ///   - cutoff: usually `now - retention`.
    ///   - acknowledgements: newly confirmed positions of peers in this store's log;
    ///     merged into `peers` (they only move forward) in the same transaction.
    ///   - maxSteps: most log entries removed by one call; call again while `hasMore`.
    @discardableResult
    public func collectGarbage(
        olderThan cutoff: HLCTimestamp, acknowledgements: [NodeID: HLCTimestamp] = [:], maxSteps: Int = 10_000
    ) throws -> GarbageCollectionReport {
        try write { txn in
            var report = GarbageCollectionReport()
            let wall = options.wallClock.milliseconds()
            // A peer cannot have applied more than this log holds (a hostile ack could
            // claim anything).
            let head = try lastSequence(in: txn.reads) ?? .zero
            for (peer, acked) in acknowledgements {
                try Self.updatePeer(peer, txn, dbs) { state, _ in
                    state.acknowledged = max(state.acknowledged, min(acked, head))
                    state.lastSeenMillis = wall
                }
            }
            var limit = cutoff
            var slowest: PeerState?
            try txn.forEach(in: dbs.peers) { k, v in
                guard k.byteCount == 8 else { return true }
                let node = k.withUnsafeBytes { NodeID($0.loadBigEndian(as: UInt64.self)) }
                let state = v.withUnsafeBytes { PeerState(node: node, $0) } ?? PeerState(node: node)
                if slowest == nil || state.acknowledged < slowest!.acknowledged { slowest = state }
                return true
            }
            if let slowest, slowest.acknowledged.successor < limit {
                limit = slowest.acknowledged.successor
                report.waitingFor = slowest.node
            }

            var horizon = self.horizon.withLock { $0 }
            var merkle = MerkleDeltas()
            var truncated: HLCTimestamp?
            var recordKey: [UInt8] = []
            try txn.withCursor(on: dbs.oplog) { cursor in
                var more = try cursor.first()
                while more {
                    guard cursor.currentKey.count == 16 else { throw StoreError(.corruptRecord, "op-log key during GC") }
                    let key = HLCTimestamp(loadingFrom: cursor.currentKey.baseAddress!)
                    guard key < limit else { break }
                    guard report.logEntriesRemoved < maxSteps else {
                        report.hasMore = true
                        break
                    }
                    switch try Self.loggedRemoval(cursor.currentValue, into: &recordKey) {
                    case nil:
                        break
                    case let (.tags(payloadAt), _, _)?:
                        let delta = UnsafeRawBufferPointer(rebasing: cursor.currentValue[payloadAt...])
                        let collected = try recordKey.withUnsafeBytes { try Self.collectTags(key: $0, delta: delta, txn, dbs) }
                        report.tagsRemoved += collected.count
                        horizon = max(horizon, collected.newest)
                    case let (.tombstone(origin), mapID, partition)?:
                        let removed = try recordKey.withUnsafeBytes { k -> Bool in
                            let current = try txn.withValue(forKey: k, in: dbs.records) { RecordHeader($0) } ?? nil
                            guard let current, current.flags.contains(.tombstone), current.timestamp == origin else {
                                return false
                            }
                            let keyHash = Layout.keyHash(ofRecordKey: k)
                            merkle.replace(
                                mapID: mapID, partition: partition, keyHash: keyHash, kind: .lww, old: (current.timestamp, current.digest), new: nil)
                            return try txn.delete(k, in: dbs.records)
                        }
                        if removed {
                            report.tombstonesRemoved += 1
                            horizon = max(horizon, origin)
                        }
                    }
                    try txn.deleteEntry(at: &cursor)
                    report.logEntriesRemoved += 1
                    truncated = key
                    // LMDB leaves a cursor on the following entry after a delete;
                    // MDB_NEXT then returns that entry rather than skipping it.
                    more = try cursor.next()
                }
            }
            if !report.hasMore {
                try compactSuperseded(after: truncated, budget: maxSteps - report.logEntriesRemoved, &report, txn)
            }
            try merkle.write(txn, dbs.merkle)
            try txn.put(horizon.bytes, forKey: Layout.Meta.horizon, in: dbs.meta)
            try txn.put([UInt8](bigEndian: wall), forKey: Layout.Meta.gcLastRun, in: dbs.meta)
            if let truncated { try txn.put(truncated.bytes, forKey: Layout.Meta.truncated, in: dbs.meta) }
            self.horizon.withLock { $0 = max($0, horizon) }
            return report
        }
    }

    /// Removes LWW log entries that a later write of their record superseded: the
    /// second pass of `collectGarbage` alone. Safe at any time on any node, apps
    /// included — no reader ships such entries — so it needs no retention and waits for
    /// no acknowledgement. Reads at most `maxSteps` entries, from where the last pass
    /// stopped.
    ///
    /// - Returns: how many entries it removed.
    @discardableResult
    public func compactLog(maxSteps: Int = 10_000) throws -> Int {
        try write { txn in
            var report = GarbageCollectionReport()
            try compactSuperseded(after: nil, budget: maxSteps, &report, txn)
            return report.supersededRemoved
        }
    }

    /// Removes superseded LWW entries (see `collectGarbage`), reading at most `budget`
    /// entries from where the last pass stopped (`Layout.Meta.compactedThrough`), and
    /// not before `start`.
    func compactSuperseded(
        after start: HLCTimestamp?, budget: Int, _ report: inout GarbageCollectionReport, _ txn: borrowing WriteTransaction
    ) throws {
        guard budget > 0, let head = try lastSequence(in: txn.reads) else { return }
        let resume = try txn.value(forKey: Layout.Meta.compactedThrough, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) }
        // Nothing is superseded without a later entry: a pass that would start over on a
        // log whose head has not moved since the last full pass has nothing to find.
        let lastFullPass = try txn.value(forKey: Layout.Meta.compactedHead, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) }
        if resume == nil && lastFullPass == head { return }
        let from = [start, resume].compactMap { $0 }.max()
        var recordKey: [UInt8] = []
        var read = 0
        var reachedEnd = false
        var last: HLCTimestamp?
        try txn.withCursor(on: dbs.oplog) { cursor in
            var more = try from.map { (f) throws(LMDBError) in try cursor.seek(atLeast: f.successor.bytes) } ?? cursor.first()
            while more && read < budget {
                guard cursor.currentKey.count == 16 else { throw StoreError(.corruptRecord, "op-log key during GC") }
                let key = HLCTimestamp(loadingFrom: cursor.currentKey.baseAddress!)
                read += 1
                last = key
                if key != head, try isSuperseded(cursor.currentValue, recordKey: &recordKey, txn) {
                    try txn.deleteEntry(at: &cursor)
                    report.supersededRemoved += 1
                    // The cursor now rests on the following entry (see `collectGarbage`).
                    more = try cursor.next()
                } else {
                    more = try cursor.next()
                }
            }
            reachedEnd = !more
        }
        if reachedEnd {
            _ = try txn.delete(Layout.Meta.compactedThrough, in: dbs.meta)
            try txn.put(head.bytes, forKey: Layout.Meta.compactedHead, in: dbs.meta)
        } else if let last {
            try txn.put(last.bytes, forKey: Layout.Meta.compactedThrough, in: dbs.meta)
        }
    }

    /// True when the entry `v` is an LWW write whose record no longer holds it (a later
    /// write's stamp, or no record in a map this store knows). An entry or record that
    /// does not parse, or an entry of an unknown map, is kept (`check` reports it).
    func isSuperseded(_ v: UnsafeRawBufferPointer, recordKey: inout [UInt8], _ txn: borrowing WriteTransaction) throws -> Bool {
        guard let entry = try? LogEntry(v), entry.flags.kind == .lww else { return false }
        entry.recordKey(into: &recordKey)
        let current: RecordHeader?? = try recordKey.withUnsafeBytes { k in try txn.withValue(forKey: k, in: dbs.records) { RecordHeader($0) } }
        switch current {
        case nil: return mapName(entry.mapID) != nil
        case .some(nil): return false
        case .some(let header?): return header.flags.kind == .lww && !entry.isHeld(by: header)
        }
    }

    /// What a collected op-log entry leaves behind in its record.
    enum LoggedRemoval {
        /// An LWW tombstone written at `origin`.
        case tombstone(origin: HLCTimestamp)
        /// OR-Map tags tombstoned by the op; its payload (an OR-Map delta) starts at
        /// `payloadAt` in the entry.
        case tags(payloadAt: Int)
    }

    /// When the op-log entry `v` removed something — an LWW tombstone, or OR-Map tags —
    /// what it was, with its map and partition, and the record key built in `key`.
    static func loggedRemoval(
        _ v: UnsafeRawBufferPointer, into key: inout [UInt8]
    ) throws -> (removal: LoggedRemoval, mapID: UInt32, partition: UInt16)? {
        guard v.count >= 16 + 4 + 1 + 2, let base = v.baseAddress else { throw StoreError(.corruptRecord, "op-log entry during GC") }
        let flags = Layout.Flags(rawValue: v[20])
        guard (flags.kind == .lww && flags.contains(.tombstone)) || flags.kind == .orMap else { return nil }
        let mapID = base.loadBigEndian(fromByteOffset: 16, as: UInt32.self)
        let offset = flags.contains(.hasTTL) ? 29 : 21
        guard v.count >= offset + 2 else { throw StoreError(.corruptRecord, "op-log entry during GC") }
        let count = Int(base.loadBigEndian(fromByteOffset: offset, as: UInt16.self))
        let payloadAt = offset + 2 + count
        guard v.count >= payloadAt,
            let name = String(validating: UnsafeRawBufferPointer(rebasing: v[(offset + 2)..<payloadAt]), as: UTF8.self)
        else { throw StoreError(.corruptRecord, "op-log entry key during GC") }
        let removal: LoggedRemoval
        if flags.kind == .orMap {
            guard v.count >= payloadAt + 8 else { throw StoreError(.corruptRecord, "op-log OR-Map payload during GC") }
            guard base.loadBigEndian(fromByteOffset: payloadAt + 4, as: UInt32.self) > 0 else { return nil }
            removal = .tags(payloadAt: payloadAt)
        } else {
            removal = .tombstone(origin: HLCTimestamp(loadingFrom: base))
        }
        let partition = Partitioner.partition(of: name)
        key = Layout.recordPrefix(mapID: mapID, partition: partition)
        key.append(contentsOf: name.utf8)
        return (removal, mapID, partition)
    }

    /// Drops from the OR-Map record at `key` the tags the logged delta `delta`
    /// tombstoned. The record's digest (live entries) and so its Merkle entry stay.
    ///
    /// - Returns: how many tags left the record, and the newest of them.
    static func collectTags(
        key: UnsafeRawBufferPointer, delta: UnsafeRawBufferPointer, _ txn: borrowing WriteTransaction, _ dbs: DBs
    ) throws -> (count: Int, newest: HLCTimestamp) {
        let tags = try StatePayload.decodeORSet(delta).tombstones
        var payload: [UInt8] = []
        let found: (header: [UInt8], removed: (count: Int, newest: HLCTimestamp))? = try txn.withValue(forKey: key, in: dbs.records) { raw in
            guard let header = RecordHeader(raw), header.flags.kind == .orMap else { return nil }
            let removed = try StatePayload.pruneTombstones(
                UnsafeRawBufferPointer(rebasing: raw[header.payloadOffset...]), removing: tags, into: &payload)
            return (Array(UnsafeRawBufferPointer(rebasing: raw[..<header.payloadOffset])), removed)
        } ?? nil
        guard let found, found.removed.count > 0 else { return (0, .zero) }
        try txn.put(found.header + payload, forKey: Array(key), in: dbs.records)
        return found.removed
    }

    /// The newest op-log key removed by GC; a peer whose cursor is older needs
    /// anti-entropy rather than the log.
    public func logTruncatedThrough() throws -> HLCTimestamp? {
        try read { txn in try txn.value(forKey: Layout.Meta.truncated, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) } }
    }

    /// Wall time (ms since the epoch) of the last garbage-collection step, if any.
    public func lastGarbageCollection() throws -> UInt64? {
        try read { txn in
            try txn.value(forKey: Layout.Meta.gcLastRun, in: dbs.meta).flatMap { raw in
                raw.count == 8 ? raw.withUnsafeBytes { $0.loadBigEndian(as: UInt64.self) } : nil
            }
        }
    }

    /// The GC horizon: the newest removed tombstone's stamp. LWW ops older than this
    /// for keys without a record are refused (`.beyondHorizon`).
    public var garbageCollectionHorizon: HLCTimestamp { horizon.withLock { $0 } }
}
