import TopGunCore
import TopGunStore

/// A contiguous range of one node's op log, as shipped between replicas and written
/// by `topgun export`.
///
/// ```
/// "TGSG" | version u8 | origin node u64 | first seq 16 B | last seq 16 B
/// | op count u32 | raw length u32 | payload length u32 | LZ4 payload | CRC-32C u32
/// ```
/// All integers big-endian; the CRC covers everything before it. The raw payload is
/// the ops back to back (see `WireOperation`). Any failed check rejects the whole
/// segment: nothing of it is applied.
public struct Segment: Sendable, Equatable {
    public static let magic: [UInt8] = Array("TGSG".utf8)
    public static let version: UInt8 = 1
    static let headerBytes = 4 + 1 + 8 + 16 + 16 + 4 + 4 + 4
    /// Largest raw payload accepted (bounds memory per segment).
    public static let maxRawBytes = 64 << 20

    public var origin: NodeID
    public var entries: [LoggedOperation]

    public init(origin: NodeID, entries: [LoggedOperation]) {
        self.origin = origin
        self.entries = entries
    }

    /// Where the publisher read its log through, when that is past the last entry:
    /// what followed was not for this subscriber (its subscription or its read grant
    /// filtered it out), and its cursor moves there anyway — an empty segment does
    /// only that.
    public var through: HLCTimestamp = .zero

    /// A segment whose cursor end is `through` (at or after its last entry).
    public init(origin: NodeID, entries: [LoggedOperation], through: HLCTimestamp) {
        self.init(origin: origin, entries: entries)
        self.through = through
    }

    public var firstSequence: HLCTimestamp { entries.first?.sequence ?? .zero }
    /// The cursor after this segment.
    public var lastSequence: HLCTimestamp { max(entries.last?.sequence ?? .zero, through) }

    /// The framed, compressed, checksummed bytes.
    public func encoded() -> [UInt8] {
        var raw: [UInt8] = []
        raw.reserveCapacity(entries.count * 160)
        for entry in entries { WireOperation.encode(entry, into: &raw) }
        let payload = LZ4.compress(raw)
        var out: [UInt8] = Self.magic
        out.append(Self.version)
        out.appendBigEndian(origin.rawValue)
        out.appendStamp(firstSequence)
        out.appendStamp(lastSequence)
        out.appendBigEndian(UInt32(entries.count))
        out.appendBigEndian(UInt32(raw.count))
        out.appendBigEndian(UInt32(payload.count))
        out.append(contentsOf: payload)
        out.appendBigEndian(CRC32C.checksum(out))
        return out
    }

    /// Decodes and verifies a segment.
    ///
    /// - Throws: `ReplicationError` (`.badMagic`, `.unsupportedVersion`,
    ///   `.lengthMismatch`, `.checksumMismatch`, `.decompressionFailed`, `.malformed`).
    public init(decoding bytes: UnsafeRawBufferPointer) throws(ReplicationError) {
        guard bytes.count >= Self.headerBytes + 4 else {
            throw ReplicationError(.lengthMismatch, "segment of \(bytes.count) bytes is shorter than its header")
        }
        guard bytes.prefix(4).elementsEqual(Self.magic) else { throw ReplicationError(.badMagic, "not a TopGun segment") }
        var r = ByteReader(bytes)
        _ = try r.slice(4)
        let version = try r.u8()
        guard version == Self.version else {
            throw ReplicationError(.unsupportedVersion, "segment version \(version); this node reads \(Self.version)")
        }
        let origin = NodeID(try r.be(UInt64.self))
        let first = try r.stamp()
        let last = try r.stamp()
        let count = Int(try r.be(UInt32.self))
        let rawLength = Int(try r.be(UInt32.self))
        let payloadLength = Int(try r.be(UInt32.self))
        guard payloadLength == bytes.count - Self.headerBytes - 4 else {
            throw ReplicationError(.lengthMismatch, "payload length \(payloadLength) does not match the segment size")
        }
        guard rawLength <= Self.maxRawBytes else { throw ReplicationError(.lengthMismatch, "raw length \(rawLength) beyond limit") }
        let stored = bytes.loadBigEndian(fromByteOffset: bytes.count - 4, as: UInt32.self)
        guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<(bytes.count - 4)])) == stored else {
            throw ReplicationError(.checksumMismatch, "segment CRC-32C does not match")
        }
        let raw = try LZ4.decompress(try r.slice(payloadLength), rawLength: rawLength)
        var entries: [LoggedOperation] = []
        entries.reserveCapacity(min(count, rawLength / 40 + 1))
        let result: Result<[LoggedOperation], ReplicationError> = raw.withUnsafeBytes { rawBytes in
            var reader = ByteReader(rawBytes)
            do throws(ReplicationError) {
                for _ in 0..<count { entries.append(try WireOperation.decode(&reader)) }
                guard reader.remaining == 0 else { throw ReplicationError(.lengthMismatch, "\(reader.remaining) bytes after the last op") }
                return .success(entries)
            } catch {
                return .failure(error)
            }
        }
        entries = try result.get()
        guard entries.first?.sequence ?? .zero == first, entries.isEmpty || entries.last!.sequence <= last else {
            throw ReplicationError(.malformed, "first/last sequence do not match the ops")
        }
        for (a, b) in zip(entries, entries.dropFirst()) where !(a.sequence < b.sequence) {
            throw ReplicationError(.malformed, "sequences are not increasing")
        }
        self.init(origin: origin, entries: entries, through: entries.isEmpty || last > entries.last!.sequence ? last : .zero)
    }

    public init(decoding bytes: [UInt8]) throws(ReplicationError) {
        let result: Result<Segment, ReplicationError> = bytes.withUnsafeBytes { b in
            do throws(ReplicationError) { return .success(try Segment(decoding: b)) } catch { return .failure(error) }
        }
        self = try result.get()
    }
}

/// The wire form of one logged operation:
/// `seq 16 | origin 16 | kind u8 | flags u8 | ttl u64? | map u16+bytes | key u16+bytes | payload u32+bytes`.
/// LWW payloads are the canonical MessagePack value; OR-Map and counter payloads are
/// the MessagePack of their state (`ORSet.state`, `PNCounter.state`).
enum WireOperation {
    static let tombstone: UInt8 = 1
    static let hasTTL: UInt8 = 2

    static func encode(_ entry: LoggedOperation, into out: inout [UInt8]) {
        let op = entry.operation
        out.appendStamp(entry.sequence)
        out.appendStamp(op.timestamp)
        var payload: [UInt8]
        var flags: UInt8 = 0
        var ttl: UInt64?
        out.append(op.payload.kind.rawValue)
        switch op.payload {
        case .lww(let encoded, let t):
            payload = encoded ?? []
            if encoded == nil { flags |= tombstone }
            ttl = t
        case .orSet(let s):
            payload = s.state.encoded
        case .counter(let c):
            payload = c.state.encoded
        }
        if ttl != nil { flags |= hasTTL }
        out.append(flags)
        if let ttl { out.appendBigEndian(ttl) }
        out.appendBigEndian(UInt16(op.map.utf8.count))
        out.append(contentsOf: op.map.utf8)
        out.appendBigEndian(UInt16(op.key.utf8.count))
        out.append(contentsOf: op.key.utf8)
        out.appendBigEndian(UInt32(payload.count))
        out.append(contentsOf: payload)
    }

    static func decode(_ r: inout ByteReader) throws(ReplicationError) -> LoggedOperation {
        let sequence = try r.stamp()
        let origin = try r.stamp()
        let tag = try r.u8()
        guard let kind = CRDTKind(rawValue: tag) else { throw ReplicationError(.malformed, "unknown CRDT kind \(tag)") }
        let flags = try r.u8()
        let ttl: UInt64? = flags & hasTTL != 0 ? try r.be(UInt64.self) : nil
        let map = try r.string(Int(try r.be(UInt16.self)))
        let key = try r.string(Int(try r.be(UInt16.self)))
        guard !map.isEmpty, !key.isEmpty else { throw ReplicationError(.malformed, "empty map or key") }
        let payload = try r.slice(Int(try r.be(UInt32.self)))
        do throws(ValueCodingError) {
            let op: ReplicatedOperation
            switch kind {
            case .lww:
                if flags & tombstone != 0 {
                    guard payload.isEmpty else { throw ValueCodingError(.trailingBytes, at: 0, "tombstone with a value") }
                    op = ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .lww(encodedValue: nil, ttlMillis: ttl))
                } else {
                    // The value is checked where it is applied (`Store.apply`), with the rule
                    // every write obeys: a bad one is refused alone, the rest applies.
                    op = ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .lww(encodedValue: Array(payload), ttlMillis: ttl))
                }
            case .orMap: op = ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .orSet(try ORSet(state: Value(messagePack: payload))))
            case .counter: op = ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .counter(try PNCounter(state: Value(messagePack: payload))))
            }
            return LoggedOperation(sequence: sequence, operation: op)
        } catch {
            throw ReplicationError(.malformed, "op \(map)/\(key): \(error)")
        }
    }
}
