import LMDB
import TopGunCore

/// What one garbage-collection step removed.
public struct GarbageCollectionReport: Sendable, Equatable {
    /// LWW tombstones removed from `records`.
    public var tombstonesRemoved = 0
    /// Op-log entries removed.
    public var logEntriesRemoved = 0
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
                    if let tombstone = try Self.loggedTombstone(cursor.currentValue, into: &recordKey) {
                        let removed = try recordKey.withUnsafeBytes { k -> Bool in
                            let current = try txn.withValue(forKey: k, in: dbs.records) { RecordHeader($0) } ?? nil
                            guard let current, current.flags.contains(.tombstone), current.timestamp == tombstone.origin else {
                                return false
                            }
                            let keyHash = Layout.keyHash(ofRecordKey: k)
                            let entry = Layout.merkleEntry(kind: .lww, keyHash: keyHash, timestamp: current.timestamp, digest: current.digest)
                            merkle.record(mapID: tombstone.mapID, partition: tombstone.partition, keyHash: keyHash, entryDelta: entry)
                            return try txn.delete(k, in: dbs.records)
                        }
                        if removed {
                            report.tombstonesRemoved += 1
                            horizon = max(horizon, tombstone.origin)
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
            try merkle.write(txn, dbs.merkle)
            try txn.put(horizon.bytes, forKey: Layout.Meta.horizon, in: dbs.meta)
            try txn.put([UInt8](bigEndian: wall), forKey: Layout.Meta.gcLastRun, in: dbs.meta)
            if let truncated { try txn.put(truncated.bytes, forKey: Layout.Meta.truncated, in: dbs.meta) }
            self.horizon.withLock { $0 = max($0, horizon) }
            return report
        }
    }

    /// When the op-log entry `v` wrote an LWW tombstone: its origin stamp, map and
    /// partition, with the record key built in `key`.
    static func loggedTombstone(
        _ v: UnsafeRawBufferPointer, into key: inout [UInt8]
    ) throws -> (origin: HLCTimestamp, mapID: UInt32, partition: UInt16)? {
        guard v.count >= 16 + 4 + 1 + 2, let base = v.baseAddress else { throw StoreError(.corruptRecord, "op-log entry during GC") }
        let flags = Layout.Flags(rawValue: v[20])
        guard flags.kind == .lww, flags.contains(.tombstone) else { return nil }
        let mapID = base.loadBigEndian(fromByteOffset: 16, as: UInt32.self)
        let offset = flags.contains(.hasTTL) ? 29 : 21
        guard v.count >= offset + 2 else { throw StoreError(.corruptRecord, "op-log entry during GC") }
        let count = Int(base.loadBigEndian(fromByteOffset: offset, as: UInt16.self))
        guard v.count >= offset + 2 + count,
            let name = String(validating: UnsafeRawBufferPointer(rebasing: v[(offset + 2)..<(offset + 2 + count)]), as: UTF8.self)
        else { throw StoreError(.corruptRecord, "op-log entry key during GC") }
        let partition = Partitioner.partition(of: name)
        key = Layout.recordPrefix(mapID: mapID, partition: partition)
        key.append(contentsOf: name.utf8)
        return (HLCTimestamp(loadingFrom: base), mapID, partition)
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
