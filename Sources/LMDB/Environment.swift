internal import CLMDB
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An open LMDB environment: one memory-mapped file holding named databases.
///
/// ```swift
/// let env = try Environment(path: "data", options: .init(databases: ["records"]))
/// let records = env.database("records")
/// try env.write { txn in try txn.put([1], as: [2], in: records) }
/// let value = try env.read { txn in try txn.value(forKey: [1], in: records) }
/// ```
///
/// - Important: Transactions exist only inside `read` and `write` closures. Never
///   `await` or block on another transaction inside one. A `write` started inside a
///   `read` on the same thread stops the process with a message (growing the map
///   waits for readers, so it would deadlock). A `write` body can run more
///   than once: when the map is full the transaction is aborted, the map grows, and
///   the body is retried, so it must not have side effects outside the transaction.
public final class Environment: @unchecked Sendable {
    // @unchecked: the MDB_env pointer is safe to share (opened with MDB_NOTLS); the
    // mutable map size is guarded by `resizeLock` and `mapSizeState`.

    /// How commits reach the disk.
    public enum Durability: Sendable, Equatable {
        /// fsync data and meta page on every commit (LMDB's default).
        case durable
        /// Skip the meta-page fsync: a crash may lose the last commits but never corrupts.
        case noMetaSync
        /// Never fsync on commit: for bulk loads and benchmarks; a crash of the machine
        /// (not of the process) can lose recent commits.
        case noSync
    }

    /// Settings fixed at open.
    public struct Options: Sendable {
        /// Names of the databases to open (created when missing, unless read-only).
        public var databases: [String]
        /// Initial map size in bytes; the map grows by doubling when full.
        public var mapSize: Int
        /// The map never grows past this; a write that needs more fails with `.mapFull`.
        public var maxMapSize: Int
        public var maxReaders: UInt32
        public var durability: Durability
        /// Map the file writable (`MDB_WRITEMAP`): fewer copies, but stray pointer writes
        /// could corrupt the file.
        public var writeMap: Bool
        public var readOnly: Bool

        public init(
            databases: [String] = [],
            mapSize: Int = 1 << 30,
            maxMapSize: Int = 1 << 40,
            maxReaders: UInt32 = 126,
            durability: Durability = .durable,
            writeMap: Bool = false,
            readOnly: Bool = false
        ) {
            self.databases = databases
            self.mapSize = mapSize
            self.maxMapSize = maxMapSize
            self.maxReaders = maxReaders
            self.durability = durability
            self.writeMap = writeMap
            self.readOnly = readOnly
        }
    }

    /// Sizes reported by `mdb_env_info`.
    public struct Info: Sendable {
        public var mapSize: Int
        public var lastPageNumber: Int
        public var lastTransactionID: Int
        public var maxReaders: Int
        public var readers: Int
        public var pageSize: Int
    }

    let handle: OpaquePointer
    public let path: String
    public let options: Options
    private let canonicalPath: String
    private let databases: [String: Database]
    private let resizeLock: UnsafeMutablePointer<pthread_rwlock_t>
    private let mapSizeState: Mutex<Int>
    /// Set once by `close()`; read under the resize lock, written under it exclusively.
    private var closed = false

    private static let openPaths = Mutex<Set<String>>([])

    /// Opens (and creates, unless read-only) the environment in directory `path`.
    ///
    /// - Throws: `LMDBError` with `.notADirectory` when `path` is a file,
    ///   `.alreadyOpen` when this process already has it open, `.invalid` or
    ///   `.versionMismatch` for a file that is not a usable LMDB environment,
    ///   `.permissionDenied` and other `errno` codes from the file system.
    public init(path: String, options: Options = .init()) throws(LMDBError) {
        var st = stat()
        if stat(path, &st) != 0 {
            if options.readOnly || mkdir(path, 0o755) != 0 {
                throw LMDBError(errno, "open \(path)")
            }
        } else if (st.st_mode & S_IFMT) != S_IFDIR {
            throw LMDBError(code: .notADirectory, message: "open \(path): not a directory")
        }
        guard let resolved = realpath(path, nil) else { throw LMDBError(errno, "open \(path)") }
        let canonical = String(cString: resolved)
        free(resolved)
        let inserted = Self.openPaths.withLock { $0.insert(canonical).inserted }
        guard inserted else {
            throw LMDBError(code: .alreadyOpen, message: "open \(path): environment already open in this process")
        }

        var env: OpaquePointer?
        var rc = mdb_env_create(&env)
        guard rc == 0, env != nil else {
            Self.openPaths.withLock { _ = $0.remove(canonical) }
            throw LMDBError(rc, "mdb_env_create")
        }
        var flags = UInt32(MDB_NOTLS)
        switch options.durability {
        case .durable: break
        case .noMetaSync: flags |= UInt32(MDB_NOMETASYNC)
        case .noSync: flags |= UInt32(MDB_NOSYNC)
        }
        if options.writeMap { flags |= UInt32(MDB_WRITEMAP) }
        if options.readOnly { flags |= UInt32(MDB_RDONLY) }
        rc = mdb_env_set_maxdbs(env, MDB_dbi(max(options.databases.count, 1)))
        if rc == 0 { rc = mdb_env_set_maxreaders(env, options.maxReaders) }
        if rc == 0 { rc = mdb_env_set_mapsize(env, options.mapSize) }
        if rc == 0 { rc = mdb_env_open(env, path, flags, 0o644) }
        if options.readOnly && (rc == EACCES || rc == EROFS) {
            // The lock file cannot be opened for writing (a read-only directory or
            // file system): read without the lock table. Readers then do not register,
            // so a writer elsewhere could reuse pages under them; nothing here writes.
            mdb_env_close(env)
            rc = mdb_env_create(&env)
            if rc == 0, let env {
                rc = mdb_env_set_maxdbs(env, MDB_dbi(max(options.databases.count, 1)))
                if rc == 0 { rc = mdb_env_open(env, path, flags | UInt32(MDB_NOLOCK), 0o644) }
            }
        }
        guard let env else {
            Self.openPaths.withLock { _ = $0.remove(canonical) }
            throw LMDBError(rc, "mdb_env_create")
        }
        if rc != 0 {
            mdb_env_close(env)
            Self.openPaths.withLock { _ = $0.remove(canonical) }
            throw LMDBError(rc, "open \(path)")
        }

        var opened: [String: Database] = [:]
        do throws(LMDBError) {
            var txn: OpaquePointer?
            var rc = mdb_txn_begin(env, nil, options.readOnly ? UInt32(MDB_RDONLY) : 0, &txn)
            // Another process grew the map since the file was opened: adopt its size.
            for _ in 0..<8 where rc == MDB_MAP_RESIZED {
                try check(mdb_env_set_mapsize(env, 0), "adopt map size")
                rc = mdb_txn_begin(env, nil, options.readOnly ? UInt32(MDB_RDONLY) : 0, &txn)
            }
            try check(rc, "begin")
            for name in options.databases {
                var dbi = MDB_dbi()
                let rc = mdb_dbi_open(txn, name, options.readOnly ? 0 : UInt32(MDB_CREATE), &dbi)
                if rc != 0 {
                    mdb_txn_abort(txn)
                    throw LMDBError(rc, "open database \(name)")
                }
                opened[name] = Database(dbi: dbi, name: name, environment: UInt(bitPattern: Int(bitPattern: env)))
            }
            try check(mdb_txn_commit(txn), "commit database list")
        } catch {
            mdb_env_close(env)
            Self.openPaths.withLock { _ = $0.remove(canonical) }
            throw error
        }

        var info = MDB_envinfo()
        mdb_env_info(env, &info)

        self.handle = env
        self.path = path
        self.options = options
        self.canonicalPath = canonical
        self.resizeLock = .allocate(capacity: 1)
        pthread_rwlock_init(resizeLock, nil)
        self.mapSizeState = Mutex(info.me_mapsize)
        self.databases = opened
    }

    deinit {
        close()
        pthread_rwlock_destroy(resizeLock)
        resizeLock.deallocate()
    }

    /// Closes the environment once the transactions in flight have ended. Later
    /// transactions throw `.closed`; the directory can be opened again at once.
    /// Closing twice does nothing.
    public func close() {
        lockExclusively()
        defer { unlockAfterTransaction() }
        guard !closed else { return }
        closed = true
        mdb_env_close(handle)
        Self.openPaths.withLock { _ = $0.remove(canonicalPath) }
    }

    /// Throws `.closed` after `close()`; call with the resize lock held.
    private func checkOpen(_ operation: @autoclosure () -> String) throws(LMDBError) {
        if closed { throw LMDBError(code: .closed, message: "\(operation()): the environment is closed") }
    }

    /// The handle of a database named in `Options.databases`.
    ///
    /// - Precondition: `name` was listed when the environment was opened.
    public func database(_ name: String) -> Database {
        guard let db = databases[name] else {
            preconditionFailure("database \(name) was not opened with this environment")
        }
        return db
    }

    /// The current map size in bytes.
    public var mapSize: Int { mapSizeState.withLock { $0 } }

    /// Flushes buffered commits to disk (needed only with `.noSync` / `.noMetaSync`).
    public func sync() throws(LMDBError) {
        lockForTransaction()
        defer { unlockAfterTransaction() }
        try checkOpen("sync")
        try check(mdb_env_sync(handle, 1), "sync")
    }

    /// Writes a consistent copy of the environment as `data.mdb` in directory `path`
    /// (which must exist and hold no `data.mdb`), while writers go on: the copy is the
    /// snapshot of one read transaction. `compact` leaves out free pages and
    /// renumbers the rest (`MDB_CP_COMPACT`).
    ///
    /// - Throws: `LMDBError` (`.noSpace` for a full disk, `errno` codes of the file
    ///   system).
    public func copy(toDirectory path: String, compact: Bool = true) throws(LMDBError) {
        lockForTransaction()
        defer { unlockAfterTransaction() }
        try checkOpen("copy")
        try check(mdb_env_copy2(handle, path, compact ? UInt32(MDB_CP_COMPACT) : 0), "copy to \(path)")
    }

    /// True when the file system holding the environment has less than a megabyte
    /// left: how a write error is told apart from a full disk.
    public var fileSystemIsFull: Bool {
        var fs = statvfs()
        guard statvfs(path, &fs) == 0 else { return false }
        return UInt64(fs.f_bavail) * UInt64(fs.f_frsize) < 1 << 20
    }

    /// Environment sizes and reader counts (`mdb_env_info`, `mdb_env_stat`).
    public func info() -> Info {
        lockForTransaction()
        defer { unlockAfterTransaction() }
        if closed { return Info(mapSize: 0, lastPageNumber: 0, lastTransactionID: 0, maxReaders: 0, readers: 0, pageSize: 0) }
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        var st = MDB_stat()
        mdb_env_stat(handle, &st)
        return Info(
            mapSize: info.me_mapsize,
            lastPageNumber: info.me_last_pgno,
            lastTransactionID: info.me_last_txnid,
            maxReaders: Int(info.me_maxreaders),
            readers: Int(info.me_numreaders),
            pageSize: Int(st.ms_psize)
        )
    }

    // MARK: Transactions

    /// Runs `body` in a read-only snapshot transaction.
    ///
    /// Readers never block the writer and see the state of the last commit before
    /// they began (MVCC). Any thread may call this concurrently.
    public func read<R>(_ body: (borrowing ReadTransaction) throws -> R) throws -> R {
        try readOwned { (txn: consuming ReadTransaction) in try body(txn) }
    }

    /// `read` handing the transaction over to `body`, which may wrap it in a type of
    /// its own (a store's snapshot); the transaction still ends when `body` returns.
    package func readOwned<R>(_ body: (consuming ReadTransaction) throws -> R) throws -> R {
        lockForTransaction()
        defer { unlockAfterTransaction() }
        try checkOpen("read")
        let txn = try begin(readOnly: true)
        defer { mdb_txn_abort(txn) }
        let token = UInt(bitPattern: Int(bitPattern: handle))
        ThreadReads.enter(token)
        defer { ThreadReads.leave(token) }
        return try body(ReadTransaction(txn: txn, environment: self, insideWrite: false))
    }

    /// Runs `body` in the write transaction: normal return commits, a throw aborts.
    ///
    /// When LMDB reports a full map the transaction is aborted, the map doubles (up to
    /// `Options.maxMapSize`) and `body` runs again.
    ///
    /// - Precondition: the calling thread is not inside a `read` of this environment
    ///   (growing the map would wait for that read for ever).
    /// - Throws: whatever `body` throws (nothing is written), or `LMDBError`:
    ///   `.mapFull` beyond the maximum map size, `.noSpace` when the disk is full,
    ///   `.readOnlyTransaction` in a read-only environment.
    public func write<R>(_ body: (borrowing WriteTransaction) throws -> R) throws -> R {
        if options.readOnly {
            throw LMDBError(code: .readOnlyTransaction, message: "write: environment is open read-only")
        }
        precondition(
            !ThreadReads.contains(UInt(bitPattern: Int(bitPattern: handle))),
            "LMDB: a write transaction was started inside a read transaction of the same environment on the same thread; finish the read first (this would deadlock when the map grows)"
        )
        while true {
            do {
                lockForTransaction()
                defer { unlockAfterTransaction() }
                return try writeOnce(body)
            } catch let error as LMDBError where error.code == .mapFull {
                try grow(failing: error)
            }
        }
    }

    private func lockForTransaction() {
        let rc = pthread_rwlock_rdlock(resizeLock)
        precondition(rc == 0, "LMDB: resize lock failed: \(rc)")
    }

    private func unlockAfterTransaction() {
        let rc = pthread_rwlock_unlock(resizeLock)
        precondition(rc == 0, "LMDB: resize unlock failed: \(rc)")
    }

    private func writeOnce<R>(_ body: (borrowing WriteTransaction) throws -> R) throws -> R {
        try checkOpen("write")
        let txn = try begin(readOnly: false)
        let transaction = WriteTransaction(txn: txn, environment: self)
        let result: R
        do {
            result = try body(transaction)
        } catch {
            mdb_txn_abort(txn)
            // A poisoned transaction reports its first LMDB error, not a later symptom.
            if let first = transaction.state.firstError { throw first }
            throw error
        }
        if let first = transaction.state.firstError {
            mdb_txn_abort(txn)
            throw first
        }
        try check(mdb_txn_commit(txn), "commit")
        return result
    }

    private func begin(readOnly: Bool) throws(LMDBError) -> OpaquePointer {
        var attempts = 0
        while true {
            var txn: OpaquePointer?
            let rc = mdb_txn_begin(handle, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn)
            if rc == 0, let txn { return txn }
            if rc == MDB_MAP_RESIZED && attempts < 8 {
                // Another process grew the map: adopt its size and try again.
                attempts += 1
                try adoptMapSize()
                continue
            }
            throw LMDBError(rc, readOnly ? "begin read" : "begin write")
        }
    }

    private func adoptMapSize() throws(LMDBError) {
        unlockAfterTransaction()
        defer { lockForTransaction() }
        lockExclusively()
        defer { unlockAfterTransaction() }
        try checkOpen("adopt map size")
        try check(mdb_env_set_mapsize(handle, 0), "adopt map size")
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        mapSizeState.withLock { $0 = info.me_mapsize }
    }

    private func lockExclusively() {
        let rc = pthread_rwlock_wrlock(resizeLock)
        precondition(rc == 0, "LMDB: resize lock failed: \(rc)")
    }

    private func grow(failing error: LMDBError) throws(LMDBError) {
        lockExclusively()
        defer { unlockAfterTransaction() }
        try checkOpen("grow map")
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        let current = info.me_mapsize
        guard current < options.maxMapSize else {
            throw LMDBError(
                code: .mapFull,
                message: "write: map full at the configured maximum of \(options.maxMapSize) bytes"
            )
        }
        let next = min(current * 2, options.maxMapSize)
        try check(mdb_env_set_mapsize(handle, next), "grow map to \(next) bytes")
        mapSizeState.withLock { $0 = next }
    }
}
