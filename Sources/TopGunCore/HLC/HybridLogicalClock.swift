/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Injectable so tests can move time by hand; the store supplies the system clock.
public protocol WallClock: Sendable {
    func milliseconds() -> UInt64
}

/// Why a remote timestamp was refused.
public struct HLCError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The remote timestamp that was refused.
    public var remote: HLCTimestamp
    /// Local wall time when it was refused.
    public var localMillis: UInt64
    /// The configured limit.
    public var maxDriftMillis: UInt64

    public var description: String {
        "Clock drift detected: Remote time \(remote.millis) is \(remote.millis - localMillis)ms ahead of local "
            + "\(localMillis) (threshold: \(maxDriftMillis)ms)"
    }
}

/// A hybrid logical clock (Kulkarni et al.), with TopGun's update rules.
///
/// `now()` is strictly monotonic even when the wall clock goes backwards;
/// `receive(_:)` moves the clock past a remote stamp so later local stamps order
/// after it, and refuses stamps too far in the future rather than adopt them.
public struct HybridLogicalClock: Sendable {
    public let node: NodeID
    public let wallClock: any WallClock
    /// Remote stamps more than this many ms ahead of the local wall clock are refused;
    /// nil accepts any stamp (TopGun's non-strict mode, for conformance and imports).
    public var maxDriftMillis: UInt64?
    /// The highest timestamp issued or observed so far.
    public private(set) var last: HLCTimestamp

    /// - Parameter lastIssued: the persisted high-water mark; the clock never issues a
    ///   stamp at or below it, whatever the wall clock says.
    public init(
        node: NodeID, wallClock: any WallClock, maxDriftMillis: UInt64? = 60_000,
        lastIssued: HLCTimestamp? = nil
    ) {
        self.node = node
        self.wallClock = wallClock
        self.maxDriftMillis = maxDriftMillis
        let start = lastIssued ?? .zero
        self.last = HLCTimestamp(millis: start.millis, counter: start.counter, node: node)
    }

    /// A fresh timestamp, greater than every one issued or received before.
    public mutating func now() -> HLCTimestamp {
        now(wall: wallClock.milliseconds())
    }

    /// `now()` with a wall-clock reading the caller already took (one per batch).
    public mutating func now(wall reading: UInt64) -> HLCTimestamp {
        let wall = min(reading, HLCTimestamp.maxMillis)
        if wall > last.millis {
            last = HLCTimestamp(millis: wall, counter: 0, node: node)
        } else {
            last = HLCTimestamp(millis: last.millis, counter: last.counter, node: node).successor
        }
        return last
    }

    /// Advances the clock past `remote` (TopGun's `HLC.update`).
    ///
    /// - Throws: `HLCError` when `remote` is more than `maxDriftMillis` ahead of the
    ///   wall clock; the clock is then unchanged.
    public mutating func receive(_ remote: HLCTimestamp) throws(HLCError) {
        try receive(remote, wall: wallClock.milliseconds())
    }

    /// `receive(_:)` with a wall-clock reading the caller already took.
    public mutating func receive(_ remote: HLCTimestamp, wall reading: UInt64) throws(HLCError) {
        let wall = min(reading, HLCTimestamp.maxMillis)
        if let maxDrift = maxDriftMillis, remote.millis > wall, remote.millis - wall > maxDrift {
            throw HLCError(remote: remote, localMillis: wall, maxDriftMillis: maxDrift)
        }
        let m = max(last.millis, wall, remote.millis)
        let base: HLCTimestamp
        if m == last.millis && m == remote.millis {
            base = HLCTimestamp(millis: m, counter: max(last.counter, remote.counter), node: node)
        } else if m == last.millis {
            base = HLCTimestamp(millis: m, counter: last.counter, node: node)
        } else if m == remote.millis {
            base = HLCTimestamp(millis: m, counter: remote.counter, node: node)
        } else {
            last = HLCTimestamp(millis: m, counter: 0, node: node)
            return
        }
        last = base.successor
    }
}
