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
}

extension Store {
    /// Removes LWW tombstones older than `cutoff`, and op-log entries that are older
    /// than `cutoff` or that every subscriber has acknowledged (`acknowledged`: the
    /// op-log keys each peer has applied from this store), in one bounded transaction of
    /// at most `maxSteps` deletions of each kind.
    ///
    /// The cutoff becomes the store's GC horizon (persisted): from then on an LWW op
    /// older than the horizon for a key without a record is rejected as
    /// `.beyondHorizon`, so a removed key cannot be resurrected by a stale op. Call
    /// repeatedly while `hasMore` is true.
    ///
    /// - Parameter cutoff: usually `now - retention`.
    @discardableResult
    public func collectGarbage(
        olderThan cutoff: HLCTimestamp, acknowledged: [HLCTimestamp] = [], maxSteps: Int = 10_000
    ) throws -> GarbageCollectionReport {
        try env.write { txn in
            var report = GarbageCollectionReport()
            let horizon = max(self.horizon.withLock { $0 }, cutoff)
            try txn.put(horizon.bytes, forKey: Layout.Meta.horizon, in: dbs.meta)

            // Op log: below the retention cutoff, or acknowledged by every subscriber.
            var logCutoff = cutoff
            if let slowest = acknowledged.min() { logCutoff = max(logCutoff, slowest.successor) }
            var truncated: HLCTimestamp?
            try txn.withCursor(on: dbs.oplog) { cursor in
                var more = try cursor.first()
                while more {
                    let key = HLCTimestamp(loadingFrom: cursor.currentKey.baseAddress!)
                    guard key < logCutoff else { break }
                    guard report.logEntriesRemoved < maxSteps else {
                        report.hasMore = true
                        break
                    }
                    try cursor.deleteCurrent()
                    report.logEntriesRemoved += 1
                    truncated = key
                    // LMDB leaves a cursor on the following entry after a delete;
                    // MDB_NEXT then returns that entry rather than skipping it.
                    more = try cursor.next()
                }
            }

            // LWW tombstones, with their Merkle entries.
            var merkle = MerkleDeltas()
            let lwwMaps = mapsByName.withLock { $0.values.filter { $0.kind == .lww } }
            for info in lwwMaps {
                try txn.withCursor(on: dbs.records) { cursor in
                    let prefix = Layout.recordPrefix(mapID: info.id)
                    var more = try cursor.seek(atLeast: prefix)
                    while more {
                        let k = cursor.currentKey
                        guard k.count >= Layout.recordPrefixBytes, k.starts(with: prefix) else { break }
                        guard let header = RecordHeader(cursor.currentValue) else {
                            throw StoreError(.corruptRecord, "record header during GC")
                        }
                        if header.flags.contains(.tombstone) && header.timestamp < cutoff {
                            guard report.tombstonesRemoved < maxSteps else {
                                report.hasMore = true
                                break
                            }
                            let partition = UInt16(bigEndian: k.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
                            let keyHash = MerkleBuckets.keyHash(UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]))
                            let entry = MerkleBuckets.entryHash(keyHash: keyHash, timestamp: header.timestamp, valueDigest: header.digest)
                            merkle.record(mapID: info.id, partition: partition, keyHash: keyHash, entryDelta: entry)
                            try cursor.deleteCurrent()
                            report.tombstonesRemoved += 1
                            more = try cursor.next()
                        } else {
                            more = try cursor.next()
                        }
                    }
                }
            }
            try merkle.write(txn, dbs.merkle)
            if let truncated { try txn.put(truncated.bytes, forKey: Layout.Meta.truncated, in: dbs.meta) }
            self.horizon.withLock { $0 = horizon }
            return report
        }
    }

    /// The newest op-log key removed by GC; a peer whose cursor is older needs
    /// anti-entropy rather than the log.
    public func logTruncatedThrough() throws -> HLCTimestamp? {
        try env.read { txn in try txn.value(forKey: Layout.Meta.truncated, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) } }
    }

    /// The GC horizon: LWW ops older than this for absent keys are rejected.
    public var garbageCollectionHorizon: HLCTimestamp { horizon.withLock { $0 } }

}
