/// JSON-shaped `Codable` form of `Value`: null, booleans, numbers, strings, arrays and
/// objects map to themselves; bytes encode as an array of integers (decoding yields
/// an array). Integral JSON numbers decode as `.int`; integers outside the `Int64`
/// range are refused rather than rounded to a double.
extension Value: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let u = try? c.decode(UInt64.self) {
            // Integers are 64-bit signed; a larger one would silently become a double.
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "integer \(u) is outside the Int64 range")
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([Value].self) {
            self = .array(a)
        } else {
            self = .map(try c.decode([String: Value].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .bytes(let b): try c.encode(b.map(Int.init))
        case .array(let a): try c.encode(a)
        case .map(let m): try c.encode(m)
        }
    }
}
