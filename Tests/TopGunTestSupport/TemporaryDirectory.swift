import Foundation

/// Runs `body` with a fresh empty directory that is removed afterwards.
public func withTemporaryDirectory<R>(
    _ body: (String) throws -> R
) throws -> R {
    let path = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(path)
}

/// Async variant of `withTemporaryDirectory`.
public func withTemporaryDirectory<R>(
    _ body: (String) async throws -> R
) async throws -> R {
    let path = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// Creates a unique directory under the system temporary directory.
public func makeTemporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "topgun-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// The repository root, found from this source file's location.
public let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()
