import LMDB
import Testing
import TopGunCore
import TopGunTestSupport

@testable import TopGunStore

/// The op log names LWW records instead of copying their values, and a write that a
/// later one superseded is not read back: a reader far behind gets each record once.
struct ChangeLogTests {
    func oplogBytes(_ store: Store) throws -> Int {
        try store.read { txn in try txn.statistics(of: store.dbs.oplog).usedBytes }
    }

    /// Writes `key` of map m here, then undoes it as a write a server refused and does
    /// not hold: the record goes without a log entry, so the write's entry stands for
    /// nothing. Returns that entry's key.
    func writeThenRevert(_ store: Store, key: String) throws -> HLCTimestamp {
        let out = try store.apply([Mutation.set(map: "m", key: key, value: "mine", ttlMillis: nil)])
        guard case .applied(let sequence) = out[0] else { throw StoreError(.storage, "not applied: \(out)") }
        let refused = try #require(try store.operations(after: nil).first { $0.sequence == sequence }?.operation)
        #expect(try store.revert(refused, serverState: nil))
        return sequence
    }

    @Test func aRecordRewrittenManyTimesIsReadOnceAndItsLogHoldsNoValueCopies() throws {
        try withStore { store, _ in
            let big = String(repeating: "x", count: 4_000)
            for i in 0..<50 {
                _ = try store.apply([Mutation.set(map: "m", key: "k", value: .string("\(i)\(big)"), ttlMillis: 60_000)])
            }
            #expect(try store.opLogCount() == 50)
            let log = try store.operations(after: nil)
            #expect(log.count == 1)
            #expect(log.first?.operation.payload == .lww(encodedValue: Value.string("49\(big)").encoded, ttlMillis: 60_000))
            #expect(try store.readLog(after: nil, limit: 10) == .operations(log, readThrough: log.first?.sequence))
            // 50 copies of a 4 KB value would take 50 overflow pages and more.
            #expect(try oplogBytes(store) <= 2 * 4_096)
            #expect(try store.check().isConsistent)

            try withStore(node: 2) { other, _ in
                _ = try other.apply(log.map(\.operation))
                #expect(try other.state(map: "m", key: "k") == store.state(map: "m", key: "k"))
                #expect(try (0..<UInt16(271)).allSatisfy { try other.merkleRoot(map: "m", partition: $0) == store.merkleRoot(map: "m", partition: $0) })
            }
        }
    }

    @Test func aDeleteSupersedesTheWritesBeforeIt() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 2, ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: nil, ttlMillis: nil)])
            let log = try store.operations(after: nil)
            #expect(log.count == 1)
            #expect(log.first?.operation.payload == .lww(encodedValue: nil, ttlMillis: nil))
        }
    }

    /// A record changed without a log entry (a refused write undone) leaves entries that
    /// stand for nothing at the end of the log: a reader's cursor still moves past them.
    @Test func aReadStepsPastSupersededEntriesAtTheEndOfTheLog() throws {
        try withStore { store, _ in
            let sequence = try writeThenRevert(store, key: "k")
            #expect(try store.readLog(after: nil, limit: 10) == .operations([], readThrough: sequence))
            #expect(try store.readLog(after: sequence, limit: 10) == .operations([], readThrough: nil))
        }
    }

    /// Entries written under schema 2 carry their value; after the upgrade they are read
    /// as they are.
    @Test func anEntryThatCarriesItsValueStaysReadableAfterTheUpgrade() throws {
        try withTemporaryDirectory { dir in
            let op = ReplicatedOperation.lww(map: "m", key: "k", value: "v", timestamp: HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: NodeID(5)))
            do {
                let store = try Store(path: dir, options: .init(durability: .noSync, nodeID: NodeID(1)))
                _ = try store.apply([op])
                let sequence = try #require(try store.lastSequence())
                try store.write { txn in
                    // The schema-2 entry: origin | map id | flags | key length | key | value.
                    var entry = op.timestamp.bytes
                    entry.appendBigEndian(store.mapInfo("m")!.id)
                    entry.append(CRDTKind.lww.rawValue)
                    entry.appendBigEndian(UInt16(1))
                    entry.append(contentsOf: "k".utf8)
                    entry.append(contentsOf: Value.string("v").encoded)
                    try txn.put(entry, forKey: sequence.bytes, in: store.dbs.oplog)
                    try txn.put([UInt8](bigEndian: UInt32(2)), forKey: Layout.Meta.schema, in: store.dbs.meta)
                }
                store.close()
            }
            // Read-only, schema 2 is read as it is.
            let reader = try Store(path: dir, options: .init(readOnly: true))
            #expect(try reader.operations(after: nil).map(\.operation) == [op])
            reader.close()
            let store = try Store(path: dir, options: .init(durability: .noSync))
            #expect(try store.operations(after: nil).map(\.operation) == [op])
            #expect(try store.check().isConsistent)
            store.close()
        }
    }

    @Test func anEntryNamingItsRecordThatCarriesBytesIsReportedByCheck() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: "v", ttlMillis: nil)])
            let sequence = try #require(try store.lastSequence())
            try store.write { txn in
                var entry = try #require(try txn.value(forKey: sequence.bytes, in: store.dbs.oplog))
                entry.append(0xc0)
                try txn.put(entry, forKey: sequence.bytes, in: store.dbs.oplog)
            }
            #expect(try store.check().problems.contains { $0.contains("more than the record's name") })
            #expect(throws: StoreError.self) { try store.operations(after: nil) }
        }
    }
    /// Review: the public read gave up after a long run of superseded entries, so
    /// `topgun export` stopped early and reported nothing.
    @Test func aLongRunOfSupersededEntriesDoesNotHideWhatFollows() throws {
        try withStore { store, _ in
            let run = Store.supersededPerRead + 10
            for start in stride(from: 0, to: run, by: 10_000) {
                _ = try store.apply((start..<min(start + 10_000, run)).map { Mutation.set(map: "m", key: "hot", value: .int(Int64($0)), ttlMillis: nil) })
            }
            _ = try store.apply([Mutation.set(map: "m", key: "other", value: 1, ttlMillis: nil)])
            #expect(try store.operations(after: nil, limit: 1_000).map(\.operation.key) == ["hot", "other"])
            // A replicator's read stops at the cap and says where it got to.
            guard case .operations(let ops, let through?) = try store.readLog(after: nil, limit: 1_000) else {
                Issue.record("expected operations")
                return
            }
            #expect(ops.isEmpty)
            guard case .operations(let rest, _) = try store.readLog(after: through, limit: 1_000) else {
                Issue.record("expected operations")
                return
            }
            #expect(rest.map(\.operation.key) == ["hot", "other"])
        }
    }

    /// Review: a record that fails its digest stopped every reader of the log at its
    /// entry; it is left out (check reports it with the record) and the log goes on.
    @Test func aDamagedRecordIsLeftOutAndTheLogGoesOn() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "bad", value: "v", ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "good", value: "w", ttlMillis: nil)])
            try Damage.breakRecord(store, "m", "bad")
            guard case .operations(let ops, _) = try store.readLog(after: nil, limit: 10) else {
                Issue.record("expected operations")
                return
            }
            #expect(ops.map(\.operation.key) == ["good"])
            // Whoever reads the log whole is told, with the record's name.
            let error = #expect(throws: StoreError.self) { try store.operations(after: nil) }
            #expect(error?.code == .corruptRecord && error?.message.contains("m/bad") == true)
            var skipped: [String] = []
            #expect(try store.operations(after: nil) { skipped.append($0) }.map(\.operation.key) == ["good"])
            #expect(skipped == ["m/bad"])
            let problems = try store.check().problems
            #expect(problems.contains { $0.hasPrefix("m/bad") }, "\(problems)")
            #expect(!problems.contains { $0.contains("op-log") }, "reported with the record, not again per log entry: \(problems)")
        }
    }

    /// `check` verifies the op log against the records: a flipped bit in an entry's
    /// origin stamp made the entry look superseded (readers left the record out) and
    /// `check` said ok.
    @Test(arguments: [0, 7, 9, 15])
    func checkFindsAnEntryWhoseOriginNoLongerMatchesItsRecord(_ byte: Int) throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: "v", ttlMillis: nil)])
            #expect(try store.check().isConsistent)
            try store.write { txn in
                var key: [UInt8]?
                var raw: [UInt8]?
                try txn.forEach(in: store.dbs.oplog) { k, v in
                    key = k.withUnsafeBytes { Array($0) }
                    raw = v.withUnsafeBytes { Array($0) }
                    return false
                }
                var damaged = try #require(raw)
                damaged[byte] ^= 0x10
                try txn.put(damaged, forKey: try #require(key), in: store.dbs.oplog)
            }
            let problems = try store.check().problems
            #expect(problems.contains { $0.hasPrefix("m/k") && $0.contains("no op-log entry") }, "\(problems)")
        }
    }

    /// An LWW record whose log entry is gone (and not by garbage collection) is named.
    @Test func checkFindsARecordWithoutItsLogEntry() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: "v", ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "other", value: "w", ttlMillis: nil)])
            try store.write { txn in
                var key: [UInt8]?
                try txn.forEach(in: store.dbs.oplog) { k, _ in
                    key = k.withUnsafeBytes { Array($0) }
                    return false
                }
                _ = try txn.delete(try #require(key), in: store.dbs.oplog)
            }
            guard case .lww(let record)? = try store.state(map: "m", key: "k") else {
                Issue.record("no record")
                return
            }
            let problems = try store.check().problems
            #expect(problems == ["m/k: its write at \(record.timestamp) has no op-log entry"], "\(problems)")
        }
    }

    /// One batch over many maps keeps every map's Merkle digests right.
    @Test func aBatchOverManyMapsKeepsEachMapsDigests() throws {
        try withStore { store, _ in
            let t0 = HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: NodeID(7))
            _ = try store.apply((0..<2_000).map { ReplicatedOperation.lww(map: "m\($0 % 500)", key: "k\($0)", value: 1, timestamp: t0) })
            _ = try store.apply((0..<1_000).map { ReplicatedOperation.lww(map: "m\($0 % 500)", key: "k\($0)", value: nil, timestamp: t0.successor) })
            for m in 0..<500 { #expect(try store.verifyMerkle(map: "m\(m)").isEmpty) }
        }
    }
    /// Local increments and remove-alls read their record's payload in place; what they
    /// write is what the decoded path wrote.
    @Test func localIncrementsAndRemoveAllsWorkOnTheStoredBytes() throws {
        try withStore { store, _ in
            _ = try store.apply([ReplicatedOperation(
                map: "c", key: "k", timestamp: HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: NodeID(2)),
                payload: .counter(PNCounter(positive: [NodeID(2): 10], negative: [NodeID(2): 3])))])
            _ = try store.apply([Mutation.increment(map: "c", key: "k", by: 5), Mutation.increment(map: "c", key: "k", by: -2)])
            #expect(try store.state(map: "c", key: "k") == .counter(PNCounter(positive: [NodeID(2): 10, NodeID(1): 5], negative: [NodeID(2): 3, NodeID(1): 2])))
            // Past the Int64 range: refused, nothing changes.
            let out = try store.apply([Mutation.increment(map: "c", key: "k", by: .max)])
            guard case .rejected(.invalid(let why)) = out[0] else {
                Issue.record("not refused: \(out)")
                return
            }
            #expect(why.contains("at 10"))
            #expect(try store.state(map: "c", key: "k") == .counter(PNCounter(positive: [NodeID(2): 10, NodeID(1): 5], negative: [NodeID(2): 3, NodeID(1): 2])))
            // The last delta logged is this node's totals.
            #expect(try store.operations(after: nil).last?.operation.payload == .counter(PNCounter(positive: [NodeID(1): 5], negative: [NodeID(1): 2])))

            _ = try store.apply([Mutation.add(map: "s", key: "k", value: "a", ttlMillis: nil), Mutation.add(map: "s", key: "k", value: "b", ttlMillis: nil)])
            #expect(try store.apply([Mutation.removeAll(map: "s", key: "k")])[0].isApplied)
            guard case .orMap(let set)? = try store.state(map: "s", key: "k") else {
                Issue.record("no OR-Map record")
                return
            }
            #expect(set.entries.isEmpty && set.tombstones.count == 2)
            #expect(try store.apply([Mutation.removeAll(map: "s", key: "k")])[0] == .unchanged)
            #expect(try store.apply([Mutation.removeAll(map: "c", key: "k")])[0] == .rejected(.kindMismatch("map c is pn-counter, not an or-map")))
        }
    }
    /// Garbage collection removes superseded LWW entries whatever the acknowledgements
    /// (no reader ships them), in bounded steps that resume and wrap, and keeps what
    /// readers read, the log's last entry, OR-Map entries and current tombstones.
    @Test func garbageCollectionRemovesSupersededEntriesWhateverTheAcknowledgements() throws {
        try withStore { store, _ in
            try store.registerPeer(NodeID(20))  // never acknowledges: nothing else may go
            for round in 0..<5 {
                _ = try store.apply((0..<10).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64(round)), ttlMillis: nil) })
            }
            _ = try store.apply([Mutation.add(map: "s", key: "k", value: "a", ttlMillis: nil), Mutation.add(map: "s", key: "k", value: "b", ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "k0", value: nil, ttlMillis: nil)])
            let before = try store.operations(after: nil)
            #expect(try store.opLogCount() == 53)
            var removed = 0
            for _ in 0..<5 {
                let report = try store.collectGarbage(olderThan: anyAge, maxSteps: 20)
                #expect(report.logEntriesRemoved == 0 && !report.hasMore)
                removed += report.supersededRemoved
            }
            #expect(removed == 41)
            #expect(try store.opLogCount() == 12, "k0's tombstone, k1…k9's last writes, two OR-Map adds")
            #expect(try store.operations(after: nil) == before)
            #expect(try store.check().isConsistent)

            // The last entry stays even when superseded (it marks the log's head).
            let head = try writeThenRevert(store, key: "last")
            for _ in 0..<2 { _ = try store.collectGarbage(olderThan: anyAge, maxSteps: 100) }
            #expect(try store.lastSequence() == head)
        }
    }
    /// Review: compaction removed the entry of the server's write the app held, then a
    /// refusal put the record back to that write without any entry naming it; log
    /// readers never saw the restored value and GC could never collect it.
    @Test func aRevertToTheServersWriteLeavesAnEntryNamingIt() throws {
        try withStore { store, _ in
            let server = ReplicatedOperation.lww(map: "m", key: "k", value: nil, timestamp: HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: NodeID(9)))
            _ = try store.apply([server])
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: "mine", ttlMillis: nil)])
            #expect(try store.compactLog() == 1)
            let refused = try #require(try store.operations(after: nil).last?.operation)
            #expect(try store.revert(refused, serverState: server))
            #expect(try store.operations(after: nil).map(\.operation) == [server])
            // The restored tombstone is collected through its entry like any other.
            let report = try store.collectGarbage(olderThan: anyAge)
            #expect(report.tombstonesRemoved == 1)
            #expect(try store.count(map: "m") == 0)
        }
    }

    /// Review: compaction deleted an entry of a map the store does not know, which
    /// `check` reports; it is kept.
    @Test func compactionKeepsAnEntryOfAnUnknownMap() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 2, ttlMillis: nil)])
            let first = try #require(try store.operations(after: nil).first?.sequence)
            try store.write { txn in
                var entry = HLCTimestamp(millis: 1, counter: 0, node: NodeID(3)).bytes
                entry.appendBigEndian(UInt32(999))
                entry.append(CRDTKind.lww.rawValue | 0x10)
                entry.appendBigEndian(UInt16(1))
                entry.append(contentsOf: "x".utf8)
                try txn.put(entry, forKey: HLCTimestamp(millis: first.millis, counter: 0, node: NodeID(0)).bytes, in: store.dbs.oplog)
            }
            #expect(try store.opLogCount() == 3)
            #expect(try store.compactLog() == 1, "the superseded write of k goes; the unknown map's entry stays")
            #expect(try store.opLogCount() == 2)
            #expect(try store.check().problems.contains { $0.contains("unknown map id 999") })
        }
    }
}
