import Synchronization

/// Write-path counters a metrics exporter reads: operations offered and applied, and
/// the durations of recent commits (drained by the reader).
public final class StoreCounters: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var operations = 0
        public var applied = 0
        public var batches = 0
        /// Remote operations refused for being older than the GC horizon (a peer or
        /// this store needs a repair).
        public var refusedBeyondHorizon = 0
        /// Op-log entries a replicator's read left out because their record is damaged
        /// (`check` names them; `topgun repair` restores them from a peer).
        public var damagedRecordsMet = 0
        /// Index entries a query found not to match their record (it then answered
        /// from the records).
        public var indexEntriesDamaged = 0
        public init() {}
    }

    private let totals = Mutex(Snapshot())
    private let durations = Mutex<[Duration]>([])

    func record(applied: Int, of operations: Int) {
        totals.withLock {
            $0.operations += operations
            $0.applied += applied
            $0.batches += 1
        }
    }

    func record(refusedBeyondHorizon count: Int) {
        totals.withLock { $0.refusedBeyondHorizon += count }
    }

    func record(indexEntriesDamaged count: Int) {
        totals.withLock { $0.indexEntriesDamaged += count }
    }

    func record(damagedRecordsMet count: Int) {
        totals.withLock { $0.damagedRecordsMet += count }
    }

    func record(batchDuration: Duration) {
        durations.withLock { d in
            if d.count < 10_000 { d.append(batchDuration) }
        }
    }

    /// Totals since open.
    public var snapshot: Snapshot { totals.withLock { $0 } }

    /// Commit durations recorded since the last call (at most 10,000 are kept).
    public func drainBatchDurations() -> [Duration] {
        durations.withLock { d in
            defer { d.removeAll(keepingCapacity: true) }
            return d
        }
    }
}
