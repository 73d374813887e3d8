/// The one big-endian codec for fixed-width integers: every stored and wire integer is
/// big-endian, so byte strings sort as their numbers do.
extension Array where Element == UInt8 {
    /// The big-endian bytes of `value`.
    @inlinable
    public init<T: FixedWidthInteger>(bigEndian value: T) {
        self = Swift.withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    /// Appends the big-endian bytes of `value`.
    @inlinable
    public mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    /// The big-endian integer at `offset` (no alignment needed).
    ///
    /// - Precondition: `offset + MemoryLayout<T>.size <= count`.
    @inlinable
    public func loadBigEndian<T: FixedWidthInteger>(fromByteOffset offset: Int = 0, as type: T.Type) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeRawPointer {
    /// The big-endian integer at `offset` (no alignment needed).
    @inlinable
    public func loadBigEndian<T: FixedWidthInteger>(fromByteOffset offset: Int = 0, as type: T.Type) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeMutableRawPointer {
    /// Stores `value` big-endian at `offset` (no alignment needed).
    @inlinable
    public func storeBigEndian<T: FixedWidthInteger>(_ value: T, toByteOffset offset: Int = 0) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Stores `value` big-endian at `offset` (no alignment needed).
    ///
    /// - Precondition: `offset + MemoryLayout<T>.size <= count`.
    @inlinable
    public func storeBigEndian<T: FixedWidthInteger>(_ value: T, toByteOffset offset: Int = 0) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
    }
}
