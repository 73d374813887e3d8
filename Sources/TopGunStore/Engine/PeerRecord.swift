import TopGunCore

/// What a store knows about one replica it exchanges with, as stored in `peers`.
///
/// ```
/// cursor 16 B | last seen ms u64 | acknowledged 16 B | refused u32 | joined at 16 B
/// | scope: map count u16 (0xFFFF = all), (length u16, UTF-8)…,
///          partition count u16 (0xFFFF = all), partition u16…
/// | user: length u16 (0xFFFF: a replica), UTF-8 | writes refused u32
/// | refused for clock drift u32 | clock offset ms i64
/// ```
/// Records written before acknowledgements existed hold only the first 24 bytes; the
/// rest reads as nothing acknowledged, joined at the end of time (the whole GC horizon
/// applies to it) and an unknown scope.
public struct PeerState: Sendable, Equatable {
    public var node: NodeID
    /// The last op-log key of that peer applied here (zero: never pulled from it).
    public var cursor: HLCTimestamp
    /// Wall time of the last update, ms since the epoch.
    public var lastSeenMillis: UInt64
    /// How far the peer has applied this store's op log, counting only
    /// acknowledgements whose preceding log of the peer this store has pulled too
    /// (zero: nothing). Garbage collection never passes the smallest of these.
    public var acknowledged: HLCTimestamp
    /// Operations from this peer refused because they are older than the GC horizon
    /// for records this store no longer holds: the peer or this store needs a repair.
    public var refusedBeyondHorizon: Int
    /// The GC horizon when this store first recorded the peer. Every tombstone
    /// collected since waited for the peer's acknowledgement, so its ops are checked
    /// only against this older horizon: a write it relays cannot have been superseded
    /// by a tombstone collected later (the replica that held the tombstone would have
    /// dropped it), and a write to another key is not mistaken for one.
    public var joinedAtHorizon: HLCTimestamp
    /// The maps and partitions the cursor covers (nil: unknown, from an older record).
    public var scope: PeerScope?
    /// The subject of the user whose app this peer is (it authenticated with a JWT);
    /// nil for a replica. A node id stays bound to the principal that first used it.
    /// Users' apps hold garbage collection back like any peer: an acknowledgement that
    /// passed records the user may not read speaks only for what it needs.
    public var user: String?
    /// Writes this peer pushed that were refused (policy, origin, kind): counted for
    /// `topgun inspect`; `/metrics` has them by reason.
    public var writesRejected: Int = 0
    /// Operations from this peer refused because their stamps were ahead of this
    /// store's clock by more than the drift bound (offered again once clocks agree).
    public var refusedForClockDrift: Int = 0
    /// The peer's wall clock minus this node's, in ms, as measured at the last
    /// handshake (positive: the peer is ahead).
    public var clockOffsetMillis: Int64 = 0

    public init(
        node: NodeID, cursor: HLCTimestamp = .zero, lastSeenMillis: UInt64 = 0, acknowledged: HLCTimestamp = .zero,
        refusedBeyondHorizon: Int = 0, joinedAtHorizon: HLCTimestamp = .zero, scope: PeerScope? = nil, user: String? = nil
    ) {
        self.user = user
        self.joinedAtHorizon = joinedAtHorizon
        self.node = node
        self.cursor = cursor
        self.lastSeenMillis = lastSeenMillis
        self.acknowledged = acknowledged
        self.refusedBeyondHorizon = refusedBeyondHorizon
        self.scope = scope
    }

    static let fixedBytes = 16 + 8 + 16 + 4 + 16
    static let endOfTime = HLCTimestamp(millis: HLCTimestamp.maxMillis, counter: .max, node: NodeID(.max))

    var encoded: [UInt8] {
        var out = cursor.bytes
        out.appendBigEndian(lastSeenMillis)
        out += acknowledged.bytes
        out.appendBigEndian(UInt32(clamping: refusedBeyondHorizon))
        out += joinedAtHorizon.bytes
        guard scope != nil || user != nil || writesRejected > 0 || refusedForClockDrift > 0 || clockOffsetMillis != 0 else { return out }
        (scope ?? .all).encode(into: &out)
        if let user {
            let bytes = Array(user.utf8.prefix(Int(UInt16.max) - 1))
            out.appendBigEndian(UInt16(bytes.count))
            out += bytes
        } else {
            out.appendBigEndian(UInt16.max)
        }
        out.appendBigEndian(UInt32(clamping: writesRejected))
        out.appendBigEndian(UInt32(clamping: refusedForClockDrift))
        out.appendBigEndian(UInt64(bitPattern: clockOffsetMillis))
        return out
    }

    /// Decodes a stored record; nil when it is too short to hold a cursor.
    init?(node: NodeID, _ raw: UnsafeRawBufferPointer) {
        guard raw.count >= 24, let base = raw.baseAddress else { return nil }
        self.node = node
        cursor = HLCTimestamp(loadingFrom: base)
        lastSeenMillis = raw.loadBigEndian(fromByteOffset: 16, as: UInt64.self)
        acknowledged = .zero
        refusedBeyondHorizon = 0
        joinedAtHorizon = Self.endOfTime
        scope = nil
        user = nil
        guard raw.count >= Self.fixedBytes else { return }
        joinedAtHorizon = HLCTimestamp(loadingFrom: base + 44)
        acknowledged = HLCTimestamp(loadingFrom: base + 24)
        refusedBeyondHorizon = Int(raw.loadBigEndian(fromByteOffset: 40, as: UInt32.self))
        var consumed = 0
        scope = PeerScope(decoding: UnsafeRawBufferPointer(rebasing: raw[Self.fixedBytes...]), consumed: &consumed)
        let userAt = Self.fixedBytes + consumed
        guard scope != nil, raw.count >= userAt + 2 else { return }
        let n = Int(raw.loadBigEndian(fromByteOffset: userAt, as: UInt16.self))
        var rejectedAt = userAt + 2
        if n != Int(UInt16.max) {
            guard raw.count >= userAt + 2 + n else { return }
            user = String(decoding: UnsafeRawBufferPointer(rebasing: raw[(userAt + 2)..<(userAt + 2 + n)]), as: UTF8.self)
            rejectedAt += n
        }
        if raw.count >= rejectedAt + 4 { writesRejected = Int(raw.loadBigEndian(fromByteOffset: rejectedAt, as: UInt32.self)) }
        if raw.count >= rejectedAt + 16 {
            refusedForClockDrift = Int(raw.loadBigEndian(fromByteOffset: rejectedAt + 4, as: UInt32.self))
            clockOffsetMillis = Int64(bitPattern: raw.loadBigEndian(fromByteOffset: rejectedAt + 8, as: UInt64.self))
        }
    }
}

/// The part of a peer's data a replication cursor covers: some maps and partitions,
/// or all of them (empty lists mean all, as in a subscription).
public struct PeerScope: Sendable, Equatable {
    public var maps: [String]
    public var partitions: [UInt16]

    public init(maps: [String] = [], partitions: [UInt16] = []) {
        self.maps = maps.isEmpty ? [] : Array(Set(maps)).sorted()
        self.partitions = partitions.isEmpty ? [] : Array(Set(partitions)).sorted()
    }

    /// Everything.
    public static let all = PeerScope()

    /// True when everything in `other` is inside this scope.
    public func covers(_ other: PeerScope) -> Bool {
        let mapsCovered = maps.isEmpty || (!other.maps.isEmpty && Set(other.maps).isSubset(of: maps))
        let partitionsCovered = partitions.isEmpty || (!other.partitions.isEmpty && Set(other.partitions).isSubset(of: partitions))
        return mapsCovered && partitionsCovered
    }

    /// What both scopes cover.
    public func intersection(_ other: PeerScope) -> PeerScope {
        func meet<T: Hashable & Comparable>(_ a: [T], _ b: [T]) -> [T] {
            if a.isEmpty { return b }
            if b.isEmpty { return a }
            return Array(Set(a).intersection(b)).sorted()
        }
        var out = PeerScope(maps: meet(maps, other.maps), partitions: meet(partitions, other.partitions))
        // An empty intersection of two restricted lists covers nothing; keep one
        // impossible entry rather than reading back as "all".
        if out.maps.isEmpty && !maps.isEmpty && !other.maps.isEmpty { out.maps = [""] }
        if out.partitions.isEmpty && !partitions.isEmpty && !other.partitions.isEmpty { out.partitions = [UInt16.max] }
        return out
    }

    func encode(into out: inout [UInt8]) {
        out.appendBigEndian(maps.isEmpty ? UInt16.max : UInt16(maps.count))
        for m in maps {
            out.appendBigEndian(UInt16(m.utf8.count))
            out += m.utf8
        }
        out.appendBigEndian(partitions.isEmpty ? UInt16.max : UInt16(partitions.count))
        for p in partitions { out.appendBigEndian(p) }
    }

    init?(decoding raw: UnsafeRawBufferPointer, consumed: inout Int) {
        var offset = 0
        defer { consumed = offset }
        func u16() -> UInt16? {
            guard offset + 2 <= raw.count else { return nil }
            defer { offset += 2 }
            return raw.loadBigEndian(fromByteOffset: offset, as: UInt16.self)
        }
        guard let mapCount = u16() else { return nil }
        var maps: [String] = []
        if mapCount != .max {
            for _ in 0..<mapCount {
                guard let n = u16(), offset + Int(n) <= raw.count else { return nil }
                maps.append(String(decoding: UnsafeRawBufferPointer(rebasing: raw[offset..<offset + Int(n)]), as: UTF8.self))
                offset += Int(n)
            }
        }
        guard let partitionCount = u16() else { return nil }
        var partitions: [UInt16] = []
        if partitionCount != .max {
            for _ in 0..<partitionCount {
                guard let p = u16() else { return nil }
                partitions.append(p)
            }
        }
        self.maps = maps
        self.partitions = partitions
    }
}
