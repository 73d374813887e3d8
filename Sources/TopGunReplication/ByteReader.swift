import TopGunCore

/// A bounds-checked reader over untrusted bytes; every read throws on truncation.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func need(_ n: Int) throws(ReplicationError) {
        guard n >= 0, n <= remaining else {
            throw ReplicationError(.malformed, "need \(n) bytes at offset \(offset), have \(remaining)")
        }
    }

    mutating func u8() throws(ReplicationError) -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func be<T: FixedWidthInteger>(_: T.Type) throws(ReplicationError) -> T {
        try need(MemoryLayout<T>.size)
        defer { offset += MemoryLayout<T>.size }
        return bytes.loadBigEndian(fromByteOffset: offset, as: T.self)
    }

    mutating func slice(_ n: Int) throws(ReplicationError) -> UnsafeRawBufferPointer {
        try need(n)
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
    }

    mutating func stamp() throws(ReplicationError) -> HLCTimestamp {
        HLCTimestamp(loadingFrom: try slice(16).baseAddress!)
    }

    mutating func string(_ n: Int) throws(ReplicationError) -> String {
        guard let s = String(validating: try slice(n), as: UTF8.self) else {
            throw ReplicationError(.malformed, "invalid UTF-8 at offset \(offset - n)")
        }
        return s
    }
}

extension Array where Element == UInt8 {
    mutating func appendStamp(_ t: HLCTimestamp) {
        appendBigEndian(t.packedTime)
        appendBigEndian(t.node.rawValue)
    }
}
