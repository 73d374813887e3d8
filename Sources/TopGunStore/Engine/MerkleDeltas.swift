import LMDB
import TopGunCore

/// The Merkle bucket changes of one transaction, written once per touched
/// (map, partition) at the end.
///
/// On disk, `merkle` maps `map id u32 BE | partition u16 BE` to the partition's
/// `MerkleBuckets.bucketCount` digests as big-endian `UInt64`s, so a batch dirties at
/// most one small value per partition.
struct MerkleDeltas {
    /// `map id << 16 | partition` of each partition touched, and where its
    /// `bucketCount` deltas start in `deltas` (one flat array: no allocation per
    /// partition, and a batch over many maps costs what it touches).
    private var slots: [UInt64: Int] = [:]
    private var deltas: [UInt64] = []
    /// The last partition looked up, for runs of one partition.
    private var last: (id: UInt64, at: Int) = (.max, 0)

    /// XORs `entryDelta` (old entry hash ^ new entry hash) into the key's bucket.
    mutating func record(mapID: UInt32, partition: UInt16, keyHash: UInt64, entryDelta: UInt64) {
        let id = UInt64(mapID) << 16 | UInt64(partition)
        var at = last.at
        if last.id != id {
            if let found = slots[id] {
                at = found
            } else {
                at = deltas.count
                slots[id] = at
                deltas.append(contentsOf: repeatElement(0, count: MerkleBuckets.bucketCount))
            }
            last = (id, at)
        }
        deltas[at + Int(MerkleBuckets.bucket(ofKeyHash: keyHash))] ^= entryDelta
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
    /// partitions are deleted. Each stored value is read in place and rewritten where
    /// its lookup landed.
    func write(_ txn: borrowing WriteTransaction, _ db: LMDB.Database) throws {
        let width = MerkleBuckets.bucketCount * 8
        var key = [UInt8](repeating: 0, count: Layout.recordPrefixBytes)
        var value = [UInt8](repeating: 0, count: width)
        for (id, at) in slots.sorted(by: { $0.key < $1.key }) {
            guard deltas[at..<at + MerkleBuckets.bucketCount].contains(where: { $0 != 0 }) else { continue }
            key.withUnsafeMutableBytes { k in
                k.storeBigEndian(UInt32(id >> 16), toByteOffset: 0)
                k.storeBigEndian(UInt16(truncatingIfNeeded: id), toByteOffset: 4)
            }
            var allZero = true
            let stored: Int? = try key.withUnsafeBytes { k in
                try txn.withValue(forKey: k, in: db) { raw -> Int in
                    guard raw.count == width else { return raw.count }
                    value.withUnsafeMutableBytes { out in
                        for i in 0..<MerkleBuckets.bucketCount {
                            let digest = raw.loadBigEndian(fromByteOffset: i * 8, as: UInt64.self) ^ deltas[at + i]
                            out.storeBigEndian(digest, toByteOffset: i * 8)
                            allZero = allZero && digest == 0
                        }
                    }
                    return width
                }
            }
            if let stored, stored != width { throw StoreError(.corruptRecord, "Merkle digests of \(stored) bytes") }
            if stored == nil {
                value.withUnsafeMutableBytes { out in
                    for i in 0..<MerkleBuckets.bucketCount { out.storeBigEndian(deltas[at + i], toByteOffset: i * 8) }
                }
                allZero = false
            }
            if allZero {
                try txn.delete(key, in: db)
            } else {
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
