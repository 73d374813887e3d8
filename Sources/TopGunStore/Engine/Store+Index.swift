import LMDB
import TopGunCore

/// A secondary index on a field path of an LWW map.
public struct IndexDefinition: Sendable, Hashable, Codable {
    /// How values are keyed.
    public enum Kind: UInt8, Sendable, Codable {
        /// By a 64-bit digest of the value: serves equality and `in`.
        case hash = 0
        /// By the order-preserving encoding: serves equality, ranges and prefixes.
        case range = 1
    }

    public var map: String
    public var path: String
    public var kind: Kind
    /// The index id in the `index` database.
    public var id: UInt32
    /// False while the index is being built over existing records.
    public var isReady: Bool
}

extension IndexDefinition {
    /// The value this index holds for a record: the field at `path` of an LWW record's
    /// value, read from the stored bytes; nil for a tombstone, a record of another kind
    /// or a value without the field. The one rule for the write path, the backfill and
    /// `check`.
    func field(ofRecord raw: UnsafeRawBufferPointer) throws -> Value? {
        guard let header = RecordHeader(raw), header.flags.kind == .lww, !header.flags.contains(.tombstone) else { return nil }
        return try field(ofValue: UnsafeRawBufferPointer(rebasing: raw[header.payloadOffset...]))
    }

    /// The field at `path` of a value's canonical bytes (nil when absent).
    func field(ofValue bytes: UnsafeRawBufferPointer) throws -> Value? {
        try Value.field(atPath: path, in: bytes)
    }
}

/// Progress of an index build.
public struct IndexBuildProgress: Sendable {
    public var recordsIndexed: Int
    public var recordsTotal: Int
}

extension Layout {
    /// Longest encoded value kept in an index key; longer values are truncated, and
    /// the query re-checks its predicate on the record.
    static let maxIndexedValueBytes = 100

    static func indexMetaKey(map: String, path: String) -> [UInt8] {
        Array("index:".utf8) + Array(map.utf8) + [0] + Array(path.utf8)
    }

    /// `index id | indexed value | partition | key` for a record whose field holds `value`.
    static func indexKey(_ index: IndexDefinition, value: Value, partition: UInt16, key: String) -> [UInt8] {
        var out = [UInt8](bigEndian: index.id)
        out.append(contentsOf: indexedValue(index, value))
        out.appendBigEndian(partition)
        out.append(contentsOf: key.utf8)
        return out
    }

    static func indexedValue(_ index: IndexDefinition, _ value: Value) -> [UInt8] {
        switch index.kind {
        case .hash: return [UInt8](bigEndian: value.digest)
        case .range: return Array(OrderedKey.encode(value).prefix(maxIndexedValueBytes))
        }
    }

    /// The index entry's value: the record's partition and key.
    /// An index entry's value (partition, key) repeats the end of its key; one that
    /// does not is damaged.
    static func isConsistentIndexEntry(key: [UInt8], value: [UInt8]) -> Bool {
        value.count >= 2 && key.count >= 4 + value.count && key.suffix(value.count).elementsEqual(value)
    }

    static func indexEntryValue(partition: UInt16, key: String) -> [UInt8] {
        var out = [UInt8](bigEndian: partition)
        out.append(contentsOf: key.utf8)
        return out
    }
}

extension Store {
    /// The indexes of `map` (building and ready).
    public func indexes(of map: String) -> [IndexDefinition] {
        indexRegistry.withLock { $0[map] ?? [] }
    }

    /// Creates a secondary index on `path` of LWW map `map` and builds it over the
    /// existing records in chunks (writes continue meanwhile and maintain it).
    ///
    /// From its first transaction on, every write maintains the index in the same
    /// transaction as the record, so the index never disagrees with the records, even
    /// across a crash. Queries use it once the build has finished.
    ///
    /// - Parameter progress: called after every chunk.
    /// - Returns: the definition, ready.
    @discardableResult
    public func createIndex(
        map: String, path: String, kind: IndexDefinition.Kind, chunkSize: Int = 10_000,
        progress: (IndexBuildProgress) -> Void = { _ in }
    ) throws -> IndexDefinition {
        if mapInfo(map) == nil {
            // A map with no records yet: create it (as an LWW map) so the index is there
            // for its first write.
            _ = try commit { batch, txn in
                guard try batch.lookUpOrCreate(map, kind: .lww, txn) != nil else {
                    throw StoreError(.kindMismatch, "only LWW maps can be indexed; \(map) is of another kind")
                }
                return []
            }
        }
        guard let info = mapInfo(map) else { throw StoreError(.invalidKey, "no map named \(map)") }
        guard info.kind == .lww else { throw StoreError(.kindMismatch, "only LWW maps can be indexed; \(map) is \(info.kind)") }
        if let existing = indexes(of: map).first(where: { $0.path == path }) {
            guard existing.kind == kind else { throw StoreError(.kindMismatch, "\(map).\(path) already has a \(existing.kind) index") }
            if existing.isReady { return existing }
        }
        // 1. Register (building): from now on writes maintain it.
        var index = try write { txn -> IndexDefinition in
            if let raw = try txn.value(forKey: Layout.indexMetaKey(map: map, path: path), in: dbs.meta), raw.count == 6 {
                return IndexDefinition(
                    map: map, path: path, kind: IndexDefinition.Kind(rawValue: raw[4]) ?? kind,
                    id: raw.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) }, isReady: raw[5] == 1)
            }
            let nextKey = Layout.Meta.indexNextID
            let id = try txn.value(forKey: nextKey, in: dbs.meta)
                .map { $0.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) } } ?? 1
            try txn.put([UInt8](bigEndian: (id + 1)), forKey: nextKey, in: dbs.meta)
            let def = IndexDefinition(map: map, path: path, kind: kind, id: id, isReady: false)
            try txn.put(Self.indexMetaValue(def), forKey: Layout.indexMetaKey(map: map, path: path), in: dbs.meta)
            return def
        }
        publish(index)
        // 2. Backfill in chunks, each reading the records it indexes in its own write
        //    transaction, so it agrees with concurrent maintenance.
        let total = try count(map: map)
        var done = 0
        var resume = Layout.recordPrefix(mapID: info.id)
        let end = KeyRange.prefix(Layout.recordPrefix(mapID: info.id)).upper
        while true {
            let (n, next) = try write { txn -> (Int, [UInt8]?) in
                var n = 0
                var next: [UInt8]?
                try txn.withCursor(on: dbs.records) { cursor in
                    try cursor.scan(range: KeyRange(from: resume, to: end), reverse: false) { k, v in
                        if n == chunkSize {
                            next = Array(k)
                            return false
                        }
                        n += 1
                        guard let field = try index.field(ofRecord: v) else { return true }
                        let partition = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                        let key = String(decoding: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
                        try txn.put(
                            Layout.indexEntryValue(partition: partition, key: key),
                            forKey: Layout.indexKey(index, value: field, partition: partition, key: key), in: dbs.index)
                        return true
                    }
                }
                return (n, next)
            }
            done += n
            progress(IndexBuildProgress(recordsIndexed: min(done, total), recordsTotal: total))
            guard let next else { break }
            resume = next
        }
        // 3. Ready.
        index.isReady = true
        let ready = index
        try write { txn in
            try txn.put(Self.indexMetaValue(ready), forKey: Layout.indexMetaKey(map: map, path: path), in: dbs.meta)
        }
        publish(index)
        return index
    }

    static func indexMetaValue(_ def: IndexDefinition) -> [UInt8] {
        [UInt8](bigEndian: def.id) + [def.kind.rawValue, def.isReady ? 1 : 0]
    }

    private func publish(_ index: IndexDefinition) {
        indexRegistry.withLock { registry in
            var list = registry[index.map] ?? []
            list.removeAll { $0.path == index.path }
            list.append(index)
            registry[index.map] = list
        }
    }

    /// Loads the index definitions from `meta` (at open).
    static func loadIndexes(_ txn: borrowing ReadTransaction, _ dbs: DBs) throws -> [String: [IndexDefinition]] {
        var out: [String: [IndexDefinition]] = [:]
        try txn.forEach(in: dbs.meta, range: .prefix(Array("index:".utf8))) { k, v in
            let name = k.withUnsafeBytes { Array($0.dropFirst(6)) }
            guard let zero = name.firstIndex(of: 0), v.byteCount == 6 else { return true }
            let map = String(decoding: name[..<zero], as: UTF8.self)
            let path = String(decoding: name[(zero + 1)...], as: UTF8.self)
            v.withUnsafeBytes { raw in
                out[map, default: []].append(
                    IndexDefinition(
                        map: map, path: path, kind: IndexDefinition.Kind(rawValue: raw[4]) ?? .range,
                        id: raw.loadBigEndian(as: UInt32.self), isReady: raw[5] == 1))
            }
            return true
        }
        return out
    }
}

extension Batch {
    /// Moves the index entries of one record from its old field values to its new
    /// ones (`old[i]` / `new[i]` belong to `indexes[i]`).
    mutating func maintainIndexes(
        _ indexes: [IndexDefinition], key: String, partition: UInt16, old: [Value?], new: [Value?],
        _ txn: borrowing WriteTransaction
    ) throws {
        for (i, index) in indexes.enumerated() {
            let before = old[i].map { Layout.indexKey(index, value: $0, partition: partition, key: key) }
            let after = new[i].map { Layout.indexKey(index, value: $0, partition: partition, key: key) }
            if before == after { continue }
            if let before { try txn.delete(before, in: dbs.index) }
            if let after { try txn.put(Layout.indexEntryValue(partition: partition, key: key), forKey: after, in: dbs.index) }
        }
    }
}
