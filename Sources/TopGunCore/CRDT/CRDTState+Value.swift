/// Canonical `Value` forms of CRDT states, used for storage and replication
/// payloads. Decoding checks the shape and throws `ValueCodingError(.malformed)`.
extension ORSet {
    /// `{"e": [[tag, value, timestamp, ttl|null]…] sorted by tag, "t": [tag…] sorted}`,
    /// tags and timestamps as 16-byte binary HLCs.
    public var state: Value {
        let e: [Value] = entries.sorted { $0.key < $1.key }.map { tag, entry in
            .array([.bytes(tag.bytes), entry.value, .bytes(entry.timestamp.bytes), entry.ttlMillis.map { .int(Int64(bitPattern: $0)) } ?? .null])
        }
        return .map(["e": .array(e), "t": .array(tombstones.sorted().map { .bytes($0.bytes) })])
    }

    public init(state value: Value) throws(ValueCodingError) {
        guard case .map(let m) = value, case .array(let e)? = m["e"], case .array(let t)? = m["t"] else {
            throw ValueCodingError(.malformed, at: 0, "OR-Set state must be {e, t}")
        }
        var tombstones = Set<HLCTimestamp>()
        for item in t { tombstones.insert(try Self.stamp(item)) }
        var entries: [HLCTimestamp: Entry] = [:]
        for item in e {
            guard case .array(let parts) = item, parts.count == 4 else {
                throw ValueCodingError(.malformed, at: 0, "OR-Set entry must be [tag, value, stamp, ttl]")
            }
            var ttl: UInt64?
            switch parts[3] {
            case .null: ttl = nil
            case .int(let i): ttl = UInt64(bitPattern: i)
            default: throw ValueCodingError(.malformed, at: 0, "OR-Set ttl must be an integer or null")
            }
            entries[try Self.stamp(parts[0])] = Entry(value: parts[1], timestamp: try Self.stamp(parts[2]), ttlMillis: ttl)
        }
        self.init(entries: entries, tombstones: tombstones)
    }

    static func stamp(_ v: Value) throws(ValueCodingError) -> HLCTimestamp {
        guard case .bytes(let b) = v, let ts = HLCTimestamp(bytes: b) else {
            throw ValueCodingError(.malformed, at: 0, "expected a 16-byte HLC")
        }
        return ts
    }
}

extension PNCounter {
    /// `{"p": [[node, total]…], "n": [[node, total]…]}` sorted by node; 64-bit values
    /// stored by bit pattern.
    public var state: Value {
        func totals(_ d: [NodeID: UInt64]) -> Value {
            .array(d.sorted { $0.key < $1.key }.map { .array([.int(Int64(bitPattern: $0.key.rawValue)), .int(Int64(bitPattern: $0.value))]) })
        }
        return .map(["p": totals(positive), "n": totals(negative)])
    }

    public init(state value: Value) throws(ValueCodingError) {
        func totals(_ v: Value?) throws(ValueCodingError) -> [NodeID: UInt64] {
            guard case .array(let items)? = v else { throw ValueCodingError(.malformed, at: 0, "PN-Counter totals") }
            var out: [NodeID: UInt64] = [:]
            for item in items {
                guard case .array(let pair) = item, pair.count == 2, case .int(let n) = pair[0], case .int(let t) = pair[1]
                else { throw ValueCodingError(.malformed, at: 0, "PN-Counter total must be [node, total]") }
                out[NodeID(UInt64(bitPattern: n))] = UInt64(bitPattern: t)
            }
            return out
        }
        guard case .map(let m) = value else { throw ValueCodingError(.malformed, at: 0, "PN-Counter state must be a map") }
        self.init(positive: try totals(m["p"]), negative: try totals(m["n"]))
    }
}
