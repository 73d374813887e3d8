import LMDB
import Testing
import TopGunCore
import TopGunTestSupport

@testable import TopGunStore

/// OR-Map tombstoned tags leave their record under the GC rule, and a record's digest
/// covers its live entries only, so replicas that have and have not collected agree.
struct TagCollectionTests {
    func orSet(_ store: Store, _ key: String = "k") throws -> ORSet {
        let state = try store.state(map: "set", key: key)
        guard case .orMap(let set)? = state else {
            Issue.record("no OR-Map record \(key): \(String(describing: state))")
            return ORSet()
        }
        return set
    }

    func roots(_ store: Store) throws -> [UInt64] {
        try (0..<UInt16(Partitioner.partitionCount)).map { try store.merkleRoot(map: "set", partition: $0) }
    }

    @Test func removedTagsGoOnceEveryKnownPeerAcknowledgedTheRemove() throws {
        try withStore { store, _ in
            try withStore(node: 2) { other, _ in
                let peer = NodeID(20)
                try store.registerPeer(peer)
                _ = try store.apply([
                    Mutation.add(map: "set", key: "k", value: "a", ttlMillis: nil),
                    Mutation.add(map: "set", key: "k", value: "b", ttlMillis: nil),
                ])
                _ = try store.apply([Mutation.remove(map: "set", key: "k", value: "a")])
                // A second replica holds the same state and collects nothing.
                _ = try other.apply(try store.operations(after: nil).map(\.operation))
                #expect(try orSet(store).tombstones.count == 1)
                #expect(try roots(store) == roots(other))

                // Unacknowledged, the tag stays: the peer may still hold the add.
                var report = try store.collectGarbage(olderThan: anyAge)
                #expect(report.tagsRemoved == 0 && report.waitingFor == peer)
                #expect(try orSet(store).tombstones.count == 1)

                let head = try store.operations(after: nil).last!.sequence
                report = try store.collectGarbage(olderThan: anyAge, acknowledgements: [peer: head])
                #expect(report.tagsRemoved == 1 && report.logEntriesRemoved == 3)
                let set = try orSet(store)
                #expect(set.tombstones.isEmpty)
                #expect(set.values(at: 0) == ["b"])
                #expect(try roots(store) == roots(other), "collected and uncollected replicas digest alike")
                #expect(try store.verifyMerkle(map: "set").isEmpty)
                #expect(try store.check().isConsistent)

                // Delivered again outside a peer's ordered stream, the add of the collected
                // tag is refused (it would bring "a" back); the remove only brings the tag
                // back, changing neither values nor digests.
                let again = try store.apply(try other.operations(after: nil).map(\.operation))
                #expect(again[0] == .rejected(.beyondHorizon(store.garbageCollectionHorizon)))
                #expect(try orSet(store).values(at: 0) == ["b"])
                #expect(try roots(store) == roots(other))
            }
        }
    }

    /// A chain S⇄X⇄Z: a repair from Z into X carried an add X had tombstoned. X logged
    /// the incoming delta as it came, so S, which had collected the tag, took the add as
    /// new and the removed value came back on S alone (simulation seed 1599788707).
    @Test func theLogNeverCarriesAnAddItsNodeTombstoned() throws {
        try withStore { store, _ in
            _ = try store.apply([Mutation.add(map: "set", key: "k", value: "a", ttlMillis: nil)])
            let added = try orSet(store)
            _ = try store.apply([Mutation.remove(map: "set", key: "k", value: "a")])
            // Another replica's full state: the removed add, and one new add.
            var incoming = added
            incoming.add("c", tag: HLCTimestamp(millis: 1_700_000_000_500, counter: 0, node: NodeID(9)))
            let out = try store.apply([ReplicatedOperation(map: "set", key: "k", timestamp: incoming.entries.keys.max()!, payload: .orSet(incoming))])
            #expect(out[0].isApplied)
            #expect(try orSet(store).values(at: 0) == ["c"])
            guard case .orSet(let logged)? = try store.operations(after: nil).last?.operation.payload else {
                Issue.record("no OR-Map log entry")
                return
            }
            #expect(Set(logged.entries.keys) == [HLCTimestamp(millis: 1_700_000_000_500, counter: 0, node: NodeID(9))])
        }
    }

    @Test func aSchemaOneDatabaseIsUpgradedInPlace() throws {
        try withTemporaryDirectory { dir in
            var expected: [UInt64] = []
            do {
                let store = try Store(path: dir, options: .init(durability: .noSync, nodeID: NodeID(1)))
                _ = try store.apply([
                    Mutation.add(map: "set", key: "k", value: "a", ttlMillis: nil),
                    Mutation.add(map: "set", key: "k", value: "b", ttlMillis: nil),
                ])
                _ = try store.apply([Mutation.remove(map: "set", key: "k", value: "a")])
                expected = try roots(store)
                // Write the record as schema 1 did: the digest over the whole payload.
                try store.write { txn in
                    let key = Layout.recordKey(mapID: store.mapInfo("set")!.id, key: "k")
                    var record = try #require(try txn.value(forKey: key, in: store.dbs.records))
                    let header = try #require(record.withUnsafeBytes { RecordHeader($0) })
                    let old = record.withUnsafeBytes { Digest64.hash(UnsafeRawBufferPointer(rebasing: $0[header.payloadOffset...])) }
                    #expect(old != header.digest, "the tombstone makes the two digests differ")
                    record.withUnsafeMutableBytes { $0.storeBigEndian(old, toByteOffset: 17) }
                    try txn.put(record, forKey: key, in: store.dbs.records)
                    let keyHash = Array("k".utf8).withUnsafeBytes { MerkleBuckets.keyHash($0) }
                    var merkle = MerkleDeltas()
                    merkle.record(
                        mapID: store.mapInfo("set")!.id, partition: Partitioner.partition(of: "k"), keyHash: keyHash,
                        entryDelta: Layout.merkleEntry(kind: .orMap, keyHash: keyHash, timestamp: .zero, digest: old)
                            ^ Layout.merkleEntry(kind: .orMap, keyHash: keyHash, timestamp: .zero, digest: header.digest))
                    try merkle.write(txn, store.dbs.merkle)
                    try txn.put([UInt8](bigEndian: UInt32(1)), forKey: Layout.Meta.schema, in: store.dbs.meta)
                }
                #expect(try roots(store) != expected)
                store.close()
            }
            // Read-only, an old schema is refused with what to do.
            let refusal = #expect(throws: StoreError.self) { try Store(path: dir, options: .init(readOnly: true)) }
            #expect(refusal?.code == .unsupportedSchema)
            #expect(refusal?.message.contains("read-write") == true)

            let store = try Store(path: dir, options: .init(durability: .noSync))
            #expect(try roots(store) == expected)
            #expect(try store.check().isConsistent)
            #expect(try store.verifyMerkle(map: "set").isEmpty)
            #expect(try orSet(store).values(at: 0) == ["b"])
            store.close()
        }
    }
}

/// Reverting a refused write undoes only what this node wrote itself.
struct RevertTests {
    @Test func revertingAStateRefusalKeepsWhatOthersWrote() throws {
        try withStore(node: 2) { store, _ in
            let theirs = HLCTimestamp(millis: 1_700_000_000_000, counter: 0, node: NodeID(1))
            var received = ORSet()
            received.add("from-server", tag: theirs)
            received.removeTag(HLCTimestamp(millis: 1_699_999_999_000, counter: 0, node: NodeID(1)))
            _ = try store.apply([ReplicatedOperation(map: "set", key: "k", timestamp: theirs, payload: .orSet(received))])
            _ = try store.apply([Mutation.add(map: "set", key: "k", value: "mine", ttlMillis: nil)])
            guard case .orMap(let full)? = try store.state(map: "set", key: "k") else { throw CancellationError() }
            // The server refused a repair carrying the whole state (own and received).
            let refused = ReplicatedOperation(map: "set", key: "k", timestamp: theirs, payload: .orSet(full))
            let server = ReplicatedOperation(map: "set", key: "k", timestamp: theirs, payload: .orSet(received))
            #expect(try store.revert(refused, serverState: server))
            guard case .orMap(let after)? = try store.state(map: "set", key: "k") else { throw CancellationError() }
            #expect(after.values(at: 0) == ["from-server"])
            // An LWW refusal of someone else's stamp changes nothing.
            _ = try store.apply([ReplicatedOperation.lww(map: "m", key: "x", value: "theirs", timestamp: theirs)])
            #expect(try !store.revert(ReplicatedOperation.lww(map: "m", key: "x", value: "theirs", timestamp: theirs), serverState: nil))
            #expect(try store.state(map: "m", key: "x") != nil)
            #expect(try store.check().isConsistent)
        }
    }
}
