internal import CLMDB

/// A handle to a named database inside an `Environment`.
///
/// Handles are cheap values, valid for the life of the environment that opened them.
public struct Database: Sendable, Hashable, CustomStringConvertible {
    let dbi: MDB_dbi
    /// The database's name in the environment.
    public let name: String
    /// Identifies the owning environment, to catch handles used with another one.
    let environment: UInt

    public var description: String { "Database(\(name))" }
}

/// Entry and page counts of one database (`mdb_stat`).
public struct DatabaseStatistics: Sendable {
    public var entries: Int
    public var depth: Int
    public var branchPages: Int
    public var leafPages: Int
    public var overflowPages: Int
    public var pageSize: Int

    /// Bytes in pages used by this database.
    public var usedBytes: Int { (branchPages + leafPages + overflowPages) * pageSize }
}

/// Flags for `WriteTransaction.put`.
public struct PutFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Fail with `.keyExists` rather than overwrite.
    public static let noOverwrite = PutFlags(rawValue: UInt32(MDB_NOOVERWRITE))
    /// The key sorts after every key in the database (fast bulk append); else `.keyExists`.
    public static let append = PutFlags(rawValue: UInt32(MDB_APPEND))
}

/// A contiguous range of keys in byte-wise lexicographic order.
public struct KeyRange: Sendable, Hashable {
    /// Smallest key included, or nil for the first key.
    public var lower: [UInt8]?
    /// First key excluded, or nil for no end.
    public var upper: [UInt8]?

    public init(from lower: [UInt8]? = nil, to upper: [UInt8]? = nil) {
        self.lower = lower
        self.upper = upper
    }

    /// Every key.
    public static let all = KeyRange()

    /// Every key that starts with `prefix`.
    public static func prefix(_ prefix: [UInt8]) -> KeyRange {
        KeyRange(from: prefix, to: successor(ofPrefix: prefix))
    }

    /// The smallest key greater than every key starting with `prefix`, or nil if none.
    public static func successor(ofPrefix prefix: [UInt8]) -> [UInt8]? {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return nil
    }
}
