import Synchronization

/// A counter that tasks can wait on: `notify()` bumps it and wakes every waiter. The
/// store bumps its `commits` signal after every commit that logged something, so
/// replication streams wait for new entries instead of polling the log.
public final class ChangeSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextWaiter: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<UInt64, Never>] = [:]
    }

    private let state = Mutex(State())

    /// A signal at generation 0.
    public init() {}

    /// How many times `notify()` was called.
    public var generation: UInt64 { state.withLock { $0.generation } }

    /// Bumps the generation and wakes every waiter.
    public func notify() {
        let (generation, waiters) = state.withLock { state -> (UInt64, [CheckedContinuation<UInt64, Never>]) in
            state.generation += 1
            defer { state.waiters.removeAll() }
            return (state.generation, Array(state.waiters.values))
        }
        for waiter in waiters { waiter.resume(returning: generation) }
    }

    /// Returns once the generation is above `seen` (at once when it already is), or when
    /// the calling task is cancelled.
    ///
    /// - Returns: the generation seen on waking.
    public func wait(after seen: UInt64) async -> UInt64 {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> UInt64? in
                    if state.generation > seen || Task.isCancelled { return state.generation }
                    state.waiters[id] = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(returning: state.withLock { $0.generation })
        }
    }
}
