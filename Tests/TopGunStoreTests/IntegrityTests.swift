import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// What is accepted can be read back and replicated: every write is checked with the
/// limits the decoder enforces, and a bad op is refused alone.
@Suite(.timeLimit(.minutes(2)))
struct IntegrityTests {
    static func nested(_ levels: Int) -> Value {
        var v: Value = .array([])
        for _ in 0..<levels { v = .array([v]) }
        return v
    }

    static func isInvalid(_ outcome: ApplyOutcome) -> Bool {
        if case .rejected(.invalid) = outcome { true } else { false }
    }

    @Test func aValueTheDecoderWouldRefuseIsRefusedOnTheWayIn() throws {
        try withStore { store, _ in
            let out = try store.apply([
                Mutation.set(map: "users", key: "evil", value: Self.nested(65), ttlMillis: nil),
                Mutation.set(map: "users", key: "deep", value: Self.nested(64), ttlMillis: nil),
                Mutation.add(map: "tags", key: "t", value: Self.nested(70), ttlMillis: nil),
            ])
            #expect(Self.isInvalid(out[0]) && out[1].isApplied && Self.isInvalid(out[2]))
            #expect(try store.state(map: "users", key: "evil") == nil)
            #expect(store.maps["tags"] == nil, "a refused op creates nothing")
            // Everything stored reads back, the log included.
            #expect(try store.operations(after: nil).count == 1)
            #expect(try store.check().problems.isEmpty)
        }
    }

    @Test func aBadRemoteOpIsRefusedAloneAndDoesNotHoldTheCursor() throws {
        try withStore { store, _ in
            let peer = NodeID(9)
            let t = HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: peer)
            let deep = [UInt8](repeating: 0x91, count: 70) + [0x90]  // 70 nested one-element arrays
            let entries = [
                LoggedOperation(sequence: t, operation: .lww(map: "m", key: "a", value: 1, timestamp: t)),
                LoggedOperation(sequence: t.successor, operation: .init(map: "m", key: "bad", timestamp: t.successor, payload: .lww(encodedValue: deep, ttlMillis: nil))),
                LoggedOperation(sequence: t.successor.successor, operation: .init(map: "m", key: "", timestamp: t.successor.successor, payload: .lww(encodedValue: [0x01], ttlMillis: nil))),
                LoggedOperation(sequence: t.successor.successor.successor, operation: .lww(map: "m", key: "c", value: 3, timestamp: t.successor.successor.successor)),
            ]
            let out = try store.apply(entries, fromPeer: peer, cursor: entries[3].sequence)
            #expect(out[0].isApplied && Self.isInvalid(out[1]) && Self.isInvalid(out[2]) && out[3].isApplied)
            #expect(try store.peerCursor(peer) == entries[3].sequence, "an invalid op is never offered again")
        }
    }

    /// The validator and the decoder are one rule: on mutated encodings they accept and
    /// refuse exactly the same inputs.
    @Test func theValidatorAgreesWithTheDecoder() throws {
        var rng = SplitMix64(seed: 0x1D7E_6817)
        var refused = 0
        for _ in 0..<20_000 {
            var bytes = CoreGen.value(depth: 4, using: &rng).encoded
            for _ in 0..<Int.random(in: 0...3, using: &rng) where !bytes.isEmpty {
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.removeLast(Int.random(in: 0...min(3, bytes.count), using: &rng))
                default: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                }
            }
            var decodeError: ValueCodingError?
            do { _ = try Value(messagePack: bytes) } catch { decodeError = error }
            var validateError: ValueCodingError?
            do { try Value.validate(messagePack: bytes) } catch { validateError = error }
            #expect(decodeError?.code == validateError?.code, "\(bytes): decoder \(String(describing: decodeError)), validator \(String(describing: validateError))")
            if decodeError != nil { refused += 1 }
        }
        #expect(refused > 1_000, "the mutations reach the error paths")
        for depth in [63, 64, 65, 100] {
            let bytes = [UInt8](repeating: 0x91, count: depth) + [0x90]
            #expect((try? Value(messagePack: bytes)) != nil ? (try? Value.validate(messagePack: bytes)) != nil : (try? Value.validate(messagePack: bytes)) == nil)
        }
    }

    /// Two keys that are different bytes but the same String (é precomposed and
    /// decomposed) are a duplicate for the decoder, so for the validator too.
    @Test func canonicallyEquivalentMapKeysAreDuplicates() throws {
        let composed: [UInt8] = [0xa2, 0xc3, 0xa9]  // "é"
        let decomposed: [UInt8] = [0xa3, 0x65, 0xcc, 0x81]  // "e" + combining acute
        let bytes: [UInt8] = [0x82] + composed + [0x01] + decomposed + [0x02]
        let decoded = #expect(throws: ValueCodingError.self) { try Value(messagePack: bytes) }
        let validated = #expect(throws: ValueCodingError.self) { try Value.validate(messagePack: bytes) }
        #expect(decoded?.code == .invalidMapKey && validated?.code == .invalidMapKey)
    }

    @Test func integersKeepTheirValueOrAreRefused() throws {
        #expect(try Value(json: "9223372036854775807") == .int(.max))
        #expect(try Value(json: "-9223372036854775808") == .int(.min))
        #expect(throws: StoreError.self) { try Value(json: "18446744073709551615") }
        #expect(throws: StoreError.self) { try Value(json: "[9223372036854775808]") }
        try withStore { store, _ in
            #expect(try store.apply([Mutation.increment(map: "c", key: "k", by: .max)])[0].isApplied)
            let over = try store.apply([Mutation.increment(map: "c", key: "k", by: 1)])[0]
            #expect(Self.isInvalid(over), "\(over)")
            guard case .counter(let c)? = try store.state(map: "c", key: "k") else { throw StoreError(.corruptRecord, "no counter") }
            #expect(c.value == .max)
            #expect(try store.apply([Mutation.increment(map: "c", key: "k", by: .min)])[0].isApplied)
            #expect(Self.isInvalid(try store.apply([Mutation.increment(map: "c", key: "k", by: .min)])[0]))
            #expect(try store.apply([Mutation.increment(map: "c", key: "k", by: .min + 1)])[0].isApplied)
            guard case .counter(let d)? = try store.state(map: "c", key: "k") else { throw StoreError(.corruptRecord, "no counter") }
            #expect(d.value == .min, "the whole range is reachable")
            #expect(Self.isInvalid(try store.apply([Mutation.increment(map: "c", key: "k", by: -1)])[0]))
        }
    }

    @Test func writesOfTheWrongKindAreRefusedNotIgnored() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "users", key: "u", value: 1, ttlMillis: nil)])
            _ = try store.apply([Mutation.add(map: "tags", key: "t", value: "a", ttlMillis: nil)])
            _ = try store.apply([Mutation.add(map: "tags", key: "t", value: "b", ttlMillis: nil)])
            let out = try store.apply([
                Mutation.remove(map: "users", key: "u", value: 1),
                Mutation.increment(map: "users", key: "u", by: 1),
                Mutation.set(map: "tags", key: "t", value: nil, ttlMillis: nil),
            ])
            for o in out {
                guard case .rejected(.kindMismatch) = o else {
                    Issue.record("\(o)")
                    continue
                }
            }
            #expect(try store.apply([Mutation.removeAll(map: "tags", key: "t")])[0].isApplied)
            guard case .orMap(let set)? = try store.state(map: "tags", key: "t") else { throw StoreError(.corruptRecord, "no set") }
            #expect(set.values(at: 0).isEmpty)
        }
    }

    @Test func aTypedWriteRefusedByAResolverThrows() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir, options: .init(durability: .noSync))
            db.register(.maximum(), for: "scores")
            let scores = db.map("scores", of: Int.self)
            try await scores.set("ann", 10)
            await #expect(throws: StoreError.self) { try await scores.set("ann", 5) }
            #expect(try scores.get("ann") == 10)
            await #expect(throws: StoreError.self) { try await db.counter("scores").increment("ann") }
        }
    }
}

struct LargeRecordTests {
    static func fileBytes(_ dir: String) throws -> Int {
        try FileManager.default.attributesOfItem(atPath: dir + "/data.mdb")[.size] as? Int ?? 0
    }

    /// 100 adds of 120 KB values to one OR-Map key in one batch (as an import applies a
    /// segment): the file stays proportional to the live data, not to the sum of every
    /// intermediate record.
    @Test func repeatedAddsToALargeRecordInOneBatchWriteItOnce() throws {
        try withStore { store, dir in
            let big = String(repeating: "v", count: 120_000)
            let ops = (0..<100).map { i -> ReplicatedOperation in
                var delta = ORSet()
                let tag = HLCTimestamp(millis: 1_700_000_000_000 + UInt64(i), counter: 0, node: NodeID(9))
                _ = delta.add(.string(big + "\(i)"), tag: tag)
                return ReplicatedOperation(map: "tags", key: "post", timestamp: tag, payload: .orSet(delta))
            }
            let out = try store.apply(ops)
            #expect(out.allSatisfy { $0.isApplied })
            guard case .orMap(let set)? = try store.state(map: "tags", key: "post") else { throw StoreError(.corruptRecord, "no set") }
            #expect(set.values(at: 0).count == 100)
            // Live: the record (12 MB) and the op log (12 MB).
            let live = 2 * 100 * 120_000
            let bytes = try Self.fileBytes(dir)
            #expect(bytes <= 2 * live + (4 << 20), "\(bytes) bytes on disk for \(live) live")
            print("large OR-Map record, one batch: \(bytes) bytes on disk for \(live) live")
            #expect(try store.check().isConsistent)
            // A remove of what was just added, in one batch with more adds, sees them.
            var delta = ORSet()
            _ = delta.add("small", tag: HLCTimestamp(millis: 1_700_000_001_000, counter: 0, node: NodeID(9)))
            let mixed = try store.apply([
                Mutation.add(map: "tags", key: "post", value: "x", ttlMillis: nil),
                Mutation.remove(map: "tags", key: "post", value: "x"),
            ])
            #expect(mixed.allSatisfy { $0.isApplied })
            guard case .orMap(let after)? = try store.state(map: "tags", key: "post") else { throw StoreError(.corruptRecord, "no set") }
            #expect(!after.values(at: 0).contains("x"))
        }
    }
}

extension LargeRecordTests {
    /// The same adds in separate transactions: pages freed by one are reused by the
    /// next, so the file stays within a small multiple of the live data.
    @Test func repeatedAddsInSeparateTransactionsReusePages() throws {
        try withStore { store, dir in
            let big = String(repeating: "v", count: 120_000)
            for i in 0..<100 {
                _ = try store.apply([Mutation.add(map: "tags", key: "post", value: .string(big + "\(i)"), ttlMillis: nil)])
            }
            let live = 2 * 100 * 120_000
            let bytes = try Self.fileBytes(dir)
            print("large OR-Map record, 100 transactions: \(bytes) bytes on disk for \(live) live")
            #expect(bytes <= 7 * live / 2, "\(bytes) bytes on disk for \(live) live")
        }
    }
}
