import TopGunCore

/// The on-disk layout: named databases, key encodings and the record header.
///
/// ```
/// meta     name                                  -> bytes
/// maps     map name (UTF-8)                      -> id u32 BE, kind u8
/// records  map id u32 BE | partition u16 BE | key -> header | payload
/// oplog    local apply HLC (16 B)                -> origin HLC | map id | header tail | key | payload
/// merkle   map id u32 BE | partition u16 BE  -> bucket digests, u64 BE each
/// index    (reserved for secondary indexes)
/// peers    peer node id u64 BE                   -> cursor (16 B op-log key) | last seen ms u64 BE
/// ```
///
/// A record header is the origin HLC (16 B), a flags byte (CRDT kind in the low two
/// bits, tombstone, has-TTL), the 8-byte value digest (so Merkle updates never
/// re-read the value) and, with has-TTL, the TTL in ms. LWW decisions read only the
/// first 16 bytes in place.
enum Layout {
    static let schemaVersion: UInt32 = 1
    static let databases = ["meta", "maps", "records", "oplog", "merkle", "index", "peers"]
    static let maxKeyBytes = 400  // LMDB's key limit is 511 bytes; 6 go to the prefix.

    enum Meta {
        static let schema = Array("schema".utf8)
        static let node = Array("node".utf8)
        static let highWater = Array("hlc.high-water".utf8)
        static let horizon = Array("gc.horizon".utf8)
        static let nextMapID = Array("maps.next-id".utf8)
        static let truncated = Array("oplog.truncated-through".utf8)
        static let gcLastRun = Array("gc.last-run".utf8)
        static let indexNextID = Array("index.next-id".utf8)
    }

    static let recordPrefixBytes = 6
    static let headerBytes = 25
    static let ttlBytes = 8

    struct Flags: OptionSet {
        let rawValue: UInt8
        static let tombstone = Flags(rawValue: 0x04)
        static let hasTTL = Flags(rawValue: 0x08)
        static let kindMask: UInt8 = 0x03

        init(rawValue: UInt8) { self.rawValue = rawValue }
        init(kind: CRDTKind, tombstone: Bool, hasTTL: Bool) {
            var raw = kind.rawValue
            if tombstone { raw |= Flags.tombstone.rawValue }
            if hasTTL { raw |= Flags.hasTTL.rawValue }
            self.rawValue = raw
        }
        var kind: CRDTKind? { CRDTKind(rawValue: rawValue & Self.kindMask) }
    }

    /// Writes `mapID | partition` big-endian at `p`.
    @inline(__always)
    static func storePrefix(mapID: UInt32, partition: UInt16, to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: mapID.bigEndian, as: UInt32.self)
        p.storeBytes(of: partition.bigEndian, toByteOffset: 4, as: UInt16.self)
    }

    static func recordPrefix(mapID: UInt32, partition: UInt16? = nil) -> [UInt8] {
        var out = withUnsafeBytes(of: mapID.bigEndian) { Array($0) }
        if let partition { withUnsafeBytes(of: partition.bigEndian) { out.append(contentsOf: $0) } }
        return out
    }

}

/// The CRDT a map holds.
public enum CRDTKind: UInt8, Sendable, Codable, CustomStringConvertible {
    case lww = 0
    case orMap = 1
    case counter = 2

    public var description: String {
        switch self {
        case .lww: "lww"
        case .orMap: "or-map"
        case .counter: "pn-counter"
        }
    }
}

/// A decoded record header.
struct RecordHeader {
    var timestamp: HLCTimestamp
    var flags: Layout.Flags
    var digest: UInt64
    var ttl: UInt64?
    /// Offset of the payload.
    var payloadOffset: Int

    /// Parses a stored record; nil when the bytes are too short or the kind is unknown.
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Layout.headerBytes, let base = bytes.baseAddress else { return nil }
        timestamp = HLCTimestamp(loadingFrom: base)
        flags = Layout.Flags(rawValue: bytes[16])
        guard flags.kind != nil else { return nil }
        digest = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: 17, as: UInt64.self))
        if flags.contains(.hasTTL) {
            guard bytes.count >= Layout.headerBytes + Layout.ttlBytes else { return nil }
            ttl = UInt64(bigEndian: base.loadUnaligned(fromByteOffset: 25, as: UInt64.self))
            payloadOffset = Layout.headerBytes + Layout.ttlBytes
        } else {
            ttl = nil
            payloadOffset = Layout.headerBytes
        }
    }

    /// The digest the header should hold for the record `raw`: 0 for a tombstone,
    /// else the hash of the payload bytes.
    func payloadDigest(of raw: UnsafeRawBufferPointer) -> UInt64 {
        let payload = UnsafeRawBufferPointer(rebasing: raw[payloadOffset...])
        return payload.isEmpty && flags.contains(.tombstone) ? 0 : Digest64.hash(payload)
    }

    static func size(hasTTL: Bool) -> Int { Layout.headerBytes + (hasTTL ? Layout.ttlBytes : 0) }

    /// Writes a header at `p`; returns its size.
    @inline(__always)
    @discardableResult
    static func store(
        timestamp: HLCTimestamp, flags: Layout.Flags, digest: UInt64, ttl: UInt64?, to p: UnsafeMutableRawPointer
    ) -> Int {
        timestamp.store(to: p)
        p.storeBytes(of: flags.rawValue, toByteOffset: 16, as: UInt8.self)
        p.storeBytes(of: digest.bigEndian, toByteOffset: 17, as: UInt64.self)
        if let ttl {
            p.storeBytes(of: ttl.bigEndian, toByteOffset: 25, as: UInt64.self)
            return Layout.headerBytes + Layout.ttlBytes
        }
        return Layout.headerBytes
    }
}
