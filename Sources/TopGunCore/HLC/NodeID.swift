/// The identity of a replica: 64 bits, random by default, ordered numerically.
///
/// TopGun uses strings and breaks HLC ties with locale collation; a number orders the
/// same on every machine.
public struct NodeID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// A fresh random id (never zero, which is reserved for "no node").
    public static func random() -> NodeID {
        var generator = SystemRandomNumberGenerator()
        return NodeID(UInt64.random(in: 1...UInt64.max, using: &generator))
    }

    public static func < (a: NodeID, b: NodeID) -> Bool { a.rawValue < b.rawValue }

    /// Sixteen lowercase hex digits.
    public var description: String {
        let hex = String(rawValue, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Parses the 16-hex-digit form (1 to 16 digits accepted).
    public init?(_ text: Substring) {
        guard (1...16).contains(text.count), let v = UInt64(text, radix: 16) else { return nil }
        self.rawValue = v
    }
}
