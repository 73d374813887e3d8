import LMDB
import Testing

@testable import TopGunStore

/// Damage made on purpose in a store's trees, as a flipped bit on disk leaves it.
public enum Damage {
    /// The trees a test damages.
    public enum Tree: Sendable {
        case records, oplog, index

        func database(_ store: Store) -> LMDB.Database {
            switch self {
            case .records: store.dbs.records
            case .oplog: store.dbs.oplog
            case .index: store.dbs.index
            }
        }
    }

    /// Every (key, value) of `tree`, in key order.
    public static func entries(_ store: Store, _ tree: Tree) throws -> [([UInt8], [UInt8])] {
        try store.read { txn in
            var out: [([UInt8], [UInt8])] = []
            try txn.forEach(in: tree.database(store)) { k, v in
                out.append((k.withUnsafeBytes { Array($0) }, v.withUnsafeBytes { Array($0) }))
                return true
            }
            return out
        }
    }

    /// XORs `mask` into byte `at` (from the end when negative) of the value under `key`.
    public static func flipValue(_ store: Store, _ tree: Tree, key: [UInt8], at: Int, mask: UInt8 = 0x01) throws {
        try store.write { txn in
            let db = tree.database(store)
            var raw = try #require(try txn.value(forKey: key, in: db))
            raw[at < 0 ? raw.count + at : at] ^= mask
            try txn.put(raw, forKey: key, in: db)
        }
    }

    /// Moves the entry under `key` to the same key with `mask` XORed into byte `at`.
    public static func flipKey(_ store: Store, _ tree: Tree, key: [UInt8], at: Int, mask: UInt8 = 0x10) throws {
        try store.write { txn in
            let db = tree.database(store)
            let raw = try #require(try txn.value(forKey: key, in: db))
            var moved = key
            moved[at] ^= mask
            _ = try txn.delete(key, in: db)
            try txn.put(raw, forKey: moved, in: db)
        }
    }

    /// The stored key of record `key` of `map`.
    public static func recordKey(_ store: Store, _ map: String, _ key: String) throws -> [UInt8] {
        Layout.recordKey(mapID: try #require(store.mapInfo(map)).id, key: key)
    }

    /// Flips the last bit of record `key` of `map`: it then fails its digest.
    public static func breakRecord(_ store: Store, _ map: String, _ key: String) throws {
        try flipValue(store, .records, key: try recordKey(store, map, key), at: -1)
    }
}
