import Foundation

/// Runs a long synchronous test body on a thread of its own and awaits it, so it does
/// not hold one of the cooperative pool's threads (two on a two-core machine) while the
/// quick async tests wait for one.
public func onOwnThread<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
