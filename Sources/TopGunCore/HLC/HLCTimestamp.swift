/// A hybrid logical clock timestamp: (wall milliseconds, logical counter, node id).
///
/// Totally ordered by millis, then counter, then node id. The 16-byte binary form
/// sorts byte-wise in the same order, so it can be an LMDB key: a big-endian `UInt64`
/// holding 48 bits of milliseconds and 16 bits of counter, then the big-endian node id.
public struct HLCTimestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Milliseconds since the Unix epoch; at most `HLCTimestamp.maxMillis`.
    public var millis: UInt64
    public var counter: UInt16
    public var node: NodeID

    /// The largest representable wall time (48 bits, about the year 10889).
    public static let maxMillis: UInt64 = (1 << 48) - 1
    /// Size of the binary form.
    public static let byteCount = 16
    /// The smallest timestamp; sorts before every issued one.
    public static let zero = HLCTimestamp(millis: 0, counter: 0, node: NodeID(0))

    public init(millis: UInt64, counter: UInt16, node: NodeID) {
        precondition(millis <= Self.maxMillis, "HLC millis beyond 48 bits")
        self.millis = millis
        self.counter = counter
        self.node = node
    }

    public static func < (a: HLCTimestamp, b: HLCTimestamp) -> Bool {
        if a.millis != b.millis { return a.millis < b.millis }
        if a.counter != b.counter { return a.counter < b.counter }
        return a.node < b.node
    }

    /// The first 8 bytes of the binary form as one number: millis << 16 | counter.
    @inlinable public var packedTime: UInt64 { millis << 16 | UInt64(counter) }

    /// Writes the 16-byte binary form at `destination`.
    @inlinable public func store(to destination: UnsafeMutableRawPointer) {
        destination.storeBytes(of: packedTime.bigEndian, as: UInt64.self)
        destination.storeBigEndian(node.rawValue, toByteOffset: 8)
    }

    /// Reads the binary form from the first 16 bytes at `source` (no alignment needed).
    @inlinable public init(loadingFrom source: UnsafeRawPointer) {
        let time = source.loadBigEndian(as: UInt64.self)
        let node = source.loadBigEndian(fromByteOffset: 8, as: UInt64.self)
        self.millis = time >> 16
        self.counter = UInt16(truncatingIfNeeded: time)
        self.node = NodeID(node)
    }

    /// The 16-byte big-endian binary form.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.byteCount) { buffer, count in
            store(to: UnsafeMutableRawPointer(buffer.baseAddress!))
            count = Self.byteCount
        }
    }

    /// Decodes the binary form; nil unless `bytes` has exactly 16 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        let array = Array(bytes)
        self = array.withUnsafeBytes { HLCTimestamp(loadingFrom: $0.baseAddress!) }
    }

    /// `millis:counter:node` with the node id in hex, TopGun's string shape.
    public var description: String { "\(millis):\(counter):\(node)" }

    /// Parses `millis:counter:node`: exactly three parts, as TopGun's `HLC.parse`.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let millis = UInt64(parts[0]), millis <= Self.maxMillis,
            let counter = UInt16(parts[1]), let node = NodeID(parts[2])
        else { return nil }
        self.init(millis: millis, counter: counter, node: node)
    }

    /// The next timestamp of the same node: counter + 1, borrowing the next
    /// millisecond when the counter overflows; the largest timestamp is its own
    /// successor (stamps from the wire may be anything, and must not trap).
    public var successor: HLCTimestamp {
        if counter < .max { return HLCTimestamp(millis: millis, counter: counter + 1, node: node) }
        if millis < Self.maxMillis { return HLCTimestamp(millis: millis + 1, counter: 0, node: node) }
        return self
    }
}
