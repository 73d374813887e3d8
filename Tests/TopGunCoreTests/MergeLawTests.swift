import PropertyBased
import Testing
import TopGunCore

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
