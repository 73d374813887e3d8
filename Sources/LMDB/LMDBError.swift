internal import CLMDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An error from liblmdb or from the wrapper's own checks.
///
/// `code` carries the LMDB return code (or the `errno` LMDB passed through); the
/// message is LMDB's own text, prefixed with the operation that failed.
public struct LMDBError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An LMDB or system error code. New codes can be added without breaking `switch`.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let keyExists = Code(rawValue: MDB_KEYEXIST)
        public static let notFound = Code(rawValue: MDB_NOTFOUND)
        public static let pageNotFound = Code(rawValue: MDB_PAGE_NOTFOUND)
        public static let corrupted = Code(rawValue: MDB_CORRUPTED)
        public static let panic = Code(rawValue: MDB_PANIC)
        public static let versionMismatch = Code(rawValue: MDB_VERSION_MISMATCH)
        public static let invalid = Code(rawValue: MDB_INVALID)
        public static let mapFull = Code(rawValue: MDB_MAP_FULL)
        public static let databasesFull = Code(rawValue: MDB_DBS_FULL)
        public static let readersFull = Code(rawValue: MDB_READERS_FULL)
        public static let transactionFull = Code(rawValue: MDB_TXN_FULL)
        public static let cursorFull = Code(rawValue: MDB_CURSOR_FULL)
        public static let pageFull = Code(rawValue: MDB_PAGE_FULL)
        public static let mapResized = Code(rawValue: MDB_MAP_RESIZED)
        public static let incompatible = Code(rawValue: MDB_INCOMPATIBLE)
        public static let badTransaction = Code(rawValue: MDB_BAD_TXN)
        public static let badValueSize = Code(rawValue: MDB_BAD_VALSIZE)
        public static let badDatabase = Code(rawValue: MDB_BAD_DBI)
        /// The path is missing or is not a directory.
        public static let notADirectory = Code(rawValue: ENOTDIR)
        public static let noSuchFile = Code(rawValue: ENOENT)
        public static let permissionDenied = Code(rawValue: EACCES)
        public static let noSpace = Code(rawValue: ENOSPC)
        public static let ioError = Code(rawValue: EIO)
        /// The environment is already open in this process (LMDB forbids a second open).
        public static let alreadyOpen = Code(rawValue: -40_001)
        /// A write was attempted in a read-only transaction.
        public static let readOnlyTransaction = Code(rawValue: -40_002)
        /// The transaction failed earlier and can only be aborted.
        public static let transactionPoisoned = Code(rawValue: -40_003)
        /// The environment was closed.
        public static let closed = Code(rawValue: -40_004)

        public var description: String {
            String(cString: mdb_strerror(rawValue))
        }
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    init(_ rc: Int32, _ operation: String) {
        self.code = Code(rawValue: rc)
        self.message = "\(operation): \(String(cString: mdb_strerror(rc)))"
    }

    public var description: String { "LMDBError(\(code.rawValue)): \(message)" }
}

@inline(__always)
func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws(LMDBError) {
    if rc != 0 { throw LMDBError(rc, operation()) }
}
