import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

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
            #expect(try store.operations(after: nil).count == 3)
            clock.advance(by: 10_000)
            let cutoff = HLCTimestamp(millis: clock.milliseconds() - 5_000, counter: 0, node: NodeID(0))
            var report = try store.collectGarbage(olderThan: cutoff, maxSteps: 1)
            #expect(report.tombstonesRemoved == 1 && report.logEntriesRemoved == 1 && report.hasMore)
            while report.hasMore { report = try store.collectGarbage(olderThan: cutoff, maxSteps: 1) }
            #expect(try store.state(map: "m", key: "gone") == nil)
            #expect(try store.state(map: "m", key: "kept") != nil)
            #expect(try store.operations(after: nil).isEmpty)
            #expect(try store.verifyMerkle(map: "m").isEmpty)
            // The original write arrives again late: it must not bring the key back.
            let out = try store.apply([ReplicatedOperation.lww(map: "m", key: "gone", value: "v", timestamp: t)])
            guard case .rejected(.beyondHorizon) = out[0] else {
                Issue.record("stale op applied: \(out[0])")
                return
            }
            #expect(try store.state(map: "m", key: "gone") == nil)
            // New writes still work.
            let fresh = try store.apply([Mutation.set(map: "m", key: "gone", value: "new", ttlMillis: nil)])
            #expect(fresh[0].isApplied)
        }
    }

    @Test func logEntriesNeededByNoPeerAreKeptUntilRetention() throws {
        let clock = ManualWallClock(1_700_000_000_000)
        try withStore(clock: clock) { store, _ in
            _ = try store.apply((0..<10).map { Mutation.set(map: "m", key: "k\($0)", value: 1, ttlMillis: nil) })
            let log = try store.operations(after: nil)
            let report = try store.collectGarbage(olderThan: .zero, acknowledged: [log[3].sequence, log[6].sequence])
            #expect(report.logEntriesRemoved == 4)
            #expect(try store.operations(after: nil).first?.sequence == log[4].sequence)
        }
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
}
