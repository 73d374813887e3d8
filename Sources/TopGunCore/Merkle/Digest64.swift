/// A fast, seedable 64-bit hash of bytes, identical on every platform.
///
/// Reads 8 bytes at a time as little-endian words and mixes them with multiply-rotate
/// steps, then finishes with MurmurHash3's `fmix64`. Not cryptographic: it detects
/// divergence between replicas, it does not resist an adversary.
public enum Digest64 {
    @usableFromInline static let k1: UInt64 = 0x87c3_7b91_1142_53d5
    @usableFromInline static let k2: UInt64 = 0x4cf5_ad43_2745_937f

    /// Hash of `count` bytes at `start`.
    @inlinable
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var h = seed ^ (UInt64(bytes.count) &* k2)
        var i = 0
        let n = bytes.count
        while i + 8 <= n {
            let w = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            h = mixWord(h, w)
            i += 8
        }
        if i < n {
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while i < n {
                tail |= UInt64(bytes[i]) << shift
                shift += 8
                i += 1
            }
            h = mixWord(h, tail)
        }
        return finalize(h)
    }

    /// Hash of a byte array.
    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// Combines one 64-bit word into a running hash.
    @inlinable
    public static func mixWord(_ h: UInt64, _ w: UInt64) -> UInt64 {
        var k = w &* k1
        k = (k << 31) | (k >> 33)
        k = k &* k2
        var x = h ^ k
        x = (x << 27) | (x >> 37)
        return x &* 5 &+ 0x52dc_e729
    }

    /// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
    @inlinable
    public static func finalize(_ value: UInt64) -> UInt64 {
        var x = value
        x ^= x >> 33
        x = x &* 0xff51_afd7_ed55_8ccd
        x ^= x >> 33
        x = x &* 0xc4ce_b9fe_1a85_ec53
        x ^= x >> 33
        return x
    }
}
