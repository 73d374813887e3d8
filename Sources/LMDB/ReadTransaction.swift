internal import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class TransactionState {
    var firstError: LMDBError?
    /// A write transaction's lookup cursors, one per database, opened on first use;
    /// LMDB frees them when the transaction ends.
    var cursors: [(dbi: MDB_dbi, cursor: OpaquePointer)] = []
    /// The entry the last lookup of a write transaction found, while no write has
    /// happened since: a put of the same key then overwrites it through the cursor
    /// (`MDB_CURRENT`) instead of searching the B-tree a second time.
    var found: (cursor: OpaquePointer, dbi: MDB_dbi, key: MDB_val)?

    /// The lookup cursor of `dbi` in the write transaction `txn`.
    @inline(__always)
    func cursor(_ txn: OpaquePointer, _ dbi: MDB_dbi) -> (OpaquePointer?, Int32) {
        for entry in cursors where entry.dbi == dbi { return (entry.cursor, 0) }
        var cursor: OpaquePointer?
        let rc = mdb_cursor_open(txn, dbi, &cursor)
        if rc == 0, let cursor { cursors.append((dbi, cursor)) }
        return (cursor, rc)
    }

    /// The cursor resting on `key` in `dbi` after the last lookup, if nothing was
    /// written since; forgets it (a write moves what it points at).
    @inline(__always)
    func takeFound(_ dbi: MDB_dbi, _ key: UnsafeRawBufferPointer) -> OpaquePointer? {
        guard let f = found else { return nil }
        found = nil
        guard f.dbi == dbi, f.key.mv_size == key.count, let a = f.key.mv_data, let b = key.baseAddress,
            memcmp(a, b, key.count) == 0
        else { return nil }
        return f.cursor
    }
}

/// A snapshot of the environment: reads only. It exists only inside `Environment.read`,
/// or as the read half of a `WriteTransaction` (where it also sees that transaction's
/// own writes).
///
/// Writes are methods of `WriteTransaction` only, so writing through a snapshot does not
/// compile.
///
/// - Important: Byte views (`RawSpan`) handed to closures point into the memory map
///   and are valid only inside that closure; copy what must outlive it.
public struct ReadTransaction: ~Copyable {
    let txn: OpaquePointer
    /// The owning environment's handle, to catch handles of another environment.
    let environmentToken: UInt
    /// True when this is the read half of a write: a failed operation then poisons it.
    let insideWrite: Bool
    let state = TransactionState()

    init(txn: OpaquePointer, environment: Environment, insideWrite: Bool) {
        self.txn = txn
        self.environmentToken = UInt(bitPattern: Int(bitPattern: environment.handle))
        self.insideWrite = insideWrite
    }

    @inline(__always)
    func validate(_ db: Database) {
        precondition(
            db.environment == environmentToken,
            "\(db) belongs to another environment"
        )
    }

    @inline(__always)
    func record(_ rc: Int32, _ operation: @autoclosure () -> String) throws(LMDBError) {
        guard rc != 0 else { return }
        let error = LMDBError(rc, operation())
        if insideWrite && state.firstError == nil { state.firstError = error }
        throw error
    }

    // MARK: Reads

    /// Calls `body` with a zero-copy view of the value stored under `key`.
    ///
    /// - Returns: `body`'s result, or nil when the key is absent.
    public func withValue<R>(
        forKey key: [UInt8], in db: Database, _ body: (RawSpan) throws -> R
    ) throws -> R? {
        try key.withUnsafeBytes { k in
            try withValue(forKey: k, in: db) { v in try body(v.bytes) }
        }
    }

    /// A copy of the value stored under `key`, or nil when absent.
    public func value(forKey key: [UInt8], in db: Database) throws(LMDBError) -> [UInt8]? {
        try withBytes(key) { (k) throws(LMDBError) in try withValue(forKey: k, in: db) { Array($0) } }
    }

    /// Zero-copy lookup for callers inside this package (no allocation).
    package func withValue<R>(
        forKey key: UnsafeRawBufferPointer, in db: Database, _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R? {
        try lookup(key, in: db).map(body)
    }

    /// Zero-copy lookup with a typed error, for bodies that cannot fail.
    package func withValue<R>(
        forKey key: UnsafeRawBufferPointer, in db: Database, _ body: (UnsafeRawBufferPointer) -> R
    ) throws(LMDBError) -> R? {
        try lookup(key, in: db).map(body)
    }

    /// The value stored under `key`, pointing into the map; nil when absent.
    private func lookup(_ key: UnsafeRawBufferPointer, in db: Database) throws(LMDBError) -> UnsafeRawBufferPointer? {
        validate(db)
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        if insideWrite {
            // Through the transaction's cursor, so that a put of the same key can write
            // where the lookup landed.
            state.found = nil
            let (cursor, opened) = state.cursor(txn, db.dbi)
            try record(opened, "open cursor on \(db.name)")
            let rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_KEY)
            if rc == MDB_NOTFOUND { return nil }
            try record(rc, "get from \(db.name)")
            state.found = (cursor!, db.dbi, k)
            return UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
        }
        let rc = mdb_get(txn, db.dbi, &k, &v)
        if rc == MDB_NOTFOUND { return nil }
        try record(rc, "get from \(db.name)")
        return UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
    }

    /// Entry and page counts of `db` as seen by this transaction.
    public func statistics(of db: Database) throws(LMDBError) -> DatabaseStatistics {
        validate(db)
        var st = MDB_stat()
        try record(mdb_stat(txn, db.dbi, &st), "stat \(db.name)")
        return DatabaseStatistics(
            entries: st.ms_entries,
            depth: Int(st.ms_depth),
            branchPages: st.ms_branch_pages,
            leafPages: st.ms_leaf_pages,
            overflowPages: st.ms_overflow_pages,
            pageSize: Int(st.ms_psize)
        )
    }

    // MARK: Cursors

    /// Runs `body` with a cursor over `db`; the cursor closes when `body` returns.
    public func withCursor<R>(on db: Database, _ body: (inout Cursor) throws -> R) throws -> R {
        validate(db)
        var cursor: OpaquePointer?
        try record(mdb_cursor_open(txn, db.dbi, &cursor), "open cursor on \(db.name)")
        var c = Cursor(cursor: cursor!, transaction: self)
        return try body(&c)
    }

    /// Visits the entries of `range` in key order (or reverse order) with zero-copy
    /// views; `body` returns false to stop early.
    public func forEach(
        in db: Database, range: KeyRange = .all, reverse: Bool = false,
        _ body: (_ key: RawSpan, _ value: RawSpan) throws -> Bool
    ) throws {
        try withCursor(on: db) { cursor in
            try cursor.scan(range: range, reverse: reverse) { k, v in try body(k.bytes, v.bytes) }
        }
    }
}

/// `Array.withUnsafeBytes` with a typed error (the standard library's is untyped).
@inline(__always)
func withBytes<R>(
    _ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(LMDBError) -> R
) throws(LMDBError) -> R {
    let result: Result<R, LMDBError> = bytes.withUnsafeBytes { buffer in
        do throws(LMDBError) { return .success(try body(buffer)) } catch { return .failure(error) }
    }
    return try result.get()
}
