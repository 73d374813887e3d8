/// Why bytes could not be decoded as a `Value` (or another Core binary form).
public struct ValueCodingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong. New codes can be added without breaking `switch`.
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// The input ended inside a value.
        public static let truncated = Code(rawValue: "truncated")
        /// A type byte that MessagePack reserves or this codec does not accept.
        public static let unsupportedType = Code(rawValue: "unsupported type")
        /// A string that is not valid UTF-8.
        public static let invalidUTF8 = Code(rawValue: "invalid UTF-8")
        /// A map key that is not a string, or a key repeated in one map.
        public static let invalidMapKey = Code(rawValue: "invalid map key")
        /// An unsigned integer above `Int64.max`.
        public static let integerOverflow = Code(rawValue: "integer overflow")
        /// Arrays and maps nested deeper than the limit.
        public static let tooDeep = Code(rawValue: "nesting too deep")
        /// Bytes left over after the value.
        public static let trailingBytes = Code(rawValue: "trailing bytes")
        /// The encoded value is larger than `Value.maxEncodedBytes`.
        public static let tooLarge = Code(rawValue: "value too large")
        /// A structure that is well-formed MessagePack but not the expected shape.
        public static let malformed = Code(rawValue: "malformed")
    }

    public var code: Code
    /// Byte offset in the input where the problem was found.
    public var offset: Int
    public var message: String

    public init(_ code: Code, at offset: Int, _ message: String = "") {
        self.code = code
        self.offset = offset
        self.message = message
    }

    public var description: String {
        "\(code.rawValue) at byte \(offset)" + (message.isEmpty ? "" : ": \(message)")
    }
}
