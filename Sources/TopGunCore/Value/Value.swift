/// A document value: what records, queries and the wire carry.
///
/// Maps are keyed by strings and compare by content regardless of insertion order;
/// the canonical binary form (`Value.encoded`) sorts map keys, so equal values have
/// equal bytes and equal digests.
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
