import Testing
import TopGunCore

struct PartitionAndMerkleTests {
    @Test func partitionsCoverTheRangeEvenly() {
        var counts = [Int](repeating: 0, count: Partitioner.partitionCount)
        for i in 0..<271_000 { counts[Int(Partitioner.partition(of: "key-\(i)"))] += 1 }
        #expect(counts.min()! > 700 && counts.max()! < 1_300)
    }

    @Test func bucketDigestIsOrderIndependentAndUpdatableInPlace() {
        var rng = SystemRandomNumberGenerator()
        let entries: [UInt64] = (0..<100).map { _ in UInt64.random(in: 0...UInt64.max, using: &rng) }
        let forward = entries.reduce(0, ^)
        let shuffled = entries.shuffled().reduce(0, ^)
        #expect(forward == shuffled)
        // Replace entry 7 with a new version in O(1).
        let replacement: UInt64 = 42
        var updated = forward
        updated ^= entries[7] ^ replacement
        var recomputed = entries
        recomputed[7] = replacement
        #expect(updated == recomputed.reduce(0, ^))
    }

    @Test func digestSpreadsAndRootSeesEveryBucket() {
        #expect(Digest64.hash([1, 2, 3]) != Digest64.hash([1, 2, 4]))
        #expect(Digest64.hash([]) != Digest64.hash([0]))
        var buckets = [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)
        let root = MerkleBuckets.root(of: buckets)
        buckets[MerkleBuckets.bucketCount - 1] = 1
        #expect(MerkleBuckets.root(of: buckets) != root)
    }
}
