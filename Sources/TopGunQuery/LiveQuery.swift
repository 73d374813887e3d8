import TopGunCore
import TopGunStore

/// A change to a live query's result set.
public enum LiveDelta: Sendable, Equatable {
    /// A record started matching.
    case enter(Row)
    /// A matching record changed and still matches.
    case update(Row)
    /// A record stopped matching (changed, deleted or expired on write).
    case leave(key: String)
}

/// The initial result of a live query and the deltas that follow it.
///
/// Iterating a `LiveQuery` iterates its deltas:
/// `for await delta in try db.query("users").where("age" >= 18).live() { … }`.
public struct LiveQuery: Sendable, AsyncSequence {
    public typealias Element = LiveDelta
    public let initial: [Row]
    public let deltas: AsyncStream<LiveDelta>

    public func makeAsyncIterator() -> AsyncStream<LiveDelta>.AsyncIterator { deltas.makeAsyncIterator() }
}

extension Query {
    /// Runs the query, then keeps it current: every committed change of the map (local
    /// writes and remote ops through `apply` alike) that can affect the result yields a
    /// delta. Changes outside the queried keys or partitions are skipped unevaluated.
    ///
    /// Sorting, limits and cursors apply to `initial` only.
    public func live() throws -> LiveQuery {
        let changes = store.changes()
        let (result, sequence) = try store.snapshot { txn in try execute(txn) }
        let plan = result.explanation.access
        let keys: Set<String>? = if case .keyLookup(let k) = plan { Set(k) } else { nil }
        let partitions: Set<UInt16>? = partitionFilter.map(Set.init)
        let map = self.map
        let predicate = self.predicate
        let store = self.store
        let (deltas, continuation) = AsyncStream.makeStream(of: LiveDelta.self)
        let task = Task {
            for await change in changes {
                guard change.map == map else { continue }
                if let sequence, change.sequence <= sequence { continue }
                if let keys, !keys.contains(change.key) { continue }
                if let partitions, !partitions.contains(Partitioner.partition(of: change.key)) { continue }
                let now = store.now
                let before = change.old.flatMap { Row(key: change.key, state: $0, now: now) }
                let after = Row(key: change.key, state: change.new, now: now)
                let was = before.map { predicate?.matches(key: $0.key, value: $0.value) ?? true } ?? false
                let isNow = after.map { predicate?.matches(key: $0.key, value: $0.value) ?? true } ?? false
                switch (was, isNow) {
                case (false, true): continuation.yield(.enter(after!))
                case (true, true): continuation.yield(.update(after!))
                case (true, false): continuation.yield(.leave(key: change.key))
                case (false, false): break
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return LiveQuery(initial: result.rows, deltas: deltas)
    }
}

extension Database {
    /// A query over map `map`.
    public func query(_ map: String) -> Query { Query(store: store, map: map) }
}
