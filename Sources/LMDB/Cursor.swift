internal import CLMDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A position in one database of one transaction; see `ReadTransaction.withCursor`
/// (and `WriteTransaction.deleteEntry(at:)` to delete through it).
///
/// Positioning methods return false when there is no entry to move to.
public struct Cursor: ~Copyable {
    let cursor: OpaquePointer
    let state: TransactionState
    private var key = MDB_val()
    private var value = MDB_val()

    init(cursor: OpaquePointer, transaction: borrowing ReadTransaction) {
        self.cursor = cursor
        self.state = transaction.state
    }

    deinit { mdb_cursor_close(cursor) }

    private mutating func move(_ op: MDB_cursor_op) throws(LMDBError) -> Bool {
        let rc = mdb_cursor_get(cursor, &key, &value, op)
        if rc == MDB_NOTFOUND { return false }
        if rc != 0 { throw LMDBError(rc, "cursor") }
        return true
    }

    /// Moves to the first entry.
    public mutating func first() throws(LMDBError) -> Bool { try move(MDB_FIRST) }
    /// Moves to the last entry.
    public mutating func last() throws(LMDBError) -> Bool { try move(MDB_LAST) }
    /// Moves to the next entry.
    public mutating func next() throws(LMDBError) -> Bool { try move(MDB_NEXT) }
    /// Moves to the previous entry.
    public mutating func previous() throws(LMDBError) -> Bool { try move(MDB_PREV) }

    /// Moves to the first entry whose key is at least `target`.
    public mutating func seek(atLeast target: [UInt8]) throws(LMDBError) -> Bool {
        try withBytes(target) { (t) throws(LMDBError) in try seek(atLeast: t) }
    }

    package mutating func seek(atLeast target: UnsafeRawBufferPointer) throws(LMDBError) -> Bool {
        key = MDB_val(mv_size: target.count, mv_data: UnsafeMutableRawPointer(mutating: target.baseAddress))
        return try move(MDB_SET_RANGE)
    }

    /// The current key, zero-copy, valid until the cursor moves or the transaction ends.
    package var currentKey: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size) }
    /// The current value, zero-copy, valid until the cursor moves or the transaction ends.
    package var currentValue: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size)
    }

    /// Calls `body` with views of the current entry.
    public func withCurrent<R>(_ body: (_ key: RawSpan, _ value: RawSpan) throws -> R) rethrows -> R {
        try body(currentKey.bytes, currentValue.bytes)
    }

    /// Walks `range` forwards or backwards; `body` returns false to stop.
    package mutating func scan(
        range: KeyRange, reverse: Bool,
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        if !reverse {
            var found = try range.lower.map { (l) throws(LMDBError) in try seek(atLeast: l) } ?? first()
            while found {
                if let upper = range.upper, compare(currentKey, upper) >= 0 { return }
                if try !body(currentKey, currentValue) { return }
                found = try next()
            }
        } else {
            var found: Bool
            if let upper = range.upper {
                found = try seek(atLeast: upper) ? previous() : last()
            } else {
                found = try last()
            }
            while found {
                if let lower = range.lower, compare(currentKey, lower) < 0 { return }
                if try !body(currentKey, currentValue) { return }
                found = try previous()
            }
        }
    }
}

/// Byte-wise lexicographic comparison, LMDB's default key order.
@inline(__always)
func compare(_ a: UnsafeRawBufferPointer, _ b: [UInt8]) -> Int {
    b.withUnsafeBytes { b in
        let n = min(a.count, b.count)
        if n > 0 {
            let c = memcmp(a.baseAddress!, b.baseAddress!, n)
            if c != 0 { return Int(c) }
        }
        return a.count - b.count
    }
}
