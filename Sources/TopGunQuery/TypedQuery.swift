import TopGunCore
import TopGunStore

/// A row of a typed map's query: the key and its decoded value.
public struct TypedRow<V: Sendable>: Sendable {
    /// The record's key.
    public var key: String
    /// Its value, decoded.
    public var value: V
    /// The HLC of the write that made the value.
    public var timestamp: HLCTimestamp
}

extension TypedRow: Equatable where V: Equatable {}

/// A change to a typed live query's result set (see `LiveDelta`).
public enum TypedLiveDelta<V: Sendable>: Sendable {
    case enter(TypedRow<V>)
    case update(TypedRow<V>)
    case leave(key: String)
}

extension TypedLiveDelta: Equatable where V: Equatable {}

/// A query over a `TypedMap` whose rows come back as the map's value type.
///
/// ```swift
/// let adults = try db.map("users", of: User.self).query().where("age" >= 18).orderBy("age").run()
/// for row in adults.rows { print(row.key, row.value.name) }
/// ```
public struct TypedQuery<V: Codable & Sendable>: Sendable {
    /// The untyped query underneath.
    public private(set) var query: Query
    let decoder: ValueDecoder

    /// Keeps the rows matching `predicate`.
    public func `where`(_ predicate: QueryPredicate) -> TypedQuery { with { $0.query = $0.query.where(predicate) } }
    /// Restricts the query to these partitions.
    public func partitions(_ ids: [UInt16]) -> TypedQuery { with { $0.query = $0.query.partitions(ids) } }
    /// Orders by a field path (then by key).
    public func orderBy(_ path: String, descending: Bool = false) -> TypedQuery {
        with { $0.query = $0.query.orderBy(path, descending: descending) }
    }
    /// Returns at most `n` rows per page.
    public func limit(_ n: Int) -> TypedQuery { with { $0.query = $0.query.limit(n) } }
    /// Continues after a page's `nextCursor`.
    public func after(_ cursor: String?) -> TypedQuery { with { $0.query = $0.query.after(cursor) } }

    private func with(_ change: (inout TypedQuery) -> Void) -> TypedQuery {
        var copy = self
        change(&copy)
        return copy
    }

    /// Runs the query and decodes its rows.
    ///
    /// - Throws: `StoreError(.invalidValue)` for a row that does not decode as `V`;
    ///   otherwise as `Query.run()`.
    public func run() throws -> (rows: [TypedRow<V>], nextCursor: String?, explanation: Explanation) {
        let result = try query.run()
        return (try result.rows.map(decode), result.nextCursor, result.explanation)
    }

    /// `run()` on a thread of its own (see `Query.runInBackground()`).
    public func runInBackground() async throws -> (rows: [TypedRow<V>], nextCursor: String?, explanation: Explanation) {
        let result = try await query.runInBackground()
        return (try result.rows.map(decode), result.nextCursor, result.explanation)
    }

    /// The query's rows now, then typed deltas as commits change them. A row that no
    /// longer decodes as `V` leaves the result.
    public func live() throws -> (initial: [TypedRow<V>], deltas: AsyncStream<TypedLiveDelta<V>>) {
        let untyped = try query.live()
        let decode = self.decode
        let initial = try untyped.initial.map(decode)
        let (deltas, continuation) = AsyncStream.makeStream(of: TypedLiveDelta<V>.self)
        let task = Task {
            for await delta in untyped {
                switch delta {
                case .enter(let row): continuation.yield((try? decode(row)).map { .enter($0) } ?? .leave(key: row.key))
                case .update(let row): continuation.yield((try? decode(row)).map { .update($0) } ?? .leave(key: row.key))
                case .leave(let key): continuation.yield(.leave(key: key))
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return (initial, deltas)
    }

    private func decode(_ row: Row) throws -> TypedRow<V> {
        TypedRow(key: row.key, value: try decoder.decode(V.self, from: row.value), timestamp: row.timestamp)
    }
}

extension TypedMap {
    /// A query over this map whose rows are decoded as `V`.
    public func query() -> TypedQuery<V> {
        TypedQuery(query: Query(store: database.store, map: name), decoder: decoder)
    }
}
