import Foundation
import TopGunCore

/// Coalesces concurrent local writers into one write transaction.
///
/// Callers enqueue mutation lists; a single writer thread takes everything queued
/// (up to `maxGroupSize` mutations), applies it in one transaction, commits (one
/// fsync for the group under `.durable`) and then hands each caller its own outcomes.
/// If the group's transaction fails, each request is retried alone so one bad request
/// cannot fail its neighbours.
final class GroupCommitter: @unchecked Sendable {
    // @unchecked: `queue` and `stopped` are only touched under `condition`.
    struct Request {
        let mutations: [Mutation]
        let complete: @Sendable (Result<[ApplyOutcome], any Error>) -> Void
    }

    private unowned let store: Store
    private let condition = NSCondition()
    private var queue: [Request] = []
    private var stopped = false
    private var exited = false
    private var thread: Thread?
    private let maxGroupSize: Int

    init(store: Store, maxGroupSize: Int) {
        self.store = store
        self.maxGroupSize = maxGroupSize
        let thread = Thread { [weak self] in self?.run() }
        thread.name = "topgun-writer"
        self.thread = thread
        thread.start()
    }

    func submit(_ mutations: [Mutation], complete: @escaping @Sendable (Result<[ApplyOutcome], any Error>) -> Void) {
        condition.lock()
        if stopped {
            condition.unlock()
            complete(.failure(StoreError(.closed, "the database is closed")))
            return
        }
        queue.append(Request(mutations: mutations, complete: complete))
        condition.signal()
        condition.unlock()
    }

    /// Finishes queued work, then stops the writer thread and waits until it has
    /// (unless called on the writer thread itself). Later submissions fail `.closed`.
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        while !exited && Thread.current !== thread { condition.wait() }
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopped { condition.wait() }
            if queue.isEmpty && stopped {
                exited = true
                condition.broadcast()
                condition.unlock()
                return
            }
            var group: [Request] = []
            var size = 0
            while let next = queue.first, group.isEmpty || size + next.mutations.count <= maxGroupSize {
                group.append(queue.removeFirst())
                size += next.mutations.count
            }
            condition.unlock()
            commit(group)
        }
    }

    private func commit(_ group: [Request]) {
        do {
            let outcomes = try store.apply(group.flatMap(\.mutations))
            var offset = 0
            for request in group {
                request.complete(.success(Array(outcomes[offset..<offset + request.mutations.count])))
                offset += request.mutations.count
            }
        } catch {
            if group.count == 1 {
                group[0].complete(.failure(error))
                return
            }
            for request in group {
                do { request.complete(.success(try store.apply(request.mutations))) } catch { request.complete(.failure(error)) }
            }
        }
    }
}
