import LMDB
import TopGunCore

extension Store {
    /// The stored state of `key` in `map`, or nil when absent (tombstones included).
    ///
    /// - Throws: `StoreError(.corruptRecord)` when the stored bytes do not decode.
    public func state(map: String, key: String) throws -> StoredState? {
        try snapshot { try state(map: map, key: key, in: $0) }
    }

    func readState(mapID: UInt32, kind: CRDTKind, key: String, _ txn: borrowing ReadTransaction) throws -> StoredState? {
        let k = Layout.recordKey(mapID: mapID, key: key)
        do {
            return try k.withUnsafeBytes { kb in
                try txn.withValue(forKey: kb, in: dbs.records) { raw in try StoredState(decoding: raw, kind: kind) }
            }
        } catch let error as StoreError {
            if error.code == .corruptRecord { noteDamage(record: k) }
            throw error.naming(map: mapName(mapID) ?? "map \(mapID)", key: key)
        }
    }

    /// Visits the records of `map` (optionally one partition) in key order inside one
    /// snapshot; `body` returns false to stop.
    public func scan(
        map: String, partition: UInt16? = nil, _ body: (_ key: String, _ state: StoredState) throws -> Bool
    ) throws {
        try snapshot { try scan(map: map, partition: partition, in: $0, body) }
    }

    /// Number of records (tombstones included) of `map`.
    public func count(map: String, partition: UInt16? = nil) throws -> Int {
        guard let info = mapInfo(map) else { return 0 }
        var n = 0
        try read { txn in
            try txn.forEach(in: dbs.records, range: .prefix(Layout.recordPrefix(mapID: info.id, partition: partition))) { _, _ in
                n += 1
                return true
            }
        }
        return n
    }

    /// Committed operations with op-log key after `sequence` (all when nil), at most
    /// `limit`, in commit order. Entries removed by garbage collection are simply not
    /// there: a replicator uses `readLog(after:limit:)`, which says so.
    ///
    /// An LWW write that a later write of the same record superseded is left out: the
    /// later entry carries the record's state, so a reader far behind receives each
    /// changed LWW record once.
    ///
    /// - Throws: `StoreError(.corruptRecord)` naming the records whose entries could not
    ///   be read back because the record is damaged (none is left out silently); use
    ///   `operations(after:limit:skippingDamaged:)` to read the rest anyway.
    public func operations(after sequence: HLCTimestamp?, limit: Int = .max) throws -> [LoggedOperation] {
        var damaged: [String] = []
        let out = try operations(after: sequence, limit: limit) { damaged.append($0) }
        guard damaged.isEmpty else {
            throw StoreError(
                .corruptRecord,
                "damaged records: \(damaged.prefix(10).joined(separator: ", "))\(damaged.count > 10 ? " and \(damaged.count - 10) more" : ""); `topgun repair` restores them from a peer")
        }
        return out
    }

    /// `operations(after:limit:)`, calling `skippingDamaged` with `MAP/KEY` for each
    /// entry whose record is damaged and leaving it out.
    public func operations(
        after sequence: HLCTimestamp?, limit: Int = .max, skippingDamaged: (String) -> Void
    ) throws -> [LoggedOperation] {
        let read = try read { txn in try operations(after: sequence, limit: limit, stepLimit: .max, txn) }
        read.damaged.forEach(skippingDamaged)
        return read.operations
    }

    /// What a replicator reads after a cursor: the next operations, or the news that
    /// garbage collection removed entries after `sequence` (then the reader needs a
    /// Merkle repair, not the log). Both are decided in one snapshot.
    public enum LogRead: Sendable, Equatable {
        /// The next operations, and the op-log key read up to: past the last of them
        /// when superseded entries followed it (a cursor may move there).
        case operations([LoggedOperation], readThrough: HLCTimestamp?)
        /// Entries up to this op-log key were removed and some were after the cursor.
        case truncated(through: HLCTimestamp)
    }

    /// The operations after `sequence`, or `.truncated` when the log no longer holds
    /// all of them.
    public func readLog(after sequence: HLCTimestamp?, limit: Int) throws -> LogRead {
        try read { txn in
            if let raw = try txn.value(forKey: Layout.Meta.truncated, in: dbs.meta), let truncated = HLCTimestamp(bytes: raw),
                sequence.map({ $0 < truncated }) ?? true
            {
                return .truncated(through: truncated)
            }
            let (operations, through, damaged) = try operations(after: sequence, limit: limit, stepLimit: Self.supersededPerRead, txn)
            if !damaged.isEmpty { counters.record(damagedRecordsMet: damaged.count) }
            return .operations(operations, readThrough: through)
        }
    }

    /// At most `limit` operations after `sequence`, and the last op-log key read (which
    /// superseded entries may put past the last operation). Reading stops after
    /// `stepLimit` superseded entries in a row, so a replicator's read stays short (it
    /// goes on from `through`).
    func operations(
        after sequence: HLCTimestamp?, limit: Int, stepLimit: Int, _ txn: borrowing ReadTransaction
    ) throws -> (operations: [LoggedOperation], through: HLCTimestamp?, damaged: [String]) {
        var out: [LoggedOperation] = []
        var through: HLCTimestamp?
        var skipped = 0
        var damaged: [String] = []
        let lower = sequence.map { $0.successor.bytes }
        var names = mapsByID.withLock { $0 }
        var recordKey: [UInt8] = []
        try txn.withCursor(on: dbs.oplog) { cursor in
            try cursor.scan(range: KeyRange(from: lower), reverse: false) { k, v in
                guard out.count < limit, skipped < stepLimit else { return false }
                guard k.count == 16 else { throw StoreError(.corruptRecord, "op-log key of \(k.count) bytes") }
                let seq = HLCTimestamp(loadingFrom: k.baseAddress!)
                if v.count >= 20, names[v.loadBigEndian(fromByteOffset: 16, as: UInt32.self)] == nil {
                    // A map created by another process since this one loaded the table.
                    let maps = try Self.loadMaps(txn, dbs)
                    publishMaps(maps)
                    names = Dictionary(uniqueKeysWithValues: maps.map { ($0.value.id, $0.key) })
                }
                through = seq
                let entry: LogEntryRead
                do {
                    entry = try Self.readLogEntry(v, names: names, recordKey: &recordKey, txn, dbs)
                } catch let error as StoreError where error.code == .corruptRecord {
                    // An entry that does not parse stops no reader: it is named, and the
                    // next heal removes it and logs its record again.
                    noteDamage(logKey: Array(k))
                    damaged.append("op-log entry \(seq)")
                    skipped += 1
                    return true
                }
                switch entry {
                case .operation(let op):
                    out.append(LoggedOperation(sequence: seq, operation: op))
                    skipped = 0
                case .superseded:
                    skipped += 1
                case .damaged(let name):
                    noteDamage(record: recordKey)
                    damaged.append(name)
                    skipped += 1
                }
                return true
            }
        }
        return (out, through, damaged)
    }

    /// Superseded entries one log read steps over at most before it returns.
    static let supersededPerRead = 65_536

    /// How many op-log entries follow `sequence` (all when nil), counted without
    /// decoding them.
    public func logEntryCount(after sequence: HLCTimestamp?) throws -> Int {
        var n = 0
        try read { txn in
            try txn.forEach(in: dbs.oplog, range: KeyRange(from: sequence.map { $0.successor.bytes })) { _, _ in
                n += 1
                return true
            }
        }
        return n
    }

    /// The op-log entries after `sequence` (all when nil) whose origin stamp is from
    /// `node` (the writes `node` made, not those it received): how many, and the newest
    /// one's key. Read without decoding the entries.
    public func ownEntries(of node: NodeID, after sequence: HLCTimestamp?) throws -> (count: Int, last: HLCTimestamp?) {
        var count = 0
        var last: HLCTimestamp?
        try read { txn in
            try txn.forEach(in: dbs.oplog, range: KeyRange(from: sequence.map { $0.successor.bytes })) { key, value in
                let own = value.withUnsafeBytes { v in v.count >= 16 && v.loadBigEndian(fromByteOffset: 8, as: UInt64.self) == node.rawValue }
                if own {
                    count += 1
                    last = key.withUnsafeBytes { HLCTimestamp(loadingFrom: $0.baseAddress!) }
                }
                return true
            }
        }
        return (count, last)
    }

    /// The newest op-log key, or nil for an empty log.
    public func lastSequence() throws -> HLCTimestamp? {
        try read { txn in try lastSequence(in: txn) }
    }

    /// The newest op-log key ever written, as far as this store knows: the last entry,
    /// or where garbage collection truncated an emptied log (zero when never written).
    /// A Merkle repair read after it covers everything logged up to it.
    public func logHead() throws -> HLCTimestamp {
        try read { txn in
            let last = try lastSequence(in: txn) ?? .zero
            let truncated = try txn.value(forKey: Layout.Meta.truncated, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) } ?? .zero
            return max(last, truncated)
        }
    }

    /// What an op-log entry stands for when it is read back.
    enum LogEntryRead {
        /// The operation (an LWW record's current write, or an OR-Map/counter delta).
        case operation(ReplicatedOperation)
        /// A later write of its LWW record superseded it (the record's stamp is newer).
        case superseded
        /// Its record (`MAP/KEY`) fails its digest or does not parse: left out, and said
        /// so (`check` reports it, a repair from a peer replaces it), instead of stopping
        /// every reader of the log.
        case damaged(String)
    }

    /// Reads an op-log entry back (see `LogEntryRead`).
    ///
    /// - Throws: `StoreError(.corruptRecord)` for an entry that does not parse.
    static func readLogEntry(
        _ v: UnsafeRawBufferPointer, names: [UInt32: String], recordKey: inout [UInt8], _ txn: borrowing ReadTransaction, _ dbs: DBs
    ) throws -> LogEntryRead {
        let entry = try LogEntry(v)
        guard let map = names[entry.mapID] else { throw StoreError(.corruptRecord, "op-log entry: unknown map id \(entry.mapID)") }
        let key = entry.key
        guard entry.flags.kind == .lww else { return .operation(try entry.operation(map: map)) }
        entry.recordKey(into: &recordKey)
        let current: LogEntryRead? = try recordKey.withUnsafeBytes { k in
            try txn.withValue(forKey: k, in: dbs.records) { raw -> LogEntryRead in
                guard let header = RecordHeader(raw) else { return .damaged("\(map)/\(key)") }
                guard entry.isHeld(by: header) else { return .superseded }
                guard entry.flags.contains(.valueInRecord) else { return .operation(try entry.operation(map: map)) }
                // A delete has a stamp of its own: a tombstone under the value's stamp is
                // a damaged header.
                guard !header.flags.contains(.tombstone) else { return .damaged("\(map)/\(key)") }
                guard header.payloadDigest(of: raw) == header.digest else { return .damaged("\(map)/\(key)") }
                // Not decoded here: whoever applies it validates it (`Store.apply`).
                let value = Array(UnsafeRawBufferPointer(rebasing: raw[header.payloadOffset...]))
                return .operation(
                    ReplicatedOperation(map: map, key: key, timestamp: entry.origin, payload: .lww(encodedValue: value, ttlMillis: header.ttl)))
            }
        }
        return current ?? .superseded
    }

    // MARK: Merkle

    /// The bucket digests of (map, partition), `MerkleBuckets.bucketCount` of them.
    public func merkleBuckets(map: String, partition: UInt16) throws -> [UInt64] {
        guard let info = mapInfo(map) else { return [UInt64](repeating: 0, count: MerkleBuckets.bucketCount) }
        return try read { txn in
            try MerkleDeltas.read(txn, dbs.merkle, key: Layout.recordPrefix(mapID: info.id, partition: partition))
        }
    }

    /// The root digest of (map, partition).
    public func merkleRoot(map: String, partition: UInt16) throws -> UInt64 {
        MerkleBuckets.root(of: try merkleBuckets(map: map, partition: partition))
    }

    /// Recomputes every bucket digest of `map` from its records and compares with the
    /// stored digests. Returns the partitions that disagree (empty when consistent).
    public func verifyMerkle(map: String) throws -> [UInt16] {
        guard let info = mapInfo(map) else { return [] }
        var computed: [UInt16: [UInt64]] = [:]
        try read { txn in
            try txn.forEach(in: dbs.records, range: .prefix(Layout.recordPrefix(mapID: info.id))) { k, v in
                k.withUnsafeBytes { k in
                    v.withUnsafeBytes { v in
                        // A damaged record is reported by `check` itself; the Merkle entry
                        // is computed from what the header claims.
                        guard k.count >= Layout.recordPrefixBytes, let header = RecordHeader(v) else { return }
                        let partition = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                        let keyHash = Layout.keyHash(ofRecordKey: k)
                        let entry = Layout.merkleEntry(kind: info.kind, keyHash: keyHash, timestamp: header.timestamp, digest: header.digest)
                        computed[partition, default: .init(repeating: 0, count: MerkleBuckets.bucketCount)][Int(MerkleBuckets.bucket(ofKeyHash: keyHash))] ^= entry
                    }
                }
                return true
            }
        }
        var bad: [UInt16] = []
        for p in 0..<UInt16(Partitioner.partitionCount) {
            let expected = computed[p] ?? .init(repeating: 0, count: MerkleBuckets.bucketCount)
            if try merkleBuckets(map: map, partition: p) != expected { bad.append(p) }
        }
        return bad
    }

    /// Committed changes, delivered after each commit. See `ChangeFeed` for the
    /// slow-consumer policy (oldest dropped, gaps visible through `sequence`).
    public func changes() -> AsyncStream<Change> { feed.subscribe() }
}

extension Store {
    /// LMDB environment sizes (map size, last transaction id, readers).
    public var environmentInfo: Environment.Info { env.info() }

    /// Wall-clock milliseconds, for TTL visibility.
    package var now: UInt64 { options.wallClock.milliseconds() }

    /// The newest op-log key as seen by `txn`.
    func lastSequence(in txn: borrowing ReadTransaction) throws -> HLCTimestamp? {
        var last: HLCTimestamp?
        try txn.withCursor(on: dbs.oplog) { cursor in
            if try cursor.last() { last = HLCTimestamp(loadingFrom: cursor.currentKey.baseAddress!) }
        }
        return last
    }
}
