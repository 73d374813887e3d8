/// The one rule for what may be stored: a value is accepted on the way in only if the
/// decoder reads it back on the way out, and it fits in a replication segment.
///
/// `validate(messagePack:)` walks encoded bytes with the decoder's own limits (depth,
/// UTF-8, string map keys without duplicates, integers within `Int64`, lengths within
/// the input) without building a `Value`, so it is cheap enough for every write.
extension Value {
    /// Largest encoded value accepted (a replication frame must carry it with room to
    /// spare).
    public static let maxEncodedBytes = 16 << 20

    /// Checks that `bytes` hold exactly one value the decoder accepts.
    ///
    /// - Throws: `ValueCodingError`, the same code `Value(messagePack:)` would throw,
    ///   or `.tooLarge`.
    public static func validate(messagePack bytes: UnsafeRawBufferPointer) throws(ValueCodingError) {
        guard bytes.count <= maxEncodedBytes else {
            throw ValueCodingError(.tooLarge, at: 0, "\(bytes.count) bytes; at most \(maxEncodedBytes) are stored")
        }
        var reader = MessagePackReader(bytes)
        try reader.skipValue(depth: 0)
        if reader.offset != bytes.count {
            throw ValueCodingError(.trailingBytes, at: reader.offset, "\(bytes.count - reader.offset) bytes after the value")
        }
    }

    /// Checks `bytes` (see `validate(messagePack:)`).
    public static func validate(messagePack bytes: [UInt8]) throws(ValueCodingError) {
        let result: Result<Void, ValueCodingError> = bytes.withUnsafeBytes { raw in
            do throws(ValueCodingError) {
                try validate(messagePack: raw)
                return .success(())
            } catch { return .failure(error) }
        }
        try result.get()
    }

    /// The canonical encoding, if the value may be stored: nested at most
    /// `maxDecodingDepth` levels and at most `maxEncodedBytes` long.
    ///
    /// - Throws: `ValueCodingError` (`.tooDeep`, `.tooLarge`).
    public func storableEncoding() throws(ValueCodingError) -> [UInt8] {
        try checkNesting()
        let bytes = encoded
        try Self.validate(messagePack: bytes)
        return bytes
    }

    /// Checks the nesting limit on the tree, before encoding it: encoding a
    /// pathologically deep value would recurse as deep.
    ///
    /// - Throws: `ValueCodingError(.tooDeep)`.
    public func checkNesting() throws(ValueCodingError) { try checkDepth(0) }

    private func checkDepth(_ depth: Int) throws(ValueCodingError) {
        if depth > Value.maxDecodingDepth {
            throw ValueCodingError(.tooDeep, at: 0, "more than \(Value.maxDecodingDepth) levels")
        }
        switch self {
        case .array(let items): for item in items { try item.checkDepth(depth + 1) }
        case .map(let fields): for value in fields.values { try value.checkDepth(depth + 1) }
        default: break
        }
    }
}

extension MessagePackReader {
    /// Reads past one complete value without building it, checking it as
    /// `readValue(depth:)` would.
    public mutating func skipValue(depth: Int = 0) throws(ValueCodingError) {
        if depth > Value.maxDecodingDepth {
            throw ValueCodingError(.tooDeep, at: offset, "more than \(Value.maxDecodingDepth) levels")
        }
        let start = offset
        let type = try byte()
        switch type {
        case 0x00...0x7f, 0xe0...0xff, 0xc0, 0xc2, 0xc3: return
        case 0xa0...0xbf: try skipString(Int(type & 0x1f))
        case 0x90...0x9f: try skipArray(count: Int(type & 0x0f), depth: depth)
        case 0x80...0x8f: try skipMap(count: Int(type & 0x0f), depth: depth)
        case 0xc4: _ = try slice(Int(try byte()))
        case 0xc5: _ = try slice(Int(try bigEndian(UInt16.self)))
        case 0xc6: _ = try slice(Int(try bigEndian(UInt32.self)))
        case 0xca: _ = try bigEndian(UInt32.self)
        case 0xcb: _ = try bigEndian(UInt64.self)
        case 0xcc, 0xd0: _ = try byte()
        case 0xcd, 0xd1: _ = try bigEndian(UInt16.self)
        case 0xce, 0xd2: _ = try bigEndian(UInt32.self)
        case 0xcf:
            let u = try bigEndian(UInt64.self)
            guard u <= UInt64(Int64.max) else { throw ValueCodingError(.integerOverflow, at: start, "\(u)") }
        case 0xd3: _ = try bigEndian(UInt64.self)
        case 0xd9: try skipString(Int(try byte()))
        case 0xda: try skipString(Int(try bigEndian(UInt16.self)))
        case 0xdb: try skipString(Int(try bigEndian(UInt32.self)))
        case 0xdc: try skipArray(count: Int(try bigEndian(UInt16.self)), depth: depth)
        case 0xdd: try skipArray(count: Int(try bigEndian(UInt32.self)), depth: depth)
        case 0xde: try skipMap(count: Int(try bigEndian(UInt16.self)), depth: depth)
        case 0xdf: try skipMap(count: Int(try bigEndian(UInt32.self)), depth: depth)
        default:
            throw ValueCodingError(.unsupportedType, at: start, "type byte 0x\(String(type, radix: 16))")
        }
    }

    private mutating func skipString(_ n: Int) throws(ValueCodingError) {
        let start = offset
        let raw = try slice(n)
        guard Self.isValidUTF8(raw) else { throw ValueCodingError(.invalidUTF8, at: start) }
    }

    static func isASCII(_ raw: UnsafeRawBufferPointer) -> Bool { !raw.contains { $0 >= 0x80 } }

    /// UTF-8 validity without building a `String` for the common all-ASCII case.
    @inline(__always)
    static func isValidUTF8(_ raw: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let n = raw.count
        while i + 8 <= n {
            if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 {
                return String(validating: raw, as: UTF8.self) != nil
            }
            i += 8
        }
        while i < n {
            if raw[i] >= 0x80 { return String(validating: raw, as: UTF8.self) != nil }
            i += 1
        }
        return true
    }

    private mutating func skipArray(count: Int, depth: Int) throws(ValueCodingError) {
        try need(count)
        for _ in 0..<count { try skipValue(depth: depth + 1) }
    }

    private mutating func skipMap(count: Int, depth: Int) throws(ValueCodingError) {
        try need(count * 2)
        // Keys seen so far, as byte ranges: compared pairwise while there are few (no
        // allocation for the common small map), through a set beyond that.
        var ranges: [Range<Int>] = []
        var keys = Set<String>()
        for _ in 0..<count {
            let keyOffset = offset
            let type = try byte()
            let length: Int
            switch type {
            case 0xa0...0xbf: length = Int(type & 0x1f)
            case 0xd9: length = Int(try byte())
            case 0xda: length = Int(try bigEndian(UInt16.self))
            case 0xdb: length = Int(try bigEndian(UInt32.self))
            default:
                // The decoder reads the key as a value first: a too-deep or malformed
                // key fails as it would there.
                offset = keyOffset
                try skipValue(depth: depth + 1)
                throw ValueCodingError(.invalidMapKey, at: keyOffset, "map keys must be strings")
            }
            if depth + 1 > Value.maxDecodingDepth {
                throw ValueCodingError(.tooDeep, at: keyOffset, "more than \(Value.maxDecodingDepth) levels")
            }
            let start = offset
            let raw = try slice(length)
            guard Self.isValidUTF8(raw) else { throw ValueCodingError(.invalidUTF8, at: start) }
            let duplicate: Bool
            // Keys are compared as the decoder's dictionary does: as Strings (canonical
            // equivalence), bytewise only when both are ASCII.
            if count <= 16 {
                let ascii = Self.isASCII(raw)
                duplicate = ranges.contains { range in
                    let other = UnsafeRawBufferPointer(rebasing: buffer[range])
                    return ascii && Self.isASCII(other)
                        ? other.elementsEqual(raw) : String(decoding: other, as: UTF8.self) == String(decoding: raw, as: UTF8.self)
                }
                if count > 1 { ranges.append(start..<start + length) }
            } else {
                duplicate = !keys.insert(String(decoding: raw, as: UTF8.self)).inserted
            }
            guard !duplicate else {
                throw ValueCodingError(.invalidMapKey, at: keyOffset, "duplicate key \"\(String(decoding: raw, as: UTF8.self))\"")
            }
            try skipValue(depth: depth + 1)
        }
    }
}
