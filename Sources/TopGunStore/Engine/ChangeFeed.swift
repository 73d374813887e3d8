import Synchronization
import TopGunCore

/// Fans committed changes out to subscribers, each with a bounded buffer.
///
/// Policy for a slow consumer: the writer never waits. When a subscriber's buffer is
/// full the oldest undelivered changes are dropped; every change carries its op-log
/// sequence, so the consumer sees the gap and can re-read it from the op log.
final class ChangeFeed: Sendable {
    private let subscribers = Mutex<[UInt64: AsyncStream<Change>.Continuation]>([:])
    private let nextID = Atomic<UInt64>(0)
    private let count = Atomic<Int>(0)
    let bufferSize: Int

    init(bufferSize: Int) { self.bufferSize = bufferSize }

    var hasSubscribers: Bool { count.load(ordering: .acquiring) > 0 }

    func subscribe() -> AsyncStream<Change> {
        let (stream, continuation) = AsyncStream.makeStream(of: Change.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id = nextID.add(1, ordering: .relaxed).newValue
        subscribers.withLock { $0[id] = continuation }
        count.add(1, ordering: .releasing)
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            if self.subscribers.withLock({ $0.removeValue(forKey: id) }) != nil {
                self.count.subtract(1, ordering: .releasing)
            }
        }
        return stream
    }

    func publish(_ changes: [Change]) {
        subscribers.withLock { subs in
            for continuation in subs.values {
                for change in changes { continuation.yield(change) }
            }
        }
    }

    func finish() {
        let all = subscribers.withLock { subs in
            defer { subs.removeAll() }
            return Array(subs.values)
        }
        for c in all { c.finish() }
    }
}
