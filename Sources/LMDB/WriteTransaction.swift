internal import CLMDB

/// A write transaction: everything a `ReadTransaction` reads (seeing this transaction's
/// own writes) plus puts and deletes. It exists only inside `Environment.write`, which
/// commits it when the closure returns and aborts it when the closure throws.
///
/// - Important: After any failed operation the transaction is poisoned: later writes
///   throw `.transactionPoisoned` and the transaction aborts with the first error.
public struct WriteTransaction: ~Copyable {
    /// The read half; reads through it see this transaction's writes.
    public let reads: ReadTransaction

    init(txn: OpaquePointer, environment: Environment) {
        reads = ReadTransaction(txn: txn, environment: environment, insideWrite: true)
    }

    var state: TransactionState { reads.state }

    @inline(__always)
    func checkWritable(_ operation: @autoclosure () -> String) throws(LMDBError) {
        if let first = reads.state.firstError {
            throw LMDBError(code: .transactionPoisoned, message: "\(operation()): transaction failed earlier: \(first)")
        }
    }

    // MARK: Reads (the same as `reads`)

    /// See `ReadTransaction.withValue(forKey:in:_:)`.
    public func withValue<R>(forKey key: [UInt8], in db: Database, _ body: (RawSpan) throws -> R) throws -> R? {
        try reads.withValue(forKey: key, in: db, body)
    }

    /// See `ReadTransaction.value(forKey:in:)`.
    public func value(forKey key: [UInt8], in db: Database) throws(LMDBError) -> [UInt8]? {
        try reads.value(forKey: key, in: db)
    }

    package func withValue<R>(
        forKey key: UnsafeRawBufferPointer, in db: Database, _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R? {
        try reads.withValue(forKey: key, in: db, body)
    }

    package func withValue<R>(
        forKey key: UnsafeRawBufferPointer, in db: Database, _ body: (UnsafeRawBufferPointer) -> R
    ) throws(LMDBError) -> R? {
        try reads.withValue(forKey: key, in: db, body)
    }

    /// See `ReadTransaction.statistics(of:)`.
    public func statistics(of db: Database) throws(LMDBError) -> DatabaseStatistics {
        try reads.statistics(of: db)
    }

    /// See `ReadTransaction.withCursor(on:_:)`; `deleteEntry(at:)` deletes through it.
    public func withCursor<R>(on db: Database, _ body: (inout Cursor) throws -> R) throws -> R {
        try reads.withCursor(on: db, body)
    }

    /// See `ReadTransaction.forEach(in:range:reverse:_:)`.
    public func forEach(
        in db: Database, range: KeyRange = .all, reverse: Bool = false,
        _ body: (_ key: RawSpan, _ value: RawSpan) throws -> Bool
    ) throws {
        try reads.forEach(in: db, range: range, reverse: reverse, body)
    }

    // MARK: Writes

    /// Stores `value` under `key`, replacing any previous value unless `flags` say otherwise.
    ///
    /// - Throws: `.keyExists` (with `.noOverwrite`, or `.append` out of order),
    ///   `.badValueSize` for an empty or oversized key, `.mapFull`,
    ///   `.readOnlyTransaction`.
    public func put(_ value: [UInt8], forKey key: [UInt8], in db: Database, flags: PutFlags = []) throws(LMDBError) {
        try withBytes(key) { (k) throws(LMDBError) in
            try withBytes(value) { (v) throws(LMDBError) in try put(v, forKey: k, in: db, flags: flags) }
        }
    }

    /// Zero-copy put for callers inside this package.
    package func put(
        _ value: UnsafeRawBufferPointer, forKey key: UnsafeRawBufferPointer, in db: Database, flags: PutFlags = []
    ) throws(LMDBError) {
        reads.validate(db)
        try checkWritable("put into \(db.name)")
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        if flags.isEmpty, let cursor = reads.state.takeFound(db.dbi, key) {
            try reads.record(mdb_cursor_put(cursor, &k, &v, UInt32(MDB_CURRENT)), "put into \(db.name)")
            return
        }
        reads.state.found = nil
        try reads.record(mdb_put(reads.txn, db.dbi, &k, &v, flags.rawValue), "put into \(db.name)")
    }

    /// Reserves `count` bytes for `key` and lets `fill` write them in place (`MDB_RESERVE`).
    package func reserve(
        _ count: Int, forKey key: UnsafeRawBufferPointer, in db: Database, flags: PutFlags = [],
        _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(LMDBError) {
        reads.validate(db)
        try checkWritable("reserve in \(db.name)")
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: count, mv_data: nil)
        if flags.isEmpty, let cursor = reads.state.takeFound(db.dbi, key) {
            // The lookup just before found this key: overwrite it where the cursor rests.
            try reads.record(mdb_cursor_put(cursor, &k, &v, UInt32(MDB_CURRENT | MDB_RESERVE)), "reserve in \(db.name)")
        } else {
            reads.state.found = nil
            try reads.record(mdb_put(reads.txn, db.dbi, &k, &v, flags.rawValue | UInt32(MDB_RESERVE)), "reserve in \(db.name)")
        }
        fill(UnsafeMutableRawBufferPointer(start: v.mv_data, count: count))
    }

    /// Removes `key`.
    ///
    /// - Returns: true if the key existed.
    @discardableResult
    public func delete(_ key: [UInt8], in db: Database) throws(LMDBError) -> Bool {
        try withBytes(key) { (k) throws(LMDBError) in try delete(k, in: db) }
    }

    @discardableResult
    package func delete(_ key: UnsafeRawBufferPointer, in db: Database) throws(LMDBError) -> Bool {
        reads.validate(db)
        try checkWritable("delete from \(db.name)")
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        reads.state.found = nil
        let rc = mdb_del(reads.txn, db.dbi, &k, nil)
        if rc == MDB_NOTFOUND { return false }
        try reads.record(rc, "delete from \(db.name)")
        return true
    }

    /// Removes every entry of `db` (the database itself stays).
    public func removeAll(in db: Database) throws(LMDBError) {
        reads.validate(db)
        try checkWritable("clear \(db.name)")
        reads.state.found = nil
        try reads.record(mdb_drop(reads.txn, db.dbi, 0), "clear \(db.name)")
    }


    /// Deletes the entry `cursor` points at; the cursor then points at the next one.
    ///
    /// - Precondition: `cursor` was opened on this transaction.
    public func deleteEntry(at cursor: inout Cursor) throws(LMDBError) {
        precondition(cursor.state === reads.state, "cursor belongs to another transaction")
        try checkWritable("cursor delete")
        reads.state.found = nil
        try reads.record(mdb_cursor_del(cursor.cursor, 0), "cursor delete")
    }
}
