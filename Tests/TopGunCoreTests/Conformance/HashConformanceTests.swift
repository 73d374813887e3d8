import Foundation
import Testing
import TopGunCore

struct HashConformanceTests {
    @Test func everyVectorFileIsCovered() {
        #expect(
            Fixture.vectorFiles == [
                "hash.json", "hlc_clock.json", "hlc_order.json", "lww_merge.json", "merkle.json", "ormap_merge.json",
                "pncounter.json",
            ])
    }

    @Test func fnv1aOverUTF16AndPartitionIDs() throws {
        let vectors = try Fixture.load("hash.json")["vectors"] as! [[String: Any]]
        #expect(vectors.count > 10)
        for v in vectors {
            let input: String
            if let repeated = v["input_repeat"] as? [String: Any] {
                input = String(repeating: repeated["char"] as! String, count: (repeated["count"] as! NSNumber).intValue)
            } else {
                input = v["input"] as! String
            }
            let expectedHash = (v["fnv1a32"] as! NSNumber).uint32Value
            #expect(Partitioner.hash(input) == expectedHash, "hash of \(input.debugDescription)")
            #expect(Int(Partitioner.partition(of: input)) == (v["partition_id"] as! NSNumber).intValue)
            if let hex = v["merkle_path_hex8"] as? String {
                let path = String(Partitioner.hash(input), radix: 16)
                #expect(String(repeating: "0", count: 8 - path.count) + path == hex)
            }
        }
    }

    @Test func valuesQuotedFromTopGunTests() throws {
        let tests = try Fixture.load("hash.json")["from_topgun_tests"] as! [String: Any]
        let hashes = tests["rust_port_HEAD_2d5b1dd0_packages/core-rust/src/hash.rs"] as! [[String: Any]]
        for h in hashes {
            #expect(Partitioner.hash(h["input"] as! String) == (h["fnv1a32"] as! NSNumber).uint32Value)
        }
        let partitions = tests["rust_port_HEAD_2d5b1dd0_packages/core-rust/src/partition.rs"] as! [[String: Any]]
        for p in partitions {
            #expect(Int(Partitioner.partition(of: p["input"] as! String)) == (p["partition_id"] as! NSNumber).intValue)
        }
    }

    @Test func combineHashesIsWrappingSum() throws {
        let cases = try Fixture.load("hash.json")["combineHashes"] as! [[String: Any]]
        for c in cases {
            let inputs = (c["inputs"] as! [NSNumber]).map(\.uint32Value)
            #expect(Partitioner.combine(inputs) == (c["expected"] as! NSNumber).uint32Value)
        }
    }

    /// `merkle.json` is TopGun's value-blind tree: informative only. We check the part
    /// we share (routing by key hash) and that our digest, unlike TopGun's, sees values.
    @Test func merkleRoutingMatchesAndOurDigestSeesValues() throws {
        let json = try Fixture.load("merkle.json")
        #expect(json["lww_merkle"] != nil)
        let stamp = HLCTimestamp(millis: 100, counter: 0, node: NodeID(1))
        let key = Array("k".utf8)
        let kh = key.withUnsafeBytes { MerkleBuckets.keyHash($0) }
        let a = MerkleBuckets.entryHash(keyHash: kh, timestamp: stamp, valueDigest: Value.string("x").digest)
        let b = MerkleBuckets.entryHash(keyHash: kh, timestamp: stamp, valueDigest: Value.string("y").digest)
        #expect(a != b)
    }
}
