extension MessagePackReader {
    /// Reads a map header; nil (and nothing consumed) when the next value is not a map.
    mutating func mapCount() throws(ValueCodingError) -> Int? {
        try need(1)
        let type = buffer[offset]
        switch type {
        case 0x80...0x8f:
            offset += 1
            return Int(type & 0x0f)
        case 0xde:
            offset += 1
            return Int(try bigEndian(UInt16.self))
        case 0xdf:
            offset += 1
            return Int(try bigEndian(UInt32.self))
        default: return nil
        }
    }

    /// Reads a string key's bytes when the next value is a string.
    mutating func stringBytes() throws(ValueCodingError) -> UnsafeRawBufferPointer? {
        try need(1)
        let type = buffer[offset]
        switch type {
        case 0xa0...0xbf:
            offset += 1
            return try slice(Int(type & 0x1f))
        case 0xd9:
            offset += 1
            return try slice(Int(try byte()))
        case 0xda:
            offset += 1
            return try slice(Int(try bigEndian(UInt16.self)))
        case 0xdb:
            offset += 1
            return try slice(Int(try bigEndian(UInt32.self)))
        default: return nil
        }
    }
}

extension Value {
    /// The value at dotted `path` inside the MessagePack `buffer`, decoding only that
    /// value: other fields are skipped. Same result as `Value(messagePack:)[path:]`.
    ///
    /// - Throws: `ValueCodingError` for malformed input on the way to the field.
    public static func field(atPath path: String, in buffer: UnsafeRawBufferPointer) throws(ValueCodingError) -> Value? {
        var reader = MessagePackReader(buffer)
        var parts = path.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)[...]
        while let part = parts.popFirst() {
            guard let count = try reader.mapCount() else { return nil }
            var found = false
            for _ in 0..<count {
                guard let key = try reader.stringBytes() else {
                    throw ValueCodingError(.invalidMapKey, at: reader.offset, "map keys must be strings")
                }
                if key.elementsEqual(part) {
                    found = true
                    break
                }
                try reader.skipValue()
            }
            guard found else { return nil }
        }
        return try reader.readValue(depth: 0)
    }
}
