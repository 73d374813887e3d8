import TopGunCore

extension Database {
    /// Creates a secondary index on the field `path` of LWW map `map` (the map is
    /// created when it has no records yet) and builds it over the existing records;
    /// writes go on meanwhile and keep it up to date. Queries use it once built.
    ///
    /// - Throws: `StoreError(.kindMismatch)` for a map of another kind or a path
    ///   already indexed with another kind; `.invalidKey` for an unusable map name.
    @discardableResult
    public func createIndex(
        map: String, path: String, kind: IndexDefinition.Kind,
        progress: (IndexBuildProgress) -> Void = { _ in }
    ) throws -> IndexDefinition {
        try store.createIndex(map: map, path: path, kind: kind, progress: progress)
    }

    /// The indexes of `map`, built or building.
    public func indexes(of map: String) -> [IndexDefinition] { store.indexes(of: map) }

    /// Registers a deterministic conflict resolver for LWW map `map`; it runs inside
    /// the write transaction for local and replicated writes alike, and its refusals
    /// come back to the writer as `StoreError(.rejected)`. Resolvers live in memory:
    /// register them again after every open, before writing.
    public func register(_ resolver: ConflictResolver, for map: String) {
        store.register(resolver, for: map)
    }

    /// Copies the database to the empty directory `path` while writes go on (one
    /// consistent snapshot, free pages left out) and verifies the copy.
    ///
    /// - Throws: `StoreError` when the copy cannot be made or does not verify.
    @discardableResult
    public func backup(to path: String) throws -> BackupReport {
        try store.backup(to: path)
    }

    /// Checks every record, index entry and Merkle digest against the others.
    ///
    /// - Throws: `StoreError` when the check cannot run; problems found are in the report.
    public func check() throws -> CheckReport { try store.check() }
}
