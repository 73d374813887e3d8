import Foundation
import TopGunCore
import TopGunStore

/// A query over one map: filter, partition restriction, order, limit and a resumable
/// cursor. Queries run on one MVCC snapshot and never block writers.
///
/// ```swift
/// let adults = try db.query("users").where("age" >= 18).orderBy("age").limit(20).run()
/// print(try db.query("users").where("id" == "u1").explain())
/// ```
public struct Query: Sendable {
    /// One sort key.
    public struct SortKey: Sendable, Hashable, Codable {
        public var path: String
        public var descending: Bool
    }

    public let store: Store
    public let map: String
    public private(set) var predicate: QueryPredicate?
    public private(set) var partitionFilter: [UInt16]?
    public private(set) var order: [SortKey] = []
    public private(set) var limitCount: Int?
    public private(set) var cursor: String?

    public init(store: Store, map: String) {
        self.store = store
        self.map = map
    }

    /// Adds a filter (ANDed with any earlier one).
    public func `where`(_ p: QueryPredicate) -> Query {
        var q = self
        q.predicate = q.predicate.map { $0 && p } ?? p
        return q
    }

    /// Restricts the query to these partitions.
    public func partitions(_ ids: [UInt16]) -> Query {
        var q = self
        q.partitionFilter = ids
        return q
    }

    /// Adds a sort key; ties are broken by the record key.
    public func orderBy(_ path: String, descending: Bool = false) -> Query {
        var q = self
        q.order.append(SortKey(path: path, descending: descending))
        return q
    }

    public func limit(_ n: Int) -> Query {
        var q = self
        q.limitCount = max(0, n)
        return q
    }

    /// Continues after the position `cursor` (from an earlier `QueryResult.nextCursor`).
    /// Positions are in sort order, so pages stay correct while writes happen.
    public func after(_ cursor: String?) -> Query {
        var q = self
        q.cursor = cursor
        return q
    }

    /// Runs the query.
    ///
    /// - Throws: `QueryError` for a malformed cursor; `StoreError` from storage.
    public func run() throws -> QueryResult {
        try store.snapshot { txn in try execute(txn).result }
    }

    /// Runs the query on a thread of its own, so a long scan does not hold one of the
    /// few threads of Swift's cooperative pool; the calling task just awaits.
    ///
    /// - Throws: as `run()`.
    public func runInBackground() async throws -> QueryResult {
        try await withCheckedThrowingContinuation { continuation in
            let query = self
            Thread { continuation.resume(with: Result { try query.run() }) }.start()
        }
    }

    /// The chosen plan with the counters of an actual run.
    public func explain() throws -> Explanation { try run().explanation }

    func execute(_ txn: borrowing Store.Snapshot) throws -> (result: QueryResult, sequence: HLCTimestamp?) {
        let plan = Planner(store: store, map: map, predicate: predicate, partitions: partitionFilter).plan()
        var stats = Explanation(plan: plan)
        var rows: [Row] = []
        let now = store.now
        var touched = Set<UInt16>()
        func consider(_ key: String, _ state: StoredState) {
            stats.recordsExamined += 1
            guard let row = Row(key: key, state: state, now: now) else { return }
            if predicate?.matches(key: key, value: row.value) ?? true { rows.append(row) }
        }
        switch plan.access {
        case .keyLookup(let keys):
            for key in keys {
                if let state = try store.state(map: map, key: key, in: txn) { consider(key, state) }
            }
            touched = Set(keys.map { Partitioner.partition(of: $0) })
        case .partitionScan(let partitions):
            for p in partitions {
                touched.insert(p)
                try store.scan(map: map, partition: p, in: txn) { key, state in
                    consider(key, state)
                    return true
                }
            }
        case .indexScan(let index, let ranges):
            do {
                var candidates: [(partition: UInt16, key: String, indexed: [UInt8]?)] = []
                for range in ranges {
                    try store.scanIndex(index, lower: range.lower, upper: range.upper, in: txn) { partition, key, indexed in
                        candidates.append((partition, key, indexed))
                        return true
                    }
                }
                if ranges.count > 1 {
                    var seen = Set<String>()
                    candidates.removeAll { !seen.insert($0.key).inserted }
                }
                touched = Set(candidates.map(\.partition))
                rows.reserveCapacity(candidates.count)
                try store.fetch(map: map, keys: candidates, verifying: index, in: txn) { key, state in consider(key, state) }
            } catch is Store.IndexDamage {
                // An entry that does not match its record: the index cannot be trusted
                // for this query, the records can.
                rows.removeAll()
                stats.recordsExamined = 0
                stats.indexDamaged = true
                try store.scan(map: map, partition: nil, in: txn) { key, state in
                    consider(key, state)
                    return true
                }
                touched = Set(0..<UInt16(Partitioner.partitionCount))
            }
        case .fullScan:
            try store.scan(map: map, partition: nil, in: txn) { key, state in
                consider(key, state)
                return true
            }
            touched = Set(0..<UInt16(Partitioner.partitionCount))
        }
        stats.partitionsTouched = touched.count

        let order = self.order
        rows = sorted(rows)
        if let cursor {
            let after = try Self.decodeCursor(cursor)
            rows.removeAll { !Self.isAfter(Self.position($0, order), after, order) }
        }
        var next: String?
        if let limitCount, rows.count > limitCount {
            rows.removeSubrange(limitCount...)
            next = rows.last.map { Self.encodeCursor(Self.position($0, order)) }
        }
        stats.recordsReturned = rows.count
        return (QueryResult(rows: rows, nextCursor: next, explanation: stats), try store.lastSequence(in: txn))
    }

    // MARK: Sort positions and cursors

    /// The sort values of a row, then its key.
    static func position(_ row: Row, _ order: [SortKey]) -> [Value] {
        order.map { row.field($0.path) ?? .null } + [.string(row.key)]
    }

    static func isAfter(_ a: [Value], _ cursor: [Value], _ order: [SortKey]) -> Bool {
        compareColumns(a, cursor, order) > 0
    }

    static func compareColumns(_ a: [Value], _ b: [Value], _ order: [SortKey]) -> Int {
        for i in 0..<min(a.count, b.count) {
            var c = Value.compare(a[i], b[i])
            if i < order.count && order[i].descending { c = -c }
            if c != 0 { return c }
        }
        return a.count - b.count
    }

    static func encodeCursor(_ position: [Value]) -> String {
        Value.array(position).encoded.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    static func decodeCursor(_ text: String) throws -> [Value] {
        var bytes: [UInt8] = []
        var chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { throw QueryError(.malformedCursor, "odd number of hex digits") }
        while !chars.isEmpty {
            guard let b = UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16) else { throw QueryError(.malformedCursor, "not hex") }
            bytes.append(b)
            chars.removeFirst(2)
        }
        guard case .array(let position)? = try? Value(messagePack: bytes) else { throw QueryError(.malformedCursor, "not a position") }
        return position
    }
}

extension Query {
    /// Sorting honours each key's direction.
    /// `rows` in query order; each row's sort columns are read once, not per comparison.
    func sorted(_ rows: [Row]) -> [Row] {
        let order = self.order
        if order.isEmpty {
            // Key order alone: the position is the key (see `position`). Indices are
            // sorted, so rows move once.
            let keys = rows.map { Value.string($0.key) }
            return rows.indices.sorted { Value.compare(keys[$0], keys[$1]) < 0 }.map { rows[$0] }
        }
        let positions = rows.map { Self.position($0, order) }
        return rows.indices.sorted { Self.compareColumns(positions[$0], positions[$1], order) < 0 }.map { rows[$0] }
    }
}

/// An error of the query layer; storage errors arrive as `StoreError`.
public struct QueryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong. New codes can be added without breaking `switch`.
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// A page cursor that this library did not produce.
        public static let malformedCursor = Code(rawValue: "malformed cursor")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// One result: a record's key and its visible value.
public struct Row: Sendable, Equatable {
    public var key: String
    /// LWW: the value; OR-Map: the array of live values; counter: its value.
    public var value: Value
    public var timestamp: HLCTimestamp

    init?(key: String, state: StoredState, now: UInt64) {
        self.key = key
        switch state {
        case .lww(let r):
            guard let v = r.visibleValue(at: now) else { return nil }
            value = v
            timestamp = r.timestamp
        case .orMap(let s):
            value = .array(s.values(at: now))
            timestamp = s.entries.values.map(\.timestamp).max() ?? .zero
        case .counter(let c):
            value = .int(c.value)
            timestamp = .zero
        }
    }

    func field(_ path: String) -> Value? {
        QueryPredicate.keyAliases.contains(path) ? .string(key) : value[path: path]
    }
}

/// The rows of a query, the cursor for the next page, and how they were found.
public struct QueryResult: Sendable {
    public var rows: [Row]
    /// Pass to `Query.after(_:)` for the next page; nil when this was the last.
    public var nextCursor: String?
    public var explanation: Explanation
}
