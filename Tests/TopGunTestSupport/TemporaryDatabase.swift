import TopGunStore

/// Thrown when a test database fails its consistency check on the way out.
public struct InconsistentDatabase: Error, CustomStringConvertible {
    public var problems: [String]
    public var description: String { "the database is inconsistent: \(problems.joined(separator: "; "))" }
}

/// Runs `body` with a database in a fresh temporary directory, then checks the whole
/// database (`Database.check()`: records, log, Merkle digests, indexes) and throws
/// when anything disagrees, so every test that uses it also tests consistency.
public func withTemporaryDatabase<R>(
    options: Database.Options = .init(durability: .noSync), _ body: (Database) async throws -> R
) async throws -> R {
    try await withTemporaryDirectory { dir in
        let db = try Database(path: dir, options: options)
        let result = try await body(db)
        db.close()
        let reopened = try Database(path: dir, options: options)
        defer { reopened.close() }
        let report = try reopened.check()
        guard report.isConsistent else { throw InconsistentDatabase(problems: report.problems) }
        return result
    }
}
