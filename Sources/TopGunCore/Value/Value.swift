/// A document value: what records, queries and the wire carry.
///
/// Maps are keyed by strings and compare by content regardless of insertion order;
/// the canonical binary form (`Value.encoded`) sorts map keys, so equal values have
/// equal bytes and equal digests. Doubles are equal when their bits are: a NaN equals
/// itself (so it can be found and removed again) and `-0.0` differs from `0.0`, exactly
/// as their encodings do.
public enum Value: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
    case array([Value])
    case map([String: Value])

    /// The value at a dotted field path (`"address.city"`), or nil when absent.
    public subscript(path path: String) -> Value? {
        var current = self
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            guard case .map(let fields) = current, let next = fields[String(part)] else { return nil }
            current = next
        }
        return current
    }

    /// Digest of the canonical encoding, used for tie-breaks and Merkle entries.
    public var digest: UInt64 { Digest64.hash(encoded) }
}

extension Value: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: Value...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, Value)...) {
        self = .map(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

extension Value {
    public static func == (a: Value, b: Value) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.int(let x), .int(let y)): return x == y
        case (.double(let x), .double(let y)): return x.bitPattern == y.bitPattern
        case (.string(let x), .string(let y)): return x == y
        case (.bytes(let x), .bytes(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.map(let x), .map(let y)): return x == y
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0 as UInt8)
        case .bool(let x): hasher.combine(1 as UInt8); hasher.combine(x)
        case .int(let x): hasher.combine(2 as UInt8); hasher.combine(x)
        case .double(let x): hasher.combine(3 as UInt8); hasher.combine(x.bitPattern)
        case .string(let x): hasher.combine(4 as UInt8); hasher.combine(x)
        case .bytes(let x): hasher.combine(5 as UInt8); hasher.combine(x)
        case .array(let x): hasher.combine(6 as UInt8); hasher.combine(x)
        case .map(let x): hasher.combine(7 as UInt8); hasher.combine(x)
        }
    }
}
