import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

func sampleEntries(_ n: Int) -> [LoggedOperation] {
    (0..<n).map { i in
        let t = HLCTimestamp(millis: 1_000 + UInt64(i), counter: 0, node: NodeID(1))
        let op: ReplicatedOperation
        switch i % 4 {
        case 0: op = .lww(map: "m", key: "k\(i)", value: ["i": .int(Int64(i)), "s": "some text to compress"], timestamp: t)
        case 1: op = .lww(map: "m", key: "k\(i)", value: nil, timestamp: t, ttlMillis: 5)
        case 2:
            var s = ORSet()
            s.add("tag", tag: t)
            op = ReplicatedOperation(map: "tags", key: "k\(i)", timestamp: t, payload: .orSet(s))
        default: op = ReplicatedOperation(map: "c", key: "k\(i)", timestamp: t, payload: .counter(PNCounter(positive: [NodeID(1): UInt64(i)])))
        }
        return LoggedOperation(sequence: HLCTimestamp(millis: 5_000 + UInt64(i), counter: 0, node: NodeID(2)), operation: op)
    }
}

struct SegmentTests {
    @Test func roundTripsAndCompresses() throws {
        let segment = Segment(origin: NodeID(2), entries: sampleEntries(500))
        let bytes = segment.encoded()
        let decoded = try Segment(decoding: bytes)
        #expect(decoded == segment)
        let raw = segment.entries.reduce(0) { $0 + $1.operation.rawSize }
        #expect(bytes.count < raw, "LZ4 shrinks repetitive ops: \(bytes.count) vs \(raw)")
    }

    @Test func everyCorruptedByteIsRejected() throws {
        let bytes = Segment(origin: NodeID(2), entries: sampleEntries(20)).encoded()
        var rng = SplitMix64(seed: 3)
        for _ in 0..<500 {
            var corrupt = bytes
            let i = Int.random(in: 0..<corrupt.count, using: &rng)
            corrupt[i] ^= UInt8.random(in: 1...255, using: &rng)
            #expect(throws: ReplicationError.self) { try Segment(decoding: corrupt) }
        }
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: ReplicationError.self) { try Segment(decoding: Array(bytes[0..<cut])) }
        }
    }

    @Test func versionAndMagicAreChecked() throws {
        var bytes = Segment(origin: NodeID(2), entries: sampleEntries(3)).encoded()
        bytes[4] = 9
        let error = #expect(throws: ReplicationError.self) { try Segment(decoding: bytes) }
        #expect(error?.code == .unsupportedVersion)
        bytes[0] = 0
        #expect((#expect(throws: ReplicationError.self) { try Segment(decoding: bytes) })?.code == .badMagic)
    }

    @Test func undecodableValueInsideAValidChecksumIsRefusedAlone() throws {
        // A segment built by a buggy peer: correct CRC, but an op value that is not
        // MessagePack. That op is refused where it is applied; the others apply and the
        // stream goes on (one bad write must not stop replication).
        var entries = sampleEntries(4)
        entries[2] = LoggedOperation(
            sequence: entries[2].sequence,
            operation: ReplicatedOperation(map: "m", key: "bad", timestamp: entries[2].operation.timestamp, payload: .lww(encodedValue: [0xc1], ttlMillis: nil)))
        let segment = try Segment(decoding: Segment(origin: NodeID(2), entries: entries).encoded())
        try withTemporaryDirectory { dir in
            let store = try openStore(dir, node: 1)
            let out = try store.apply(segment.entries, fromPeer: NodeID(2), cursor: segment.lastSequence)
            #expect(out.enumerated().allSatisfy { i, o in i == 2 ? o == .rejected(.invalid("value of m/bad: unsupported type at byte 0: type byte 0xc1")) : o.isApplied })
            #expect(try store.peerCursor(NodeID(2)) == segment.lastSequence)
        }
    }

    @Test func crc32cKnownAnswer() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }
}
