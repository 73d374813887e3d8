/// Order-independent digests of a (map, partition) for anti-entropy.
///
/// Each record contributes one 64-bit entry hash of (key, HLC, value digest) to the
/// bucket chosen by its key. A bucket digest is the XOR of its entries' hashes, so a
/// write updates it in O(1): `digest ^= oldEntry ^ newEntry`. Unlike TopGun's
/// Merkle leaf, the value digest is included, so replicas that agree on timestamps but
/// not on values still differ. The partition root hashes its buckets in order.
public enum MerkleBuckets {
    /// Buckets per (map, partition): 16 keeps a partition's digests in one 128-byte
    /// value (a batch dirties few pages) while still narrowing a repair to 1/4336 of
    /// a map.
    public static let bucketCount = 16

    /// The bucket of a key, from its key hash (independent of the partition hash).
    @inlinable
    public static func bucket(ofKeyHash keyHash: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: keyHash >> 60)
    }

    /// Hash of a record key's bytes, used for bucket choice and entry hashes.
    @inlinable
    public static func keyHash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        Digest64.hash(key, seed: 0x6b65_79)
    }

    /// The entry hash of one record version.
    @inlinable
    public static func entryHash(keyHash: UInt64, timestamp: HLCTimestamp, valueDigest: UInt64) -> UInt64 {
        var h = Digest64.mixWord(keyHash, timestamp.packedTime)
        h = Digest64.mixWord(h, timestamp.node.rawValue)
        h = Digest64.mixWord(h, valueDigest)
        return Digest64.finalize(h)
    }

    /// The root digest of a partition from its `bucketCount` bucket digests in order.
    public static func root(of buckets: [UInt64]) -> UInt64 {
        precondition(buckets.count == bucketCount)
        var h: UInt64 = 0x726f_6f74
        for b in buckets { h = Digest64.mixWord(h, b) }
        return Digest64.finalize(h)
    }
}
