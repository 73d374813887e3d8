import Testing
import TopGunCore
import TopGunTestSupport

@testable import TopGunStore

/// The byte-level merges must agree with the Core CRDT merges they stand in for.
struct StatePayloadTests {
    @Test func orSetByteMergeEqualsCoreMerge() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<3_000 {
            let a = CoreGen.orSet(using: &rng)
            let b = CoreGen.orSet(using: &rng)
            var stored: [UInt8] = []
            StatePayload.encode(a, into: &stored)
            var out: [UInt8] = []
            var scratch = StatePayload.ORLayout()
            let changed = try stored.withUnsafeBytes {
                try StatePayload.mergeORSet(stored: $0, delta: b, scratch: &scratch, into: &out)
            }
            var expected = a
            let expectedChanged = expected.merge(b)
            let merged = try out.withUnsafeBytes { try StatePayload.decodeORSet($0) }
            #expect(merged == expected)
            #expect(changed == expectedChanged)
            // From nothing.
            let fresh = try StatePayload.mergeORSet(stored: nil, delta: b, scratch: &scratch, into: &out)
            #expect(try out.withUnsafeBytes { try StatePayload.decodeORSet($0) } == ORSet().merging(b))
            #expect(fresh == (ORSet().merging(b) != ORSet()))
        }
    }

    @Test func counterByteMergeEqualsCoreMerge() throws {
        var rng = SplitMix64(seed: 8)
        for _ in 0..<3_000 {
            let a = CoreGen.pnCounter(using: &rng)
            let b = CoreGen.pnCounter(using: &rng)
            var stored: [UInt8] = []
            var delta: [UInt8] = []
            StatePayload.encode(a, into: &stored)
            StatePayload.encode(b, into: &delta)
            var out: [UInt8] = []
            let changed = try stored.withUnsafeBytes { s in
                try delta.withUnsafeBytes { d in try StatePayload.mergeCounter(stored: s, delta: d, into: &out) }
            }
            var expected = a
            let expectedChanged = expected.merge(b)
            #expect(try out.withUnsafeBytes { try StatePayload.decodeCounter($0) } == expected)
            #expect(changed == expectedChanged)
        }
    }

    @Test func counterShapesRoundTrip() throws {
        let shapes = [
            PNCounter(), PNCounter(positive: [NodeID(1): 3]), PNCounter(negative: [NodeID(2): 4]),
            PNCounter(positive: [NodeID(1): 3], negative: [NodeID(1): 5]),
            PNCounter(positive: [NodeID(1): 3], negative: [NodeID(2): 5]),
            PNCounter(positive: [NodeID(1): 3, NodeID(9): 1], negative: [NodeID(2): 5]),
        ]
        for counter in shapes {
            var bytes: [UInt8] = []
            StatePayload.encode(counter, into: &bytes)
            #expect(try bytes.withUnsafeBytes { try StatePayload.decodeCounter($0) } == counter)
        }
    }

    @Test func truncatedPayloadsAreTypedErrors() {
        var set = ORSet()
        set.add("x", tag: HLCTimestamp(millis: 1, counter: 0, node: NodeID(1)))
        set.removeTag(HLCTimestamp(millis: 0, counter: 0, node: NodeID(2)))
        var bytes: [UInt8] = []
        StatePayload.encode(set, into: &bytes)
        for cut in 0..<bytes.count {
            #expect(throws: StoreError.self) { try Array(bytes[0..<cut]).withUnsafeBytes { try StatePayload.decodeORSet($0) } }
        }
        var counter: [UInt8] = []
        StatePayload.encode(PNCounter(positive: [NodeID(1): 3]), into: &counter)
        for cut in 0..<counter.count {
            #expect(throws: StoreError.self) { try Array(counter[0..<cut]).withUnsafeBytes { try StatePayload.decodeCounter($0) } }
        }
    }
}
