import TopGunCore

/// The on-disk layout: named databases, key encodings and the record header.
///
/// ```
/// meta     name                                  -> bytes
/// maps     map name (UTF-8)                      -> id u32 BE, kind u8
/// records  map id u32 BE | partition u16 BE | key -> header | payload
/// oplog    local apply HLC (16 B)                -> origin HLC | map id | flags | ttl? | key | payload
///          (an LWW value is not copied into the log: the entry names its record,
///          which holds it while no later write has superseded it)
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
    static let schemaVersion: UInt32 = 3
    /// The oldest schema a read-only open reads as it is: schema 2 differs only in log
    /// entries that carry their LWW values, which readers still understand.
    static let oldestReadableSchema: UInt32 = 2
    static let databases = ["meta", "maps", "records", "oplog", "merkle", "index", "peers"]
    static let maxKeyBytes = 400  // LMDB's key limit is 511 bytes; 6 go to the prefix.

    enum Meta {
        static let schema = Array("schema".utf8)
        static let node = Array("node".utf8)
        static let highWater = Array("hlc.high-water".utf8)
        static let horizon = Array("gc.horizon".utf8)
        static let nextMapID = Array("maps.next-id".utf8)
        static let truncated = Array("oplog.truncated-through".utf8)
        static let compactedThrough = Array("oplog.compacted-through".utf8)
        static let compactedHead = Array("oplog.compacted-head".utf8)
        static let gcLastRun = Array("gc.last-run".utf8)
        static let indexNextID = Array("index.next-id".utf8)
        /// `damage.quarantine/` + a record key: a damaged record `Store.heal` removed
        /// and no write has brought back yet (empty value).
        static let quarantinePrefix = Array("damage.quarantine/".utf8)
        /// UInt64 totals: damaged records removed, and brought back.
        static let quarantinedTotal = Array("damage.quarantined-total".utf8)
        static let restoredTotal = Array("damage.restored-total".utf8)
    }

    static let recordPrefixBytes = 6
    static let headerBytes = 25
    static let ttlBytes = 8

    struct Flags: OptionSet {
        let rawValue: UInt8
        static let tombstone = Flags(rawValue: 0x04)
        static let hasTTL = Flags(rawValue: 0x08)
        /// Op-log entries only: an LWW write whose value (and TTL) the record holds;
        /// the entry carries no payload. Readers take the value from the record, and
        /// skip the entry once a later write of the record superseded it.
        static let valueInRecord = Flags(rawValue: 0x10)
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

    /// The key prefix of a map's records (and Merkle digests): `map id | partition`,
    /// or only the map id.
    static func recordPrefix(mapID: UInt32, partition: UInt16? = nil) -> [UInt8] {
        var out = [UInt8](bigEndian: mapID)
        if let partition { out.appendBigEndian(partition) }
        return out
    }

    /// Replaces `out` with the record key of `key`: `map id | partition | key bytes`.
    @inline(__always)
    static func setRecordKey(_ out: inout [UInt8], mapID: UInt32, partition: UInt16, key: String) {
        out.removeAll(keepingCapacity: true)
        out.appendBigEndian(mapID)
        out.appendBigEndian(partition)
        var key = key
        key.withUTF8 { out.append(contentsOf: $0) }
    }

    /// The record key of `key` in map `mapID`.
    static func recordKey(mapID: UInt32, key: String) -> [UInt8] {
        var out: [UInt8] = []
        setRecordKey(&out, mapID: mapID, partition: Partitioner.partition(of: key), key: key)
        return out
    }

    /// The Merkle key hash of a record key (over its user-key bytes).
    @inline(__always)
    static func keyHash(ofRecordKey recordKey: UnsafeRawBufferPointer) -> UInt64 {
        MerkleBuckets.keyHash(UnsafeRawBufferPointer(rebasing: recordKey[recordPrefixBytes...]))
    }

    /// A record's Merkle entry, the one rule: an LWW record by key, HLC and value
    /// digest; an OR-Map or counter by key and state digest only: its canonical payload
    /// describes the state fully, while its header stamp depends on which ops (or
    /// repairs) arrived, so equal states would otherwise digest differently.
    @inline(__always)
    static func merkleEntry(kind: CRDTKind, keyHash: UInt64, timestamp: HLCTimestamp, digest: UInt64) -> UInt64 {
        MerkleBuckets.entryHash(keyHash: keyHash, timestamp: kind == .lww ? timestamp : .zero, valueDigest: digest)
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
        digest = base.loadBigEndian(fromByteOffset: 17, as: UInt64.self)
        if flags.contains(.hasTTL) {
            guard bytes.count >= Layout.headerBytes + Layout.ttlBytes else { return nil }
            ttl = base.loadBigEndian(fromByteOffset: 25, as: UInt64.self)
            payloadOffset = Layout.headerBytes + Layout.ttlBytes
        } else {
            ttl = nil
            payloadOffset = Layout.headerBytes
        }
    }

    /// The digest the header should hold for the record `raw`: 0 for a tombstone,
    /// else the state digest of the payload (`StatePayload.digest(of:kind:)`).
    func payloadDigest(of raw: UnsafeRawBufferPointer) -> UInt64 {
        let payload = UnsafeRawBufferPointer(rebasing: raw[payloadOffset...])
        if payload.isEmpty && flags.contains(.tombstone) { return 0 }
        return StatePayload.digest(of: payload, kind: flags.kind ?? .lww)
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
        p.storeBigEndian(digest, toByteOffset: 17)
        if let ttl {
            p.storeBigEndian(ttl, toByteOffset: 25)
            return Layout.headerBytes + Layout.ttlBytes
        }
        return Layout.headerBytes
    }
}
