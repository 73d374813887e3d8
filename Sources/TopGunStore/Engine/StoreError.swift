import LMDB
import TopGunCore

/// An error from the store.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. New codes can be added without breaking `switch`.
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// The database was written by a newer version of this library.
        public static let unsupportedSchema = Code(rawValue: "unsupported schema version")
        /// Stored bytes could not be decoded (disk corruption or a bug).
        public static let corruptRecord = Code(rawValue: "corrupt record")
        /// A map was used with a CRDT kind other than the one it was created with.
        public static let kindMismatch = Code(rawValue: "map kind mismatch")
        /// A value could not be converted to or from the caller's type.
        public static let invalidValue = Code(rawValue: "invalid value")
        /// A key is empty or longer than the limit.
        public static let invalidKey = Code(rawValue: "invalid key")
        /// The store was closed.
        public static let closed = Code(rawValue: "closed")
        /// An error from LMDB (see `underlying`).
        public static let storage = Code(rawValue: "storage")
        /// The map reached its configured maximum size, or the disk is full; the
        /// transaction was aborted whole.
        public static let full = Code(rawValue: "storage full")
        /// The data file is damaged (see `FileVerifier`); liblmdb was not let near it.
        public static let corruptFile = Code(rawValue: "corrupt file")
        /// No database at the path (read-only opens create nothing).
        public static let notFound = Code(rawValue: "not found")
        /// A write was refused (the `OperationRejection` is the underlying error).
        public static let rejected = Code(rawValue: "rejected")
    }

    public var code: Code
    public var message: String
    /// The lower-level error, when there is one (`LMDBError`, `ValueCodingError`, …).
    public var underlying: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        "\(code.rawValue): \(message)" + (underlying.map { " (\($0))" } ?? "")
    }
}

/// Why one operation of a batch was not applied; the rest of the batch still is.
public enum OperationRejection: Error, Sendable, Equatable, CustomStringConvertible {
    /// The op's HLC is too far ahead of the local clock.
    case clockDrift(HLCError)
    /// The map's conflict resolver refused it.
    case resolver(String)
    /// Older than the garbage-collection horizon: its key's tombstone may be gone.
    case beyondHorizon(HLCTimestamp)
    /// The op names a map with another CRDT kind.
    case kindMismatch(String)
    /// The value, key or map name cannot be stored and read back (too deep, too large,
    /// an integer out of range, an empty or too long key, a counter that would leave
    /// the `Int64` range).
    case invalid(String)

    public var description: String {
        switch self {
        case .clockDrift(let e): "clock drift: \(e)"
        case .resolver(let m): "rejected by resolver: \(m)"
        case .beyondHorizon(let t): "older than the GC horizon \(t)"
        case .kindMismatch(let m): "kind mismatch: \(m)"
        case .invalid(let m): "invalid: \(m)"
        }
    }
}
