import CLZ4

/// LZ4 block compression of segment payloads.
enum LZ4 {
    static func compress(_ input: [UInt8]) -> [UInt8] {
        guard !input.isEmpty else { return [] }
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var out = [UInt8](repeating: 0, count: bound)
        let written = input.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                LZ4_compress_default(
                    src.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(input.count), Int32(bound))
            }
        }
        out.removeSubrange(Int(written)...)
        return out
    }

    /// Decompresses exactly `rawLength` bytes; anything else is an error.
    static func decompress(_ input: UnsafeRawBufferPointer, rawLength: Int) throws(ReplicationError) -> [UInt8] {
        guard rawLength > 0 else {
            guard input.isEmpty else { throw ReplicationError(.lengthMismatch, "payload for zero raw bytes") }
            return []
        }
        guard !input.isEmpty else { throw ReplicationError(.decompressionFailed, "empty payload") }
        var out = [UInt8](repeating: 0, count: rawLength)
        let n = out.withUnsafeMutableBytes { dst in
            LZ4_decompress_safe(
                input.baseAddress!.assumingMemoryBound(to: CChar.self), dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                Int32(input.count), Int32(rawLength))
        }
        guard n == rawLength else {
            throw ReplicationError(n < 0 ? .decompressionFailed : .lengthMismatch, "LZ4 produced \(n) of \(rawLength) bytes")
        }
        return out
    }
}
