import TopGunCore

/// An embedded TopGun database: typed LWW maps, counters and OR-maps that converge
/// across replicas, on one LMDB file.
///
/// ```swift
/// let db = try Database(path: "data")
/// let users = db.map("users", of: User.self)
/// try await users.set("u1", User(name: "Ann", age: 31))
/// let ann = try users.get("u1")
/// try await db.counter("likes").increment("post-1")
/// try await db.orMap("tags").add("post-1", "swift")
/// ```
///
/// Writes from many tasks are coalesced into group commits; reads are snapshot reads
/// on the caller's thread and never wait for the writer.
public final class Database: Sendable {
    public typealias Options = Store.Options

    /// The storage engine underneath, for replication and tools.
    public let store: Store
    let writer: GroupCommitter

    /// Opens or creates the database in directory `path`.
    ///
    /// - Throws: `StoreError` (see `Store.init`).
    public init(path: String, options: Options = .init()) throws {
        store = try Store(path: path, options: options)
        writer = GroupCommitter(store: store, maxGroupSize: options.maxGroupSize)
    }

    deinit { writer.stop() }

    /// Closes the database: writes already queued are committed, then the file is
    /// closed. Later reads and writes throw `StoreError(.closed)`, change streams and
    /// live queries end, and the directory can be opened again at once.
    public func close() {
        writer.stop()
        store.close()
    }

    /// Applies `mutations` atomically through the group committer.
    ///
    /// - Returns: one outcome per mutation.
    @discardableResult
    public func perform(_ mutations: [Mutation]) async throws -> [ApplyOutcome] {
        try await withCheckedThrowingContinuation { continuation in
            writer.submit(mutations) { continuation.resume(with: $0) }
        }
    }

    /// Applies one mutation and returns its outcome; a refused write throws.
    ///
    /// - Throws: `StoreError(.rejected)` with the `OperationRejection` as the underlying
    ///   error (a resolver, the map's kind, an invalid value); `.failed` for an update
    ///   closure that threw.
    @discardableResult
    func performChecked(_ mutation: Mutation) async throws -> ApplyOutcome {
        let outcome = try await perform([mutation])[0]
        switch outcome {
        case .rejected(let why): throw StoreError(.rejected, "\(why)", underlying: why)
        case .failed(let why): throw StoreError(.rejected, "update failed: \(why)", underlying: why)
        case .applied, .unchanged, .restamped: return outcome
        }
    }

    /// A typed last-writer-wins map; values are stored as their `Codable` form.
    /// `encoder` and `decoder` choose how dates and data are stored (integer
    /// milliseconds and bytes by default); use the same ones for a map every time.
    public func map<V: Codable & Sendable>(
        _ name: String, of type: V.Type = V.self, encoder: ValueEncoder = .init(), decoder: ValueDecoder = .init()
    ) -> TypedMap<V> {
        TypedMap(database: self, name: name, encoder: encoder, decoder: decoder)
    }

    /// A map of PN-Counters.
    public func counter(_ name: String) -> CounterMap { CounterMap(database: self, name: name) }

    /// A map of observed-remove multisets (add wins over concurrent remove).
    public func orMap(_ name: String) -> ORMapHandle { ORMapHandle(database: self, name: name) }

    /// Committed changes of every map (see `Store.changes()` for buffering).
    public func changes() -> AsyncStream<Change> { store.changes() }

    var now: UInt64 { store.options.wallClock.milliseconds() }
}

/// Whole milliseconds in a `Duration` (negative counts as 0), for TTLs and retention.
package func milliseconds(_ d: Duration?) -> UInt64? {
    guard let d else { return nil }
    let (s, a) = d.components
    return UInt64(max(0, s)) * 1_000 + UInt64(max(0, a)) / 1_000_000_000_000_000  // 10^15 attoseconds per ms
}

/// A typed LWW map of a `Database`.
public struct TypedMap<V: Codable & Sendable>: Sendable {
    package let database: Database
    public let name: String
    public let encoder: ValueEncoder
    public let decoder: ValueDecoder

    /// Sets `key` to `value`, optionally expiring after `ttl`.
    ///
    /// - Throws: `StoreError(.rejected)` when the map's resolver or the value limits
    ///   refuse it (`.invalidValue` when it cannot be encoded).
    public func set(_ key: String, _ value: V, ttl: Duration? = nil) async throws {
        let encoded = try encoder.encode(value)
        try await database.performChecked(.set(map: name, key: key, value: encoded, ttlMillis: milliseconds(ttl)))
    }

    /// The current value of `key`, nil when absent, deleted or expired.
    public func get(_ key: String) throws -> V? {
        guard case .lww(let record)? = try database.store.state(map: name, key: key),
            let value = record.visibleValue(at: database.now)
        else { return nil }
        return try decoder.decode(V.self, from: value)
    }

    /// Deletes `key` (writes a tombstone that replicates).
    public func delete(_ key: String) async throws {
        try await database.performChecked(.set(map: name, key: key, value: nil, ttlMillis: nil))
    }

    /// Atomically replaces the value of `key` with `body(current)` inside the write
    /// transaction (TopGun's entry processor). Returning nil deletes.
    ///
    /// - Important: `body` runs on the writer thread while it holds the write lock:
    ///   keep it short, never block or await in it, and keep it free of side effects —
    ///   it runs again if the transaction is retried (map growth, a failed group).
    /// - Returns: `.applied` or `.unchanged`.
    /// - Throws: `StoreError(.rejected)` when `body` threw (its error is the
    ///   `UpdateFailure` underneath) or a resolver refused the new value.
    @discardableResult
    public func update(_ key: String, ttl: Duration? = nil, _ body: @escaping @Sendable (V?) throws -> V?) async throws -> ApplyOutcome {
        let (encoder, decoder) = (encoder, decoder)
        return try await database.performChecked(
            .update(map: name, key: key, ttlMillis: milliseconds(ttl)) { current in
                let typed = try current.map { try decoder.decode(V.self, from: $0) }
                return try body(typed).map { try encoder.encode($0) }
            })
    }

    /// Every live entry, in key order within partition order.
    public func all() throws -> [(key: String, value: V)] {
        var out: [(String, V)] = []
        let now = database.now
        try database.store.scan(map: name) { key, state in
            if case .lww(let r) = state, let v = r.visibleValue(at: now) { out.append((key, try decoder.decode(V.self, from: v))) }
            return true
        }
        return out
    }
}

/// A map of PN-Counters of a `Database`.
public struct CounterMap: Sendable {
    let database: Database
    public let name: String

    /// Adds `amount` (default 1; negative decrements) to the counter at `key`.
    public func increment(_ key: String, by amount: Int64 = 1) async throws {
        try await database.performChecked(.increment(map: name, key: key, by: amount))
    }

    /// Subtracts `amount` from the counter at `key`.
    public func decrement(_ key: String, by amount: Int64 = 1) async throws {
        try await increment(key, by: -amount)
    }

    /// The counter's value (0 when absent).
    public func value(_ key: String) throws -> Int64 {
        guard case .counter(let c)? = try database.store.state(map: name, key: key) else { return 0 }
        return c.value
    }
}

/// A map of observed-remove multisets of a `Database`.
public struct ORMapHandle: Sendable {
    let database: Database
    public let name: String

    /// Adds `value` under a fresh tag.
    public func add(_ key: String, _ value: Value, ttl: Duration? = nil) async throws {
        try await database.performChecked(.add(map: name, key: key, value: value, ttlMillis: milliseconds(ttl)))
    }

    /// Removes every entry equal to `value` that this replica has seen.
    public func remove(_ key: String, _ value: Value) async throws {
        try await database.performChecked(.remove(map: name, key: key, value: value))
    }

    /// Live values at `key`, in tag order.
    public func values(_ key: String) throws -> [Value] {
        guard case .orMap(let s)? = try database.store.state(map: name, key: key) else { return [] }
        return s.values(at: database.now)
    }
}
