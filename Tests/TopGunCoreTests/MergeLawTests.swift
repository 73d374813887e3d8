import PropertyBased
import Testing
import TopGunCore
import TopGunTestSupport

/// Merge must be commutative, associative and idempotent for every CRDT, on
/// generated states that include ties, tombstones and TTLs.
@Suite(.timeLimit(.minutes(2)))
struct MergeLawTests {
    static func laws<T: Equatable>(_ a: T, _ b: T, _ c: T, merge: (T, T) -> T) {
        #expect(merge(a, b) == merge(b, a), "commutative")
        #expect(merge(merge(a, b), c) == merge(a, merge(b, c)), "associative")
        #expect(merge(a, a) == a, "idempotent")
        #expect(merge(merge(a, b), b) == merge(a, b), "re-delivery changes nothing")
    }

    @Test func lwwRecord() async {
        await propertyCheck(count: 2_000, input: Gen.lwwRecord, Gen.lwwRecord, Gen.lwwRecord) { a, b, c in
            Self.laws(a, b, c) { LWWRecord.merged($0, $1)! }
        }
    }

    @Test func lwwRecordWithResolverStillLWWWhenAccepted() async {
        await propertyCheck(count: 500, input: Gen.lwwRecord, Gen.lwwRecord) { a, b in
            #expect(ConflictResolver.lastWriterWins.resolve(current: a, incoming: b) == .accept)
        }
    }

    @Test func orSet() async {
        await propertyCheck(count: 2_000, input: Gen.orSet, Gen.orSet, Gen.orSet) { a, b, c in
            Self.laws(a, b, c) { $0.merging($1) }
        }
    }

    @Test func orSetAddWinsOverConcurrentRemove() async {
        await propertyCheck(count: 500, input: Gen.orSet) { base in
            var remover = base
            var adder = base
            remover.remove(.int(1))
            let tag = HLCTimestamp(millis: 9_999, counter: 0, node: NodeID(7))
            adder.add(.int(1), tag: tag)
            remover.merge(adder)
            #expect(remover.entries[tag]?.value == .int(1))
        }
    }

    @Test func pnCounter() async {
        await propertyCheck(count: 2_000, input: Gen.pnCounter, Gen.pnCounter, Gen.pnCounter) { a, b, c in
            Self.laws(a, b, c) { $0.merging($1) }
        }
    }

    @Test func mergeReportsChangeExactlyWhenStateChanges() async {
        await propertyCheck(count: 1_000, input: Gen.orSet, Gen.orSet) { a, b in
            var m = a
            let changed = m.merge(b)
            #expect(changed == (m != a))
        }
        await propertyCheck(count: 1_000, input: Gen.lwwRecord, Gen.lwwRecord) { a, b in
            var m = a
            let changed = m.merge(b)
            #expect(changed == (m != a))
        }
        await propertyCheck(count: 1_000, input: Gen.pnCounter, Gen.pnCounter) { a, b in
            var m = a
            let changed = m.merge(b)
            #expect(changed == (m != a))
        }
    }
}

/// The counter's range rule (`PNCounter.value(adding:by:to:)`, which the store runs over
/// payload bytes) against 128-bit arithmetic.
struct CounterRangeTests {
    @Test func addingMatchesWideArithmetic() {
        var rng = SplitMix64(seed: 16)
        let edges: [UInt64] = [0, 1, 2, UInt64(Int64.max) - 1, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64.max - 1, UInt64.max]
        func total() -> UInt64 { Bool.random(using: &rng) ? edges.randomElement(using: &rng)! : UInt64.random(in: 0...1_000, using: &rng) }
        for _ in 0..<20_000 {
            let nodes = (0..<Int.random(in: 0...3, using: &rng)).map { NodeID(UInt64($0 + 1)) }
            let counter = PNCounter(
                positive: Dictionary(uniqueKeysWithValues: nodes.map { ($0, total()) }),
                negative: Dictionary(uniqueKeysWithValues: nodes.map { ($0, total()) }))
            let node = NodeID(UInt64.random(in: 1...4, using: &rng))
            let delta = Bool.random(using: &rng) ? Int64.random(in: -5...5, using: &rng) : [Int64.min, Int64.max, -Int64.max].randomElement(using: &rng)!
            // Reference: every per-node total and both sums must fit in 64 bits; the value in Int64.
            var p = UInt128(0)
            var n = UInt128(0)
            var fits = true
            for id in Set(counter.positive.keys).union(counter.negative.keys).union([node]) {
                var tp = UInt128(counter.positive[id] ?? 0)
                var tn = UInt128(counter.negative[id] ?? 0)
                if id == node { if delta > 0 { tp += UInt128(delta) } else { tn += UInt128(delta.magnitude) } }
                fits = fits && tp <= UInt128(UInt64.max) && tn <= UInt128(UInt64.max)
                p += tp
                n += tn
            }
            fits = fits && p <= UInt128(UInt64.max) && n <= UInt128(UInt64.max)
            let value = Int128(p) - Int128(n)
            let expected: Int64? = fits && value >= Int128(Int64.min) && value <= Int128(Int64.max) ? Int64(value) : nil
            #expect(counter.adding(delta, by: node) == expected, "\(counter) + \(delta) by \(node)")
        }
    }
}
