import LMDB
import TopGunCore

/// The Merkle bucket changes of one transaction, written once per touched
/// (map, partition) at the end.
///
/// On disk, `merkle` maps `map id u32 BE | partition u16 BE` to the partition's
/// `MerkleBuckets.bucketCount` digests as big-endian `UInt64`s, so a batch dirties at
/// most one small value per partition.
struct MerkleDeltas {
    /// Per map touched: the XOR deltas of its 271 × `bucketCount` buckets in one flat
    /// array, and the partitions touched, in the order first touched.
    private var mapIDs: [UInt32] = []
    private var deltas: [[UInt64]] = []
    private var touched: [[UInt16]] = []
    /// One bit per partition: touched already.
    private var seen: [[UInt64]] = []
    private var last = 0

    /// XORs `entryDelta` (old entry hash ^ new entry hash) into the key's bucket.
    mutating func record(mapID: UInt32, partition: UInt16, keyHash: UInt64, entryDelta: UInt64) {
        let m = slot(of: mapID)
        let base = Int(partition) * MerkleBuckets.bucketCount
        let word = Int(partition) >> 6
        let bit = UInt64(1) << (UInt64(partition) & 63)
        if seen[m][word] & bit == 0 {
            seen[m][word] |= bit
            touched[m].append(partition)
        }
        deltas[m][base + Int(MerkleBuckets.bucket(ofKeyHash: keyHash))] ^= entryDelta
    }

    private mutating func slot(of mapID: UInt32) -> Int {
        if last < mapIDs.count && mapIDs[last] == mapID { return last }
        if let i = mapIDs.firstIndex(of: mapID) {
            last = i
            return i
        }
        mapIDs.append(mapID)
        deltas.append([UInt64](repeating: 0, count: Partitioner.partitionCount * MerkleBuckets.bucketCount))
        touched.append([])
        seen.append([UInt64](repeating: 0, count: (Partitioner.partitionCount + 63) / 64))
        last = mapIDs.count - 1
        return last
    }

    /// A record of `kind` went from `old` to `new` (nil: absent): its old Merkle entry
    /// leaves its bucket and the new one enters. Every writer of records goes through
    /// here (merge, GC, revert, schema upgrade).
    @inline(__always)
    mutating func replace(
        mapID: UInt32, partition: UInt16, keyHash: UInt64, kind: CRDTKind,
        old: (timestamp: HLCTimestamp, digest: UInt64)?, new: (timestamp: HLCTimestamp, digest: UInt64)?
    ) {
        var delta: UInt64 = 0
        if let old { delta ^= Layout.merkleEntry(kind: kind, keyHash: keyHash, timestamp: old.timestamp, digest: old.digest) }
        if let new { delta ^= Layout.merkleEntry(kind: kind, keyHash: keyHash, timestamp: new.timestamp, digest: new.digest) }
        record(mapID: mapID, partition: partition, keyHash: keyHash, entryDelta: delta)
    }

    /// Applies the deltas to the stored digests, partitions in key order; all-zero
    /// partitions are deleted.
    func write(_ txn: borrowing WriteTransaction, _ db: LMDB.Database) throws {
        var value = [UInt8](repeating: 0, count: MerkleBuckets.bucketCount * 8)
        for (m, mapID) in mapIDs.enumerated() {
            for partition in touched[m].sorted() {
                let base = Int(partition) * MerkleBuckets.bucketCount
                let changes = deltas[m][base..<base + MerkleBuckets.bucketCount]
                guard changes.contains(where: { $0 != 0 }) else { continue }
                let key = Layout.recordPrefix(mapID: mapID, partition: partition)
                var buckets = try Self.read(txn.reads, db, key: key)
                var allZero = true
                for i in 0..<buckets.count {
                    buckets[i] ^= changes[base + i]
                    allZero = allZero && buckets[i] == 0
                }
                if allZero {
                    try txn.delete(key, in: db)
                    continue
                }
                value.withUnsafeMutableBytes { out in
                    for (i, b) in buckets.enumerated() { out.storeBigEndian(b, toByteOffset: i * 8) }
                }
                try txn.put(value, forKey: key, in: db)
            }
        }
    }

    /// The stored bucket digests of the partition at `key` (zeros when absent).
    static func read(_ txn: borrowing ReadTransaction, _ db: LMDB.Database, key: [UInt8]) throws -> [UInt64] {
        guard let raw = try txn.value(forKey: key, in: db) else {
            return [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)
        }
        guard raw.count == MerkleBuckets.bucketCount * 8 else {
            throw StoreError(.corruptRecord, "Merkle digests of \(raw.count) bytes")
        }
        return raw.withUnsafeBytes { b in
            (0..<MerkleBuckets.bucketCount).map { b.loadBigEndian(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
    }
}
