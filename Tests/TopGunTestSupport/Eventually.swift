/// Checks `condition` every 10 ms until it holds or `limit` passes: a wait on state
/// another task or process changes, with a deadline (never a bare sleep).
///
/// - Returns: whether `condition` held before the deadline.
public func eventually(within limit: Duration = .seconds(60), _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try condition()
}
