/// Maps keys to TopGun's 271 partitions.
///
/// The hash is TopGun's `hashString`: FNV-1a 32-bit over UTF-16 code units (not UTF-8
/// bytes), so a key lands in the same partition id here as in TopGun.
public enum Partitioner {
    /// TopGun's `PARTITION_COUNT`.
    public static let partitionCount = 271

    /// FNV-1a 32-bit over the UTF-16 code units of `key`.
    @inlinable
    public static func hash(_ key: String) -> UInt32 {
        // ASCII keys (the common case) have one UTF-16 unit per UTF-8 byte; hashing the
        // contiguous bytes avoids transcoding. Any other byte restarts over the UTF-16 units.
        var key = key
        if let hash = key.withUTF8({ asciiHash($0) }) { return hash }
        var hash: UInt32 = 0x811c_9dc5
        for unit in key.utf16 {
            hash ^= UInt32(unit)
            hash = hash &* 0x0100_0193
        }
        return hash
    }

    /// FNV-1a 32-bit over `bytes`, or nil when they are not all ASCII.
    @inlinable @usableFromInline
    static func asciiHash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32? {
        var hash: UInt32 = 0x811c_9dc5
        for byte in bytes {
            if byte >= 0x80 { return nil }
            hash ^= UInt32(byte)
            hash = hash &* 0x0100_0193
        }
        return hash
    }

    /// The partition id of `key`: `hash(key) % 271`.
    @inlinable
    public static func partition(of key: String) -> UInt16 {
        UInt16(hash(key) % UInt32(partitionCount))
    }

    /// TopGun's `combineHashes`: a wrapping 32-bit sum, independent of order.
    public static func combine(_ hashes: some Sequence<UInt32>) -> UInt32 {
        hashes.reduce(0, &+)
    }
}
