import LMDB
import TopGunCore

extension Store {
    /// A consistent read view of the store (one LMDB read transaction), handed to a
    /// `snapshot` closure and valid only inside it. Readers never block the writer.
    public struct Snapshot: ~Copyable {
        let transaction: ReadTransaction
    }

    /// Runs `body` with one consistent read view of the store: every read through the
    /// snapshot sees the same committed state, however many commits happen meanwhile.
    ///
    /// - Throws: what `body` throws, or `StoreError(.storage)` when no read can begin.
    public func snapshot<R>(_ body: (borrowing Snapshot) throws -> R) throws -> R {
        do {
            return try env.readOwned { (txn: consuming ReadTransaction) in try body(Snapshot(transaction: txn)) }
        } catch let error as LMDBError {
            throw storeError(error, "read")
        }
    }

    /// The record of `key` in `map`, read in `snapshot`.
    package func state(map: String, key: String, in snapshot: borrowing Snapshot) throws -> StoredState? {
        guard let info = mapInfo(map) else { return nil }
        return try readState(mapID: info.id, kind: info.kind, key: key, snapshot.transaction)
    }

    /// Visits the records of `map` (one partition, or all) in `snapshot`.
    ///
    /// A scan that reaches the end checks what it read against the map's Merkle
    /// digests, so a damaged records tree (a key whose prefix bytes changed, a page that
    /// ends the map early) is an error instead of missing rows; it visits at most as
    /// many entries as the tree holds, so a damaged page that loops ends it too.
    ///
    /// - Throws: `StoreError(.corruptRecord)` naming the damage.
    package func scan(
        map: String, partition: UInt16?, in snapshot: borrowing Snapshot,
        _ body: (_ key: String, _ state: StoredState) throws -> Bool
    ) throws {
        guard let info = mapInfo(map) else { return }
        let limit = try snapshot.transaction.statistics(of: dbs.records).entries
        var visited = 0
        var previous: [UInt8] = []
        var computed: [UInt16: [UInt64]] = [:]
        var stopped = false
        try snapshot.transaction.withCursor(on: dbs.records) { cursor in
            try cursor.scan(range: .prefix(Layout.recordPrefix(mapID: info.id, partition: partition)), reverse: false) { k, v in
                visited += 1
                guard visited <= limit, previous.isEmpty || previous.lexicographicallyPrecedes(k) else {
                    throw StoreError(.corruptRecord, "\(map): the records tree is damaged (keys out of order or repeated); run `topgun check`")
                }
                previous.removeAll(keepingCapacity: true)
                previous.append(contentsOf: k)
                guard k.count > Layout.recordPrefixBytes,
                    let key = String(validating: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
                else {
                    noteDamage(record: Array(k))
                    throw StoreError(.corruptRecord, "\(map): record key of \(k.count) bytes is not a key")
                }
                // The value digest does not cover the key; its partition does, mostly: a
                // changed key byte moves it to another partition 270 times in 271.
                let stored = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                guard Partitioner.partition(of: key) == stored else {
                    noteDamage(record: Array(k))
                    throw StoreError(.corruptRecord, "\(map)/\(key): the key is not in its partition (damaged key bytes)")
                }
                let state: StoredState
                do {
                    state = try StoredState(decoding: v, kind: info.kind)
                } catch let error as StoreError {
                    noteDamage(record: Array(k))
                    throw error.naming(map: map, key: key)
                }
                if let header = RecordHeader(v) {
                    let keyHash = Layout.keyHash(ofRecordKey: k)
                    computed[stored, default: [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)][
                        Int(MerkleBuckets.bucket(ofKeyHash: keyHash))] ^= Layout.merkleEntry(
                            kind: info.kind, keyHash: keyHash, timestamp: header.timestamp, digest: header.digest)
                }
                let goOn = try body(key, state)
                if !goOn { stopped = true }
                return goOn
            }
        }
        guard !stopped else { return }
        let partitions = partition.map { [$0] } ?? Array(0..<UInt16(Partitioner.partitionCount))
        for p in partitions {
            let expected = try MerkleDeltas.read(snapshot.transaction, dbs.merkle, key: Layout.recordPrefix(mapID: info.id, partition: p))
            if (computed[p] ?? [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)) != expected {
                noteDamage(partition: Layout.recordPrefix(mapID: info.id, partition: p))
                throw StoreError(
                    .corruptRecord,
                    "\(map): partition \(p) holds records its Merkle digests do not account for, or lacks some (a damaged records tree); run `topgun check`")
            }
        }
    }

    /// An index entry that does not match its record (a damaged index), met by a
    /// query: the query answers from the records instead.
    package struct IndexDamage: Error, Sendable {
        package let index: String
    }

    /// Visits the entries of `index` whose indexed value lies in `range`, a range over
    /// `Layout.indexedValue` bytes (nil bounds = open): each entry's record (partition,
    /// key) and its indexed-value bytes, for `fetch(verifying:)`.
    ///
    /// - Throws: `IndexDamage` for an entry whose value does not repeat its key.
    package func scanIndex(
        _ index: IndexDefinition, lower: [UInt8]?, upper: [UInt8]?, in snapshot: borrowing Snapshot,
        _ body: (_ partition: UInt16, _ key: String, _ indexed: [UInt8]) throws -> Bool
    ) throws {
        let id = [UInt8](bigEndian: index.id)
        let range = KeyRange(
            from: id + (lower ?? []),
            to: upper.map { id + $0 } ?? KeyRange.prefix(id).upper)
        try snapshot.transaction.withCursor(on: dbs.index) { cursor in
            try cursor.scan(range: range, reverse: false) { k, v in
                guard v.count >= 2, k.count >= id.count + v.count, k.suffix(v.count).elementsEqual(v) else {
                    counters.record(indexEntriesDamaged: 1)
                    throw IndexDamage(index: "\(index.map).\(index.path)")
                }
                let partition = v.loadBigEndian(as: UInt16.self)
                let indexed = Array(k[id.count..<(k.count - v.count)])
                return try body(partition, String(decoding: UnsafeRawBufferPointer(rebasing: v[2...]), as: UTF8.self), indexed)
            }
        }
    }

    /// The indexed-value bytes of `value` for `index` (see `scanIndex`).
    package func indexedValue(_ index: IndexDefinition, _ value: Value) -> [UInt8] {
        Layout.indexedValue(index, value)
    }

    /// The first indexed-value byte string after every one that starts with `prefix`
    /// (nil when there is none), the open end of a prefix range for `scanIndex`.
    package func indexedValueEnd(ofPrefix prefix: [UInt8]) -> [UInt8]? {
        KeyRange.successor(ofPrefix: prefix)
    }

    /// The newest op-log key as seen by `snapshot`.
    package func lastSequence(in snapshot: borrowing Snapshot) throws -> HLCTimestamp? {
        try lastSequence(in: snapshot.transaction)
    }

    /// Reads the records of `keys` (partition, key), sorted first so the reads sweep the
    /// map in key order with one cursor; absent keys are skipped.
    package func fetch(
        map: String, keys: [(partition: UInt16, key: String)], in snapshot: borrowing Snapshot,
        _ body: (_ key: String, _ state: StoredState) throws -> Void
    ) throws {
        try fetch(map: map, keys: keys.map { ($0.partition, $0.key, nil) }, verifying: nil, in: snapshot, body)
    }

    /// `fetch`, checking each record against the index entry that named it (its
    /// indexed-value bytes): an entry whose record is missing or holds another value.
    ///
    /// - Throws: `IndexDamage` for such an entry.
    package func fetch(
        map: String, keys: [(partition: UInt16, key: String, indexed: [UInt8]?)], verifying index: IndexDefinition?,
        in snapshot: borrowing Snapshot, _ body: (_ key: String, _ state: StoredState) throws -> Void
    ) throws {
        guard let info = mapInfo(map), !keys.isEmpty else { return }
        let sorted = keys.sorted { $0.partition != $1.partition ? $0.partition < $1.partition : $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        var buffer: [UInt8] = []
        try snapshot.transaction.withCursor(on: dbs.records) { cursor in
            for (partition, key, indexed) in sorted {
                Layout.setRecordKey(&buffer, mapID: info.id, partition: partition, key: key)
                let found = try buffer.withUnsafeBytes { target in
                    try cursor.seek(atLeast: target) && cursor.currentKey.elementsEqual(target)
                }
                if let index, let indexed {
                    // The record must hold the value its entry is filed under.
                    let field = found ? try? index.field(ofRecord: cursor.currentValue) : nil
                    guard let field, Layout.indexedValue(index, field) == indexed else {
                        counters.record(indexEntriesDamaged: 1)
                        throw IndexDamage(index: "\(index.map).\(index.path)")
                    }
                }
                if found {
                    let state: StoredState
                    do {
                        state = try StoredState(decoding: cursor.currentValue, kind: info.kind)
                    } catch let error as StoreError {
                        noteDamage(record: buffer)
                        throw error.naming(map: map, key: key)
                    }
                    try body(key, state)
                }
            }
        }
    }
}
