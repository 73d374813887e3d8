import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

func withStore<R>(
    clock: ManualWallClock = ManualWallClock(1_700_000_000_000), node: UInt64 = 1,
    _ body: (Store, String) throws -> R
) throws -> R {
    try withTemporaryDirectory { dir in
        let store = try Store(path: dir, options: .init(durability: .noSync, wallClock: clock, nodeID: NodeID(node)))
        return try body(store, dir)
    }
}

struct StoreApplyTests {
    let t0 = HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: NodeID(7))

    @Test func lwwMergeKeepsNewestAndLogsOnlyChanges() throws {
        try withStore { store, _ in
            let older = ReplicatedOperation.lww(map: "users", key: "u1", value: "old", timestamp: t0)
            let newer = ReplicatedOperation.lww(map: "users", key: "u1", value: "new", timestamp: t0.successor)
            let outcomes = try store.apply([newer, older, newer])
            #expect(outcomes[0].isApplied)
            #expect(outcomes[1] == .unchanged && outcomes[2] == .unchanged)
            guard case .lww(let record)? = try store.state(map: "users", key: "u1") else {
                Issue.record("missing record")
                return
            }
            #expect(record.value == "new" && record.timestamp == t0.successor)
            let log = try store.operations(after: nil)
            #expect(log.count == 1)
            #expect(log[0].operation == newer)
        }
    }

    /// A merged counter change is range-checked like a local one: totals a peer sends
    /// are its claim, and a sum that leaves Int64 (or a total that overflows) is refused
    /// whole, the stored value unchanged and nothing logged.
    @Test(arguments: [
        // Two honest nodes whose sum passes Int64.max.
        ([NodeID(2): UInt64(Int64.max) - 10], [NodeID: UInt64](), [NodeID(3): UInt64(100)], [NodeID: UInt64]()),
        // One crafted op: a negative total that wraps the sum to any value.
        ([NodeID(2): UInt64(5)], [:], [NodeID(3): UInt64.max - 36], [:]),
        // Totals whose sum overflows UInt64.
        ([NodeID(2): UInt64.max / 2 + 1], [NodeID(2): UInt64.max / 2], [NodeID(3): UInt64.max / 2 + 1], [NodeID(3): UInt64.max / 2 + 1]),
        // Below Int64.min.
        ([:], [NodeID(2): UInt64(Int64.max)], [:], [NodeID(3): UInt64(2)]),
    ])
    func mergedCounterChangesStayInTheInt64Range(
        _ first: [NodeID: UInt64], _ firstNegative: [NodeID: UInt64], _ second: [NodeID: UInt64], _ secondNegative: [NodeID: UInt64]
    ) throws {
        try withStore { store, _ in
            let a = PNCounter(positive: first, negative: firstNegative)
            let outcomes = try store.apply([ReplicatedOperation(map: "c", key: "k", timestamp: t0, payload: .counter(a))])
            let stateBefore = try store.state(map: "c", key: "k")
            let logBefore = try store.operations(after: nil).count
            let b = PNCounter(positive: second, negative: secondNegative)
            let out = try store.apply([ReplicatedOperation(map: "c", key: "k", timestamp: t0.successor, payload: .counter(b))])
            if outcomes[0].isApplied {
                guard case .rejected(.invalid(let why)) = out[0] else {
                    Issue.record("not refused: \(out)")
                    return
                }
                #expect(why.contains("Int64"))
                #expect(try store.state(map: "c", key: "k") == stateBefore)
                #expect(try store.operations(after: nil).count == logBefore)
            } else {
                // The first op alone is out of range: refused too.
                #expect(stateBefore == nil)
            }
            #expect(try store.check().problems.isEmpty)
        }
    }

    /// A single op whose own totals leave Int64 never lands either.
    @Test func aCounterOpOutOfRangeOnItsOwnIsRefused() throws {
        try withStore { store, _ in
            let op = ReplicatedOperation(map: "c", key: "k", timestamp: t0, payload: .counter(PNCounter(negative: [NodeID(2): UInt64(Int64.max) + 2])))
            guard case .rejected(.invalid) = try store.apply([op])[0] else {
                Issue.record("accepted")
                return
            }
            #expect(try store.state(map: "c", key: "k") == nil)
        }
    }

    @Test func farFutureOpIsRejectedAloneAndClockIsNotDragged() throws {
        try withStore { store, _ in
            let far = HLCTimestamp(millis: t0.millis + 3_600_000, counter: 0, node: NodeID(9))
            let before = store.clockHighWater
            let outcomes = try store.apply([
                .lww(map: "m", key: "a", value: 1, timestamp: t0),
                .lww(map: "m", key: "b", value: 2, timestamp: far),
                .lww(map: "m", key: "c", value: 3, timestamp: t0.successor),
            ])
            #expect(outcomes[0].isApplied && outcomes[2].isApplied)
            guard case .rejected(.clockDrift) = outcomes[1] else {
                Issue.record("expected drift rejection, got \(outcomes[1])")
                return
            }
            #expect(try store.state(map: "m", key: "b") == nil)
            #expect(store.clockHighWater.millis < far.millis && store.clockHighWater > before)
        }
    }

    @Test func opLogKeysAreStrictlyIncreasingAndPagingWorks() throws {
        try withStore { store, _ in
            for batch in 0..<10 {
                _ = try store.apply((0..<50).map { Mutation.set(map: "m", key: "k\(batch)-\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            }
            let all = try store.operations(after: nil)
            #expect(all.count == 500)
            #expect(zip(all, all.dropFirst()).allSatisfy { $0.sequence < $1.sequence })
            var pages: [LoggedOperation] = []
            var cursor: HLCTimestamp? = nil
            while true {
                let page = try store.operations(after: cursor, limit: 64)
                if page.isEmpty { break }
                pages += page
                cursor = page.last!.sequence
            }
            #expect(pages == all)
            #expect(try store.lastSequence() == all.last!.sequence)
        }
    }

    @Test func replayingTheLogIntoAnotherStoreConverges() throws {
        try withStore(node: 1) { a, _ in
            try withStore(node: 2) { b, _ in
                var rng = SplitMix64(seed: 42)
                for _ in 0..<20 {
                    let muts: [Mutation] = (0..<30).map { _ in
                        let key = "k\(Int.random(in: 0..<40, using: &rng))"
                        switch Int.random(in: 0..<5, using: &rng) {
                        case 0: return .set(map: "lww", key: key, value: nil, ttlMillis: nil)
                        case 1: return .add(map: "tags", key: key, value: .int(Int64.random(in: 0..<3, using: &rng)), ttlMillis: nil)
                        case 2: return .remove(map: "tags", key: key, value: .int(Int64.random(in: 0..<3, using: &rng)))
                        case 3: return .increment(map: "hits", key: key, by: Int64.random(in: -3...3, using: &rng))
                        default: return .set(map: "lww", key: key, value: .int(Int64.random(in: 0..<100, using: &rng)), ttlMillis: nil)
                        }
                    }
                    _ = try a.apply(muts)
                }
                let log = try a.operations(after: nil).map(\.operation)
                _ = try b.apply(log.shuffled(using: &rng))
                _ = try b.apply(log)  // re-delivery is harmless
                for map in ["lww", "tags", "hits"] {
                    var left: [String: StoredState] = [:]
                    var right: [String: StoredState] = [:]
                    try a.scan(map: map) { k, s in left[k] = s; return true }
                    try b.scan(map: map) { k, s in right[k] = s; return true }
                    #expect(left == right, "\(map)")
                    for p in UInt16(0)..<271 {
                        let (x, y) = (try a.merkleRoot(map: map, partition: p), try b.merkleRoot(map: map, partition: p))
                        #expect(x == y)
                    }
                    let (badA, badB) = (try a.verifyMerkle(map: map), try b.verifyMerkle(map: map))
                    #expect(badA.isEmpty && badB.isEmpty)
                }
            }
        }
    }

    @Test func counterAndORMapLocalMutations() throws {
        try withStore { store, _ in
            _ = try store.apply([
                .increment(map: "likes", key: "p", by: 5), .increment(map: "likes", key: "p", by: -2),
                .add(map: "tags", key: "p", value: "swift", ttlMillis: nil),
                .add(map: "tags", key: "p", value: "db", ttlMillis: nil),
            ])
            _ = try store.apply([.remove(map: "tags", key: "p", value: "db")])
            guard case .counter(let c)? = try store.state(map: "likes", key: "p"),
                case .orMap(let s)? = try store.state(map: "tags", key: "p")
            else {
                Issue.record("missing state")
                return
            }
            #expect(c.value == 3)
            #expect(s.values(at: 0) == ["swift"])
            #expect(s.tombstones.count == 1)
        }
    }

    @Test func kindMismatchIsRejected() throws {
        try withStore { store, _ in
            _ = try store.apply([.increment(map: "m", key: "k", by: 1)])
            let out = try store.apply([.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            guard case .rejected(.kindMismatch) = out[0] else {
                Issue.record("got \(out[0])")
                return
            }
        }
    }

    @Test func resolverRejectionsComeBack() throws {
        try withStore { store, _ in
            store.register(.maximum(), for: "scores")
            let out = try store.apply([
                .set(map: "scores", key: "a", value: 10, ttlMillis: nil),
                .set(map: "scores", key: "a", value: 5, ttlMillis: nil),
                .set(map: "scores", key: "a", value: 12, ttlMillis: nil),
            ])
            #expect(out[0].isApplied && out[2].isApplied)
            guard case .rejected(.resolver) = out[1] else {
                Issue.record("got \(out[1])")
                return
            }
            guard case .lww(let r)? = try store.state(map: "scores", key: "a") else { return }
            #expect(r.value == 12)
        }
    }

    @Test func updateRunsInsideTheTransaction() throws {
        try withStore { store, _ in
            _ = try store.apply([.set(map: "c", key: "n", value: 1, ttlMillis: nil)])
            let increment: @Sendable (Value?) throws -> Value? = { v in
                if case .int(let i)? = v { return .int(i + 1) }
                return .int(1)
            }
            let out = try store.apply((0..<10).map { _ in Mutation.update(map: "c", key: "n", ttlMillis: nil, increment) })
            let allApplied = out.allSatisfy { $0.isApplied }
            #expect(allApplied)
            guard case .lww(let r)? = try store.state(map: "c", key: "n") else { return }
            #expect(r.value == 11)
        }
    }
}
