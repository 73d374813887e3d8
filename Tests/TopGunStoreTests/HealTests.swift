import Testing
import TopGunCore
import TopGunTestSupport

@testable import TopGunStore

/// `Store.heal`: what is damaged is removed or logged again, so that the rest is whole
/// and a peer can restore what was lost.
struct HealTests {
    /// A flipped bit in an op-log key put an entry in the future: every local write
    /// failed (`MDB_KEYEXIST`, the log is appended in key order) and replicas moved their
    /// cursor past entries they never got. Opening the store heals it.
    @Test func anOpLogKeyAboveTheHighWaterMarkIsHealedAtOpen() throws {
        try withTemporaryDirectory { dir in
            do {
                let store = try Store(path: dir, options: .init(durability: .noSync, nodeID: NodeID(1)))
                for i in 0..<5 { _ = try store.apply([Mutation.set(map: "m", key: "k\(i)", value: .int(Int64(i)), ttlMillis: nil)]) }
                try Damage.flipKey(store, Damage.Tree.oplog, key: try Damage.entries(store, Damage.Tree.oplog)[2].0, at: 0)
                #expect(throws: StoreError.self) { try store.apply([Mutation.set(map: "m", key: "after", value: 1, ttlMillis: nil)]) }
            }
            let store = try Store(path: dir, options: .init(durability: .noSync))
            #expect(store.healedAtOpen.logEntriesRemoved.count == 1, "\(store.healedAtOpen)")
            #expect(store.healedAtOpen.relogged == ["m/k2"])
            _ = try store.apply([Mutation.set(map: "m", key: "after", value: 1, ttlMillis: nil)])
            #expect(Set(try store.operations(after: nil).map(\.operation.key)) == ["k0", "k1", "k2", "k3", "k4", "after"])
            #expect(try store.check().problems == [])
        }
    }

    /// A record that fails its digest, met by a log reader, is removed by the next heal
    /// (its partition's digests no longer count it, so a peer's repair differs and sends
    /// it), listed as quarantined, and lifted when a peer's write brings it back.
    @Test func aDamagedRecordIsQuarantinedUntilAPeerBringsItBack() throws {
        try withStore { store, _ in
            _ = try store.apply((0..<3).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let before = try store.merkleBuckets(map: "m", partition: Partitioner.partition(of: "k1"))
            guard case .lww(let original)? = try store.state(map: "m", key: "k1") else {
                Issue.record("no record")
                return
            }
            try Damage.flipValue(store, Damage.Tree.records, key: try Damage.recordKey(store, "m", "k1"), at: -1)
            guard case .operations(let ops, _) = try store.readLog(after: nil, limit: 10) else {
                Issue.record("expected operations")
                return
            }
            #expect(ops.count == 2)
            #expect(store.hasNotedDamage)
            let report = try store.heal()
            #expect(report.quarantined == ["m/k1"], "\(report)")
            #expect(!store.hasNotedDamage)
            #expect(try store.state(map: "m", key: "k1") == nil)
            #expect(try store.merkleBuckets(map: "m", partition: Partitioner.partition(of: "k1")) != before)
            #expect(try store.check().problems == [])
            #expect(try store.quarantinedRecords() == ["m/k1"])
            // The peer's copy: the same write.
            let op = ReplicatedOperation(map: "m", key: "k1", timestamp: original.timestamp, payload: .lww(encodedValue: original.value?.encoded, ttlMillis: nil))
            #expect(try store.apply([op], repairFrom: NodeID(2)).allSatisfy(\.isApplied))
            #expect(try store.quarantinedRecords() == [])
            #expect(try store.damageTotals() == (1, 1))
            #expect(try store.merkleBuckets(map: "m", partition: Partitioner.partition(of: "k1")) == before)
        }
    }

    /// An op-log entry that does not parse (its map id damaged) stopped every log
    /// reader with an error, so replication of the whole store stopped; it is skipped
    /// and named, and a heal removes it and logs its record again.
    @Test func aLogEntryThatDoesNotParseIsSkippedAndItsRecordLoggedAgain() throws {
        try withStore { store, _ in
            _ = try store.apply((0..<3).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let entries = try Damage.entries(store, Damage.Tree.oplog)
            // Byte 16 is the high byte of the map id.
            try Damage.flipValue(store, Damage.Tree.oplog, key: entries[1].0, at: 16, mask: 0x80)
            guard case .operations(let ops, _) = try store.readLog(after: nil, limit: 10) else {
                Issue.record("expected operations")
                return
            }
            #expect(ops.map(\.operation.key) == ["k0", "k2"])
            let error = #expect(throws: StoreError.self) { try store.operations(after: nil) }
            #expect(error?.message.contains("op-log entry") == true, "\(String(describing: error))")
            let report = try store.heal()
            #expect(report.logEntriesRemoved.count == 1 && report.relogged == ["m/k1"], "\(report)")
            #expect(Set(try store.operations(after: nil).map(\.operation.key)) == ["k0", "k1", "k2"])
            #expect(try store.check().problems == [])
        }
    }

    /// A flipped bit in an entry's origin stamp makes it pass for superseded (readers
    /// leave the record out; `check` says so): healing everything logs the record again.
    @Test func healingEverythingLogsAgainARecordWhoseEntryLostItsOrigin() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: "v", ttlMillis: nil)])
            _ = try store.apply([Mutation.add(map: "s", key: "t", value: "a", ttlMillis: nil)])
            let entries = try Damage.entries(store, Damage.Tree.oplog)
            try Damage.flipValue(store, Damage.Tree.oplog, key: entries[0].0, at: 9, mask: 0x10)
            #expect(try store.operations(after: nil).map(\.operation.key) == ["t"])
            #expect(!(try store.check().problems.isEmpty))
            let report = try store.heal(everything: true)
            #expect(report.relogged == ["m/k"], "\(report)")
            #expect(Set(try store.operations(after: nil).map(\.operation.key)) == ["k", "t"])
            #expect(try store.check().problems == [])
        }
    }

    /// A changed prefix byte moves a record out of its map's key range: a scan ended
    /// without it and said nothing. The scan checks what it read against the map's
    /// Merkle digests and fails.
    @Test func aScanOfADamagedRecordsTreeFailsInsteadOfLeavingRowsOut() throws {
        try withStore { store, _ in
            _ = try store.apply((0..<20).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            // Byte 3 is the low byte of the map id: the record now belongs to no map.
            try Damage.flipKey(store, Damage.Tree.records, key: try Damage.recordKey(store, "m", "k7"), at: 3, mask: 0x40)
            let error = #expect(throws: StoreError.self) {
                try store.scan(map: "m") { _, _ in true }
            }
            #expect(error?.code == .corruptRecord && error?.message.contains("Merkle") == true, "\(String(describing: error))")
            // A scan told to stop early checks nothing it did not read.
            var seen = 0
            try store.scan(map: "m") { _, _ in
                seen += 1
                return seen < 3
            }
            #expect(seen == 3)
        }
    }

    /// Index entries that no longer agree with their records (a damaged value byte, an
    /// entry of a removed record) are made to agree again.
    @Test func healingEverythingMakesTheIndexesAgreeWithTheRecords() throws {
        try withStore { store, _ in
            _ = try store.apply((0..<10).map { Mutation.set(map: "m", key: "k\($0)", value: ["n": .int(Int64($0))], ttlMillis: nil) })
            try store.createIndex(map: "m", path: "n", kind: .range)
            let entries = try Damage.entries(store, Damage.Tree.index)
            try Damage.flipValue(store, Damage.Tree.index, key: entries[4].0, at: -1)
            #expect(!(try store.check().problems.isEmpty))
            let report = try store.heal(everything: true)
            #expect(report.indexEntriesFixed == 2, "\(report)")
            #expect(try store.check().problems == [])
        }
    }

    /// An OR-Map entry whose state bytes are damaged still parsed as an entry, and the
    /// heal kept it (`repair` exited 0 over it); it is removed and the record's state
    /// logged again.
    @Test func anEntryWhosePayloadIsDamagedIsRemovedAndItsRecordLoggedAgain() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.add(map: "s", key: "t", value: "a", ttlMillis: nil)])
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            let entry = try Damage.entries(store, .oplog)[0]
            // The state starts after origin 16, map id 4, flags 1, key length 2 and "t".
            try Damage.flipValue(store, .oplog, key: entry.0, at: 24, mask: 0xFF)
            #expect(try store.check().problems.contains { $0.contains("op-log entry") })
            let report = try store.heal(everything: true)
            #expect(report.logEntriesRemoved.count == 1 && report.relogged == ["s/t"], "\(report)")
            #expect(try store.check().problems == [])
            #expect(Set(try store.operations(after: nil).map(\.operation.key)) == ["t", "k"])
        }
    }

    /// A record whose map id bytes are damaged belongs to no map: it is removed but not
    /// listed as waiting for a peer (none holds it under that key), and the partition
    /// the record came from no longer counts it, so a repair sends it back.
    @Test func aRecordOfNoMapIsRemovedAndItsPartitionRecomputed() throws {
        try withStore { store, _ in
            _ = try store.apply((0..<10).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            let partition = Partitioner.partition(of: "k7")
            let before = try store.merkleBuckets(map: "m", partition: partition)
            try Damage.flipKey(store, .records, key: try Damage.recordKey(store, "m", "k7"), at: 3, mask: 0x40)
            let report = try store.heal(everything: true)
            #expect(report.quarantined.count == 1, "\(report)")
            #expect(try store.quarantinedRecords() == [])
            #expect(try store.merkleBuckets(map: "m", partition: partition) != before)
            #expect(try store.check().problems == [])
        }
    }
}
