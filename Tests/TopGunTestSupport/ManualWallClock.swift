import Synchronization
import TopGunCore

/// A wall clock tests move by hand.
public final class ManualWallClock: WallClock, Sendable {
    private let current: Mutex<UInt64>

    public init(_ start: UInt64 = 1_000_000) { current = Mutex(start) }

    public func milliseconds() -> UInt64 { current.withLock { $0 } }

    /// Sets the time (it may go backwards, as real clocks do).
    public func set(_ millis: UInt64) { current.withLock { $0 = millis } }

    /// Moves the time forward by `millis`.
    public func advance(by millis: UInt64) { current.withLock { $0 += millis } }
}
