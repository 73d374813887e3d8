/// The canonical MessagePack codec of `Value`, used on disk and on the wire.
///
/// Encoding is canonical: integers take the shortest form (non-negative ones as
/// unsigned), doubles are always float64, map keys are sorted by their UTF-8 bytes.
/// Decoding accepts any MessagePack the model can hold (float32, all integer widths,
/// str8/16/32, bin, fixarray/array16/32, fixmap/map16/32), never traps, never reads
/// out of bounds, and throws `ValueCodingError` with the offending byte offset.
extension Value {
    /// Maximum nesting of arrays and maps accepted by the decoder.
    public static let maxDecodingDepth = 64

    /// The canonical encoding.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        encode(into: &out)
        return out
    }

    /// Appends the canonical encoding to `out`.
    public func encode(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(0xc0)
        case .bool(let b): out.append(b ? 0xc3 : 0xc2)
        case .int(let i): Self.encodeInt(i, into: &out)
        case .double(let d):
            out.append(0xcb)
            Self.appendBigEndian(d.bitPattern, into: &out)
        case .string(let s):
            let utf8 = s.utf8
            let n = utf8.count
            if n < 32 {
                out.append(0xa0 | UInt8(n))
            } else if n <= 0xff {
                out.append(0xd9)
                out.append(UInt8(n))
            } else if n <= 0xffff {
                out.append(0xda)
                Self.appendBigEndian(UInt16(n), into: &out)
            } else {
                out.append(0xdb)
                Self.appendBigEndian(UInt32(n), into: &out)
            }
            out.append(contentsOf: utf8)
        case .bytes(let b):
            let n = b.count
            if n <= 0xff {
                out.append(0xc4)
                out.append(UInt8(n))
            } else if n <= 0xffff {
                out.append(0xc5)
                Self.appendBigEndian(UInt16(n), into: &out)
            } else {
                out.append(0xc6)
                Self.appendBigEndian(UInt32(n), into: &out)
            }
            out.append(contentsOf: b)
        case .array(let items):
            Self.encodeHeader(count: items.count, fix: 0x90, sixteen: 0xdc, thirtyTwo: 0xdd, into: &out)
            for item in items { item.encode(into: &out) }
        case .map(let fields):
            Self.encodeHeader(count: fields.count, fix: 0x80, sixteen: 0xde, thirtyTwo: 0xdf, into: &out)
            for key in fields.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                Value.string(key).encode(into: &out)
                fields[key]!.encode(into: &out)
            }
        }
    }

    private static func encodeHeader(count n: Int, fix: UInt8, sixteen: UInt8, thirtyTwo: UInt8, into out: inout [UInt8]) {
        if n < 16 {
            out.append(fix | UInt8(n))
        } else if n <= 0xffff {
            out.append(sixteen)
            appendBigEndian(UInt16(n), into: &out)
        } else {
            out.append(thirtyTwo)
            appendBigEndian(UInt32(n), into: &out)
        }
    }

    private static func encodeInt(_ i: Int64, into out: inout [UInt8]) {
        if i >= 0 {
            let u = UInt64(i)
            if u < 0x80 {
                out.append(UInt8(u))
            } else if u <= 0xff {
                out.append(0xcc)
                out.append(UInt8(u))
            } else if u <= 0xffff {
                out.append(0xcd)
                appendBigEndian(UInt16(u), into: &out)
            } else if u <= 0xffff_ffff {
                out.append(0xce)
                appendBigEndian(UInt32(u), into: &out)
            } else {
                out.append(0xcf)
                appendBigEndian(u, into: &out)
            }
        } else if i >= -32 {
            out.append(UInt8(bitPattern: Int8(i)))
        } else if i >= Int64(Int8.min) {
            out.append(0xd0)
            out.append(UInt8(bitPattern: Int8(i)))
        } else if i >= Int64(Int16.min) {
            out.append(0xd1)
            appendBigEndian(UInt16(bitPattern: Int16(i)), into: &out)
        } else if i >= Int64(Int32.min) {
            out.append(0xd2)
            appendBigEndian(UInt32(bitPattern: Int32(i)), into: &out)
        } else {
            out.append(0xd3)
            appendBigEndian(UInt64(bitPattern: i), into: &out)
        }
    }

    @inline(__always)
    static func appendBigEndian<T: FixedWidthInteger>(_ v: T, into out: inout [UInt8]) {
        out.appendBigEndian(v)
    }

    /// Decodes exactly one value that must fill `bytes`.
    ///
    /// - Throws: `ValueCodingError` (`.truncated`, `.unsupportedType`, `.invalidUTF8`,
    ///   `.invalidMapKey`, `.integerOverflow`, `.tooDeep`, `.trailingBytes`).
    public init(messagePack bytes: [UInt8]) throws(ValueCodingError) {
        let result: Result<Value, ValueCodingError> = bytes.withUnsafeBytes { buffer in
            do throws(ValueCodingError) { return .success(try Value(messagePack: buffer)) } catch {
                return .failure(error)
            }
        }
        self = try result.get()
    }

    /// Decodes exactly one value that must fill `buffer`.
    public init(messagePack buffer: UnsafeRawBufferPointer) throws(ValueCodingError) {
        var reader = MessagePackReader(buffer)
        let value = try reader.readValue(depth: 0)
        if reader.offset != buffer.count {
            throw ValueCodingError(.trailingBytes, at: reader.offset, "\(buffer.count - reader.offset) bytes after the value")
        }
        self = value
    }
}

/// A bounds-checked cursor over MessagePack bytes.
public struct MessagePackReader {
    let buffer: UnsafeRawBufferPointer
    /// Offset of the next byte to read.
    public internal(set) var offset = 0

    public init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    /// Bytes not yet read.
    public var remaining: Int { buffer.count - offset }

    @inline(__always)
    mutating func need(_ n: Int) throws(ValueCodingError) {
        if n > remaining { throw ValueCodingError(.truncated, at: offset, "need \(n) bytes, have \(remaining)") }
    }

    @inline(__always)
    mutating func byte() throws(ValueCodingError) -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return buffer[offset]
    }

    @inline(__always)
    mutating func bigEndian<T: FixedWidthInteger>(_: T.Type) throws(ValueCodingError) -> T {
        try need(MemoryLayout<T>.size)
        defer { offset += MemoryLayout<T>.size }
        return buffer.loadBigEndian(fromByteOffset: offset, as: T.self)
    }

    mutating func slice(_ n: Int) throws(ValueCodingError) -> UnsafeRawBufferPointer {
        try need(n)
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + n])
    }

    mutating func string(_ n: Int) throws(ValueCodingError) -> String {
        let start = offset
        let raw = try slice(n)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw ValueCodingError(.invalidUTF8, at: start)
        }
        return s
    }

    /// Reads one complete value.
    public mutating func readValue(depth: Int) throws(ValueCodingError) -> Value {
        if depth > Value.maxDecodingDepth {
            throw ValueCodingError(.tooDeep, at: offset, "more than \(Value.maxDecodingDepth) levels")
        }
        let start = offset
        let type = try byte()
        switch type {
        case 0x00...0x7f: return .int(Int64(type))
        case 0xe0...0xff: return .int(Int64(Int8(bitPattern: type)))
        case 0xa0...0xbf: return .string(try string(Int(type & 0x1f)))
        case 0x90...0x9f: return try array(count: Int(type & 0x0f), depth: depth)
        case 0x80...0x8f: return try map(count: Int(type & 0x0f), depth: depth)
        case 0xc0: return .null
        case 0xc2: return .bool(false)
        case 0xc3: return .bool(true)
        case 0xc4: return .bytes(Array(try slice(Int(try byte()))))
        case 0xc5: return .bytes(Array(try slice(Int(try bigEndian(UInt16.self)))))
        case 0xc6: return .bytes(Array(try slice(Int(try bigEndian(UInt32.self)))))
        case 0xca: return .double(Double(Float(bitPattern: try bigEndian(UInt32.self))))
        case 0xcb: return .double(Double(bitPattern: try bigEndian(UInt64.self)))
        case 0xcc: return .int(Int64(try byte()))
        case 0xcd: return .int(Int64(try bigEndian(UInt16.self)))
        case 0xce: return .int(Int64(try bigEndian(UInt32.self)))
        case 0xcf:
            let u = try bigEndian(UInt64.self)
            guard u <= UInt64(Int64.max) else { throw ValueCodingError(.integerOverflow, at: start, "\(u)") }
            return .int(Int64(u))
        case 0xd0: return .int(Int64(Int8(bitPattern: try byte())))
        case 0xd1: return .int(Int64(Int16(bitPattern: try bigEndian(UInt16.self))))
        case 0xd2: return .int(Int64(Int32(bitPattern: try bigEndian(UInt32.self))))
        case 0xd3: return .int(Int64(bitPattern: try bigEndian(UInt64.self)))
        case 0xd9: return .string(try string(Int(try byte())))
        case 0xda: return .string(try string(Int(try bigEndian(UInt16.self))))
        case 0xdb: return .string(try string(Int(try bigEndian(UInt32.self))))
        case 0xdc: return try array(count: Int(try bigEndian(UInt16.self)), depth: depth)
        case 0xdd: return try array(count: Int(try bigEndian(UInt32.self)), depth: depth)
        case 0xde: return try map(count: Int(try bigEndian(UInt16.self)), depth: depth)
        case 0xdf: return try map(count: Int(try bigEndian(UInt32.self)), depth: depth)
        default:
            throw ValueCodingError(.unsupportedType, at: start, "type byte 0x\(String(type, radix: 16))")
        }
    }

    private mutating func array(count: Int, depth: Int) throws(ValueCodingError) -> Value {
        // Every element takes at least one byte: refuse counts the input cannot hold
        // before allocating for them.
        try need(count)
        var items: [Value] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(try readValue(depth: depth + 1)) }
        return .array(items)
    }

    private mutating func map(count: Int, depth: Int) throws(ValueCodingError) -> Value {
        try need(count * 2)
        var fields: [String: Value] = [:]
        fields.reserveCapacity(count)
        for _ in 0..<count {
            let keyOffset = offset
            guard case .string(let key) = try readValue(depth: depth + 1) else {
                throw ValueCodingError(.invalidMapKey, at: keyOffset, "map keys must be strings")
            }
            let value = try readValue(depth: depth + 1)
            if fields.updateValue(value, forKey: key) != nil {
                throw ValueCodingError(.invalidMapKey, at: keyOffset, "duplicate key \"\(key)\"")
            }
        }
        return .map(fields)
    }
}
