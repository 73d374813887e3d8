import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// Seeded mutation fuzzing of every decoder that takes bytes from outside: values,
/// op payloads inside segments, segments, frames and handshakes. Inputs start from the
/// corpus in `Fixtures/fuzz/` (regressions found earlier live there too) and are
/// mutated by bit flips, truncation, insertion, duplication and length-field edits.
/// `TOPGUN_FUZZ_ITERATIONS` raises the bound (default 20,000 per target).
struct FuzzTests {
    static let iterations = Int(ProcessInfo.processInfo.environment["TOPGUN_FUZZ_ITERATIONS"] ?? "") ?? 20_000

    static func corpus(_ name: String) throws -> [[UInt8]] {
        let dir = repositoryRoot + "/Fixtures/fuzz/" + name
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        return try files.map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + $0))) }
    }

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var b = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !b.isEmpty: b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            case 1 where !b.isEmpty: b.removeSubrange(Int.random(in: 0..<b.count, using: &rng)...)
            case 2: b.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...b.count, using: &rng))
            case 3 where b.count > 4:
                let at = Int.random(in: 0..<(b.count - 4), using: &rng)
                let v: [UInt8] = [[0xff, 0xff, 0xff, 0xff], [0, 0, 0, 0], [0x7f, 0xff, 0xff, 0xff], [0, 0, 1, 0]].randomElement(using: &rng)!
                b.replaceSubrange(at..<(at + 4), with: v)
            case 4 where !b.isEmpty:
                let at = Int.random(in: 0..<b.count, using: &rng)
                b.insert(contentsOf: b[at..<min(b.count, at + 16)], at: at)
            default: b[b.isEmpty ? 0..<0 : 0..<1] = [UInt8.random(in: 0...255, using: &rng)][...]
            }
        }
        return b
    }

    func fuzz(_ corpus: String, seed: UInt64, _ body: ([UInt8]) -> Void) throws {
        let inputs = try Self.corpus(corpus)
        #expect(!inputs.isEmpty)
        for input in inputs { body(input) }
        var rng = SplitMix64(seed: seed)
        for _ in 0..<Self.iterations { body(Self.mutate(inputs.randomElement(using: &rng)!, &rng)) }
    }

    @Test func valueDecoder() throws {
        try fuzz("value", seed: 1) { bytes in
            if let v = try? Value(messagePack: bytes) { #expect((try? Value(messagePack: v.encoded)) != nil) }
        }
    }

    @Test func segmentDecoderAndOps() throws {
        try fuzz("segment", seed: 2) { bytes in
            _ = try? Segment(decoding: bytes)
        }
    }

    @Test func opPayloadsWithoutChecksum() throws {
        // The raw op encoding behind the checksum: a buggy peer can produce a valid CRC.
        try fuzz("payload", seed: 3) { bytes in
            bytes.withUnsafeBytes { raw in
                var reader = ByteReader(raw)
                while reader.remaining > 0 {
                    guard (try? WireOperation.decode(&reader)) != nil else { break }
                }
            }
        }
    }

    @Test func framesAndHandshakes() throws {
        try fuzz("frame", seed: 4) { bytes in
            guard let kind = bytes.first else { return }
            let frame = Frame(Frame.Kind(rawValue: kind), Array(bytes.dropFirst()))
            _ = try? Hello(frame)
            _ = try? Subscription(Frame(.subscribe, frame.body))
            _ = try? Digests(Frame(.digests, frame.body))
            _ = try? Message(frame)
            _ = try? frame.mapList()
            _ = try? frame.stamp()
        }
    }

    /// Regenerates the seed corpus (run with TOPGUN_WRITE_CORPUS=1 after format changes).
    @Test func corpusIsCurrent() throws {
        var entries = sampleEntries(6)
        entries.append(LoggedOperation(sequence: HLCTimestamp(millis: 9_999, counter: 0, node: NodeID(2)), operation: .lww(map: "m", key: "ttl", value: "x", timestamp: .zero, ttlMillis: 5)))
        let segment = Segment(origin: NodeID(2), entries: entries).encoded()
        var payload: [UInt8] = []
        for e in entries { WireOperation.encode(e, into: &payload) }
        let value: Value = ["a": [1, 2.5, "x", nil, true, .bytes([0, 1])], "b": ["c": -300, "d": .int(.max)], "s": .string(String(repeating: "z", count: 40))]
        let frames: [[UInt8]] = [
            [Frame.Kind.hello.rawValue] + Hello(version: Frame.protocolVersion, node: NodeID(3), nonce: [UInt8](repeating: 7, count: Handshake.nonceBytes)).frame.body,
            [Frame.Kind.subscribe.rawValue] + Subscription(cursor: HLCTimestamp(millis: 5, counter: 1, node: NodeID(1)), maps: ["users"], partitions: [1, 2]).frame.body,
            [Frame.Kind.digests.rawValue] + Digests(maps: ["m": [3: [UInt64](repeating: 7, count: MerkleBuckets.bucketCount)]]).frame.body,
        ]
        let expected: [String: [[UInt8]]] = ["segment": [segment], "payload": [payload], "value": [value.encoded], "frame": frames]
        for (dir, inputs) in expected {
            for (i, bytes) in inputs.enumerated() {
                let path = repositoryRoot + "/Fixtures/fuzz/\(dir)/seed-\(i).bin"
                if ProcessInfo.processInfo.environment["TOPGUN_WRITE_CORPUS"] != nil {
                    try Data(bytes).write(to: URL(fileURLWithPath: path))
                }
                #expect(FileManager.default.fileExists(atPath: path), "\(path) missing: run with TOPGUN_WRITE_CORPUS=1")
            }
        }
    }
}
