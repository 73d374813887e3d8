import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// A cutoff that never holds anything back: only acknowledgements decide.
let anyAge = HLCTimestamp(millis: HLCTimestamp.maxMillis, counter: 0, node: NodeID(0))

struct GarbageCollectionTests {
    @Test func tombstonesAndLogGoButStaleOpsCannotResurrect() throws {
        let clock = ManualWallClock(1_700_000_000_000)
        try withStore(clock: clock) { store, _ in
            let t = HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: NodeID(5))
            _ = try store.apply([
                ReplicatedOperation.lww(map: "m", key: "gone", value: "v", timestamp: t),
                ReplicatedOperation.lww(map: "m", key: "kept", value: "v", timestamp: t),
            ])
            _ = try store.apply([ReplicatedOperation.lww(map: "m", key: "gone", value: nil, timestamp: t.successor)])
            #expect(try store.opLogCount() == 3)
            #expect(try store.operations(after: nil).count == 2, "the superseded write of gone is left out")
            clock.advance(by: 10_000)
            let cutoff = HLCTimestamp(millis: clock.milliseconds() - 5_000, counter: 0, node: NodeID(0))
            var total = try store.collectGarbage(olderThan: cutoff, maxSteps: 1)
            #expect(total.logEntriesRemoved == 1 && total.hasMore)
            while total.hasMore {
                let step = try store.collectGarbage(olderThan: cutoff, maxSteps: 1)
                total.logEntriesRemoved += step.logEntriesRemoved
                total.tombstonesRemoved += step.tombstonesRemoved
                total.hasMore = step.hasMore
            }
            #expect(total.logEntriesRemoved == 3 && total.tombstonesRemoved == 1)
            #expect(try store.state(map: "m", key: "gone") == nil)
            #expect(try store.state(map: "m", key: "kept") != nil)
            #expect(try store.operations(after: nil).isEmpty)
            #expect(try store.verifyMerkle(map: "m").isEmpty)
            #expect(store.garbageCollectionHorizon == t.successor, "the horizon is the newest removed tombstone")
            // The original write arrives again late: it must not bring the key back.
            let out = try store.apply([ReplicatedOperation.lww(map: "m", key: "gone", value: "v", timestamp: t)])
            #expect(out[0] == .rejected(.beyondHorizon(t.successor)))
            #expect(try store.state(map: "m", key: "gone") == nil)
            // New writes still work.
            let fresh = try store.apply([Mutation.set(map: "m", key: "gone", value: "new", ttlMillis: nil)])
            #expect(fresh[0].isApplied)
        }
    }

    @Test func logEntriesAreKeptUntilEveryKnownPeerAcknowledges() throws {
        try withStore { store, _ in
            _ = try store.apply((0..<10).map { Mutation.set(map: "m", key: "k\($0)", value: 1, ttlMillis: nil) })
            let log = try store.operations(after: nil)
            // One subscriber known by registration, one peer this store pulls from.
            try store.registerPeer(NodeID(20))
            _ = try store.apply([], fromPeer: NodeID(21), cursor: log[0].sequence)
            var report = try store.collectGarbage(olderThan: anyAge)
            #expect(report.logEntriesRemoved == 0 && report.waitingFor != nil, "no acknowledgement yet")
            report = try store.collectGarbage(olderThan: anyAge, acknowledgements: [NodeID(20): log[8].sequence])
            #expect(report.logEntriesRemoved == 0 && report.waitingFor == NodeID(21))
            report = try store.collectGarbage(olderThan: anyAge, acknowledgements: [NodeID(21): log[3].sequence])
            #expect(report.logEntriesRemoved == 4)
            #expect(try store.operations(after: nil).first?.sequence == log[4].sequence)
            // Acknowledgements are persisted and only move forward.
            _ = try store.collectGarbage(olderThan: anyAge, acknowledgements: [NodeID(21): log[1].sequence])
            #expect(try store.peer(NodeID(21))?.acknowledged == log[3].sequence)
            // A peer declared gone no longer holds collection back.
            #expect(try store.forgetPeer(NodeID(21)))
            #expect(try store.collectGarbage(olderThan: anyAge).logEntriesRemoved == 5)
        }
    }

    /// Issue: a node ran retention GC while a link was cut, raised its horizon to the
    /// time cutoff, then refused a write the peer made during the cut.
    @Test func aWriteMadeDuringAPartitionSurvivesRetentionOnTheOtherSide() throws {
        let clock = ManualWallClock(1_700_000_000_000)
        try withStore(clock: clock) { b, _ in
            let a = NodeID(30)
            _ = try b.apply([], fromPeer: a, cursor: HLCTimestamp(millis: 1_699_999_999_000, counter: 0, node: a))
            _ = try b.apply([Mutation.set(map: "m", key: "x", value: 1, ttlMillis: nil)])
            _ = try b.apply([Mutation.set(map: "m", key: "x", value: nil, ttlMillis: nil)])
            // A writes during the cut; B collects with a 2 s retention before it arrives.
            let written = HLCTimestamp(millis: clock.milliseconds() + 1, counter: 0, node: a)
            clock.advance(by: 10_000)
            let cutoff = HLCTimestamp(millis: clock.milliseconds() - 2_000, counter: 0, node: NodeID(0))
            let report = try b.collectGarbage(olderThan: cutoff)
            #expect(report.logEntriesRemoved == 0 && report.tombstonesRemoved == 0 && report.waitingFor == a)
            let entry = LoggedOperation(sequence: written, operation: .lww(map: "m", key: "new", value: 7, timestamp: written))
            let out = try b.apply([entry], fromPeer: a, cursor: written)
            #expect(out[0].isApplied, "\(out[0])")
            #expect(try b.state(map: "m", key: "new") != nil)
        }
    }

    @Test func aRefusalForTheHorizonHoldsTheCursorIsCountedAndARepairBringsTheWriteBack() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "x", value: nil, ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "x", value: 1, ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "x", value: nil, ttlMillis: nil)])
            _ = try store.collectGarbage(olderThan: anyAge)
            let horizon = store.garbageCollectionHorizon
            #expect(horizon > .zero)
            // A peer nobody knew about (or one declared gone) comes back with an old write.
            let peer = NodeID(40)
            let old = HLCTimestamp(millis: horizon.millis - 1, counter: 0, node: peer)
            let entries = [
                LoggedOperation(sequence: old, operation: .lww(map: "m", key: "a", value: 1, timestamp: old)),
                LoggedOperation(sequence: old.successor, operation: .lww(map: "m", key: "lost?", value: 2, timestamp: old.successor)),
            ]
            let out = try store.apply(entries, fromPeer: peer, cursor: entries[1].sequence)
            #expect(out.allSatisfy { if case .rejected(.beyondHorizon) = $0 { true } else { false } })
            #expect(try store.peerCursor(peer) == nil, "the cursor does not pass a refused write")
            #expect(try store.peer(peer)?.refusedBeyondHorizon == 2)
            #expect(store.counters.snapshot.refusedBeyondHorizon == 2)
            // The operator's repair overrides the horizon; the re-offered entries then pass.
            let repaired = try store.apply(entries.map(\.operation), overridingHorizon: true)
            #expect(repaired.allSatisfy { $0.isApplied })
            _ = try store.apply(entries, fromPeer: peer, cursor: entries[1].sequence)
            #expect(try store.peerCursor(peer) == entries[1].sequence)
        }
    }

    /// Issue: a stream that stalled while the log was collected resumed after the
    /// truncated range; the log read now says so in the same snapshot.
    @Test func readingPastATruncatedRangeSaysSo() throws {
        try withStore { store, _ in
            _ = try store.apply((0..<6).map { Mutation.set(map: "m", key: "k\($0)", value: 1, ttlMillis: nil) })
            let log = try store.operations(after: nil)
            #expect(try store.readLog(after: log[1].sequence, limit: 10) == .operations(Array(log[2...]), readThrough: log[5].sequence))
            _ = try store.collectGarbage(olderThan: anyAge, acknowledgements: [NodeID(50): log[3].sequence])
            #expect(try store.readLog(after: log[1].sequence, limit: 10) == .truncated(through: log[3].sequence))
            #expect(try store.readLog(after: nil, limit: 10) == .truncated(through: log[3].sequence))
            #expect(try store.readLog(after: log[3].sequence, limit: 10) == .operations(Array(log[4...]), readThrough: log[5].sequence))
        }
    }
}

struct AcknowledgementTrackerTests {
    @Test func anAcknowledgementCountsOnceThePeersOwnLogWasPulledThatFar() {
        var tracker = AcknowledgementTracker()
        let peer = NodeID(1)
        let s = { (n: UInt64) in HLCTimestamp(millis: n, counter: 0, node: NodeID(9)) }
        tracker.record(peer, acked: s(10), peerHead: s(100))
        tracker.record(peer, acked: s(20), peerHead: s(200))
        #expect(tracker.confirmed { _ in s(99) }.isEmpty)
        #expect(tracker.confirmed { _ in s(150) } == [peer: s(10)])
        #expect(tracker.confirmed { _ in s(150) }.isEmpty, "handed out once")
        #expect(tracker.confirmed { _ in s(200) } == [peer: s(20)])
        // A peer that serves no log: at once.
        tracker.record(NodeID(2), acked: s(5), peerHead: nil)
        #expect(tracker.confirmed { _ in nil } == [NodeID(2): s(5)])
    }
}

struct PeerCursorTests {
    @Test func driftRefusedEntryStopsTheCursorAndIsOfferedAgain() throws {
        let clock = ManualWallClock(1_700_000_000_000)
        try withStore(clock: clock) { store, _ in
            let peer = NodeID(9)
            let base = HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: peer)
            let far = HLCTimestamp(millis: 1_700_000_000_000 + 120_000, counter: 0, node: peer)
            let entries = [
                LoggedOperation(sequence: base, operation: .lww(map: "m", key: "a", value: 1, timestamp: base)),
                LoggedOperation(sequence: base.successor, operation: .lww(map: "m", key: "b", value: 2, timestamp: far)),
                LoggedOperation(sequence: base.successor.successor, operation: .lww(map: "m", key: "c", value: 3, timestamp: base.successor)),
            ]
            let out = try store.apply(entries, fromPeer: peer, cursor: entries[2].sequence)
            #expect(out[0].isApplied && out[2].isApplied)
            #expect(try store.peerCursor(peer) == entries[0].sequence, "stops before the refused entry")
            clock.advance(by: 120_000)
            let again = try store.apply(Array(entries[1...]), fromPeer: peer, cursor: entries[2].sequence)
            #expect(again[0].isApplied && again[1] == .unchanged)
            #expect(try store.peerCursor(peer) == entries[2].sequence)
            // Cursors never move backwards.
            _ = try store.apply([], fromPeer: peer, cursor: entries[0].sequence)
            #expect(try store.peerCursor(peer) == entries[2].sequence)
        }
    }

    @Test func scopesNarrowWithSegmentsAndWidenOnlyThroughARepair() throws {
        try withStore { store, _ in
            let peer = NodeID(9)
            let t = HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: peer)
            _ = try store.apply([], fromPeer: peer, cursor: t, scope: PeerScope(maps: ["a"]))
            #expect(try store.peer(peer)?.scope == PeerScope(maps: ["a"]))
            _ = try store.apply([], fromPeer: peer, cursor: t.successor, scope: .all)
            #expect(try store.peer(peer)?.scope == PeerScope(maps: ["a"]), "segments of a wider subscription do not cover the past")
            #expect(!(try store.peer(peer)!.scope!.covers(.all)))
            try store.recordRepair(fromPeer: peer, through: t.successor.successor, scope: .all)
            #expect(try store.peer(peer)?.scope == .all)
            #expect(try store.peerCursor(peer) == t.successor.successor)
        }
    }
}
