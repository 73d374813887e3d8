import LMDB
import TopGunCore

/// A replication peer as recorded in `peers`.
public struct PeerState: Sendable, Equatable {
    public var node: NodeID
    /// The last op-log key of that peer applied here.
    public var cursor: HLCTimestamp
    /// Wall time of the last update, ms since the epoch.
    public var lastSeenMillis: UInt64
}

extension Store {
    /// Applies a segment of `peer`'s op log and stores the peer's replication cursor in
    /// the same transaction, so a restart resumes exactly after the last applied entry.
    ///
    /// The cursor advances to `cursor` (normally the segment's last sequence), except
    /// when an entry is refused for clock drift: then it stops just before that entry,
    /// so the entry is offered again later instead of being skipped forever. Cursors
    /// never move backwards.
    public func apply(_ entries: [LoggedOperation], fromPeer peer: NodeID, cursor: HLCTimestamp) throws -> [ApplyOutcome] {
        try commit { batch, txn in
            var outcomes: [ApplyOutcome] = []
            outcomes.reserveCapacity(entries.count)
            var stop: HLCTimestamp?
            var previous: HLCTimestamp?
            for entry in entries {
                let outcome = try batch.applyRemote(entry.operation, txn)
                if stop == nil, case .rejected(.clockDrift) = outcome { stop = previous ?? .zero }
                previous = entry.sequence
                outcomes.append(outcome)
            }
            if let stop {
                if stop > .zero { try Self.putPeer(peer, cursor: stop, seen: batch.wall, txn, dbs) }
            } else {
                try Self.putPeer(peer, cursor: cursor, seen: batch.wall, txn, dbs)
            }
            return outcomes
        }
    }

    /// The stored replication cursor of `peer`.
    public func peerCursor(_ peer: NodeID) throws -> HLCTimestamp? {
        try peers().first { $0.node == peer }?.cursor
    }

    /// Every peer this store has applied operations from.
    public func peers() throws -> [PeerState] {
        try env.read { txn in
            var out: [PeerState] = []
            try txn.forEach(in: dbs.peers) { k, v in
                guard k.byteCount == 8, v.byteCount >= 24 else { return true }
                let node = k.withUnsafeBytes { NodeID(UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self))) }
                v.withUnsafeBytes { raw in
                    out.append(PeerState(
                        node: node, cursor: HLCTimestamp(loadingFrom: raw.baseAddress!),
                        lastSeenMillis: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))))
                }
                return true
            }
            return out
        }
    }

    /// Stores `cursor` for `peer`; a cursor only moves forward.
    static func putPeer(_ peer: NodeID, cursor: HLCTimestamp, seen: UInt64, _ txn: borrowing Transaction, _ dbs: DBs) throws {
        let key = withUnsafeBytes(of: peer.rawValue.bigEndian) { Array($0) }
        var cursor = cursor
        if let raw = try txn.value(forKey: key, in: dbs.peers), raw.count >= 16, let stored = HLCTimestamp(bytes: raw.prefix(16)) {
            cursor = max(cursor, stored)
        }
        var value = cursor.bytes
        withUnsafeBytes(of: seen.bigEndian) { value.append(contentsOf: $0) }
        try txn.put(value, forKey: key, in: dbs.peers)
    }

    /// The oldest op-log key still present (nil for an empty log).
    public func firstSequence() throws -> HLCTimestamp? {
        try env.read { txn in
            var first: HLCTimestamp?
            try txn.withCursor(on: dbs.oplog) { cursor in
                if try cursor.first() { first = HLCTimestamp(loadingFrom: cursor.currentKey.baseAddress!) }
            }
            return first
        }
    }

    /// Re-reads the map table (maps created by another process on the same files).
    public func refreshMaps() throws {
        publishMaps(try env.read { txn in try Self.loadMaps(txn, dbs) })
    }

    // MARK: Anti-entropy

    /// The state operations that repair a replica whose bucket digests are `theirs`:
    /// the records of every bucket (of `maps`, or all maps; of `partitions`, or all) whose
    /// digest differs from ours.
    public func repairOperations(
        theirs: [String: [UInt16: [UInt64]]], maps: [String] = [], partitions: [UInt16] = []
    ) throws -> [ReplicatedOperation] {
        var ops: [ReplicatedOperation] = []
        let names = maps.isEmpty ? Array(Set(self.maps.keys).union(theirs.keys)).sorted() : maps
        for map in names {
            let ours = try bucketDigests(map: map)
            let their = theirs[map] ?? [:]
            for partition in Set(ours.keys).union(their.keys).sorted() {
                if !partitions.isEmpty && !partitions.contains(partition) { continue }
                let zero = [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)
                let a = ours[partition] ?? zero
                let b = their[partition] ?? zero
                let differing = Set((0..<MerkleBuckets.bucketCount).filter { a[$0] != b[$0] }.map { UInt8($0) })
                if !differing.isEmpty { ops += try stateOperations(map: map, partition: partition, buckets: differing) }
            }
        }
        return ops
    }

    /// Bucket digests of every partition of `map` that has any (absent = all zero).
    public func bucketDigests(map: String) throws -> [UInt16: [UInt64]] {
        guard let info = mapInfo(map) else { return [:] }
        return try env.read { txn in
            var out: [UInt16: [UInt64]] = [:]
            try txn.forEach(in: dbs.merkle, range: .prefix(Layout.recordPrefix(mapID: info.id))) { k, v in
                guard k.byteCount == 6, v.byteCount == MerkleBuckets.bucketCount * 8 else {
                    throw StoreError(.corruptRecord, "Merkle digests")
                }
                let partition = k.withUnsafeBytes { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) }
                out[partition] = v.withUnsafeBytes { raw in
                    (0..<MerkleBuckets.bucketCount).map { UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
                }
                return true
            }
            return out
        }
    }

    /// The records of `map` in `partition` whose keys fall in `buckets`, as state
    /// operations (LWW records including tombstones; full OR-Map and counter states)
    /// that any replica can merge.
    public func stateOperations(map: String, partition: UInt16, buckets: Set<UInt8>) throws -> [ReplicatedOperation] {
        var out: [ReplicatedOperation] = []
        try scan(map: map, partition: partition) { key, state in
            let bucket = Array(key.utf8).withUnsafeBytes { MerkleBuckets.bucket(ofKeyHash: MerkleBuckets.keyHash($0)) }
            guard buckets.contains(bucket) else { return true }
            switch state {
            case .lww(let r):
                out.append(ReplicatedOperation(map: map, key: key, timestamp: r.timestamp, payload: .lww(encodedValue: r.value?.encoded, ttlMillis: r.ttlMillis)))
            case .orMap(let s):
                let stamp = s.entries.values.map(\.timestamp).max() ?? s.tombstones.max() ?? .zero
                out.append(ReplicatedOperation(map: map, key: key, timestamp: stamp, payload: .orSet(s)))
            case .counter(let c):
                out.append(ReplicatedOperation(map: map, key: key, timestamp: .zero, payload: .counter(c)))
            }
            return true
        }
        return out
    }
}

extension Store {
    /// Entries in the op log (`mdb_stat`, no scan).
    public func opLogCount() throws -> Int {
        try env.read { txn in try txn.statistics(of: dbs.oplog).entries }
    }
}
