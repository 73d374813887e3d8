import LMDB
import TopGunCore

extension Store {
    /// Returns a record to a server's state after the server refused `refused`, a
    /// write this replica pushed (a policy denied it). Not a new write: the record,
    /// its Merkle digest, its index entries and live queries follow, and an LWW record
    /// put back to the server's write gets a log entry naming it under that write's
    /// stamp (the entry of the refused write no longer stands, and log readers and GC
    /// need one that does). A user's app pushes only its own writes, so the server's
    /// write is not pushed back; an own earlier write is one the server holds.
    ///
    /// Only the refused write's own effect, and only what this node wrote itself, is
    /// undone, so a newer state that arrived meanwhile stays: an LWW record goes back to `serverState` only while it still
    /// holds the refused stamp; an OR-Map drops the entries the op added and restores
    /// the server's entries for the tags it removed; a counter takes the server's
    /// totals for the slots the op carried.
    ///
    /// - Parameter serverState: the server's state of the record (nil: it has none, or
    ///   this replica may not read it — then the refused effect is simply removed).
    /// - Returns: true when the record changed.
    @discardableResult
    public func revert(_ refused: ReplicatedOperation, serverState: ReplicatedOperation?) throws -> Bool {
        let outcomes = try commit { batch, txn in
            let kind = refused.payload.kind
            let own = nodeID
            guard let info = batch.existingMap(refused.map, kind: kind) else { return [.unchanged] }
            let local = try batch.readState(map: refused.map, key: refused.key, kind: kind, txn)
            let target: StoredState?
            switch (refused.payload, local) {
            case (.lww, .lww(let record)?):
                // Only this node's own write, and only while it is still the record.
                guard refused.timestamp.node == own, record.timestamp == refused.timestamp else { return [.unchanged] }
                if case .lww(let encoded, let ttl)? = serverState?.payload {
                    target = .lww(LWWRecord(value: try encoded.map { try Value(messagePack: $0) }, timestamp: serverState!.timestamp, ttlMillis: ttl))
                } else {
                    target = nil
                }
            case (.orSet(let delta), .orMap(let set)?):
                var server = ORSet()
                if case .orSet(let s)? = serverState?.payload { server = s }
                // Only the adds this node made; what it received from others stays.
                var entries = set.entries.filter { delta.entries[$0.key] == nil || $0.key.node != own }
                for tag in delta.tombstones { if let entry = server.entries[tag] { entries[tag] = entry } }
                // The refused removes the server does not hold come off; tombstones the
                // server has (received ones, carried in a repair's state) stay.
                let reverted = ORSet(
                    entries: entries, tombstones: set.tombstones.subtracting(delta.tombstones.subtracting(server.tombstones)).union(server.tombstones))
                // Nothing left where the server has nothing: no record, as there.
                target = reverted.entries.isEmpty && reverted.tombstones.isEmpty && serverState == nil ? nil : .orMap(reverted)
            case (.counter(let delta), .counter(let counter)?):
                var server = PNCounter()
                if case .counter(let c)? = serverState?.payload { server = c }
                var positive = counter.positive
                var negative = counter.negative
                for node in Set(delta.positive.keys).union(delta.negative.keys) where node == own {
                    positive[node] = server.positive[node]
                    negative[node] = server.negative[node]
                }
                target = positive.isEmpty && negative.isEmpty && serverState == nil ? nil : .counter(PNCounter(positive: positive, negative: negative))
            default:
                return [.unchanged]
            }
            guard target != local else { return [.unchanged] }
            try batch.replace(refused.map, info: info, key: refused.key, old: local, with: target, txn)
            if case .lww(let record)? = target {
                try batch.appendLWWLog(
                    sequence: batch.stamp(), origin: record.timestamp, mapID: info.id, key: refused.key, tombstone: record.value == nil,
                    ttl: record.ttlMillis, txn)
            }
            return [.applied(batch.clock.last)]
        }
        return outcomes.first?.isApplied ?? false
    }

    /// The current state of one record as an operation any replica can merge (the
    /// same form a Merkle repair ships), or nil when there is none.
    public func stateOperation(map: String, key: String) throws -> ReplicatedOperation? {
        try state(map: map, key: key).map { ReplicatedOperation(map: map, key: key, state: $0) }
    }
}

extension ReplicatedOperation {
    /// A record's state as a mergeable operation: an LWW record as its write, an
    /// OR-Map or counter as its full state (stamped with its newest entry).
    init(map: String, key: String, state: StoredState) {
        switch state {
        case .lww(let r):
            self.init(map: map, key: key, timestamp: r.timestamp, payload: .lww(encodedValue: r.value?.encoded, ttlMillis: r.ttlMillis))
        case .orMap(let s):
            let stamp = s.entries.values.map(\.timestamp).max() ?? s.tombstones.max() ?? .zero
            self.init(map: map, key: key, timestamp: stamp, payload: .orSet(s))
        case .counter(let c):
            self.init(map: map, key: key, timestamp: .zero, payload: .counter(c))
        }
    }
}

extension Batch {
    /// The map `name` if it exists with `kind`.
    func existingMap(_ name: String, kind: CRDTKind) -> Store.MapInfo? {
        guard let info = newMaps[name] ?? store.mapInfo(name), info.kind == kind else { return nil }
        return info
    }

    /// Writes `state` as the record (deleting it when nil) whatever a merge would say,
    /// keeping Merkle digests and index entries in step and reporting the change. No
    /// op-log entry: this is a local correction, not a write to replicate.
    mutating func replace(
        _ map: String, info: Store.MapInfo, key: String, old: StoredState?, with state: StoredState?, _ txn: borrowing WriteTransaction
    ) throws {
        let partition = Partitioner.partition(of: key)
        Layout.setRecordKey(&keyBuffer, mapID: info.id, partition: partition, key: key)
        let oldHeader = try keyBuffer.withUnsafeBytes { k in try txn.withValue(forKey: k, in: dbs.records) { RecordHeader($0) } } ?? nil
        var record: [UInt8]?
        var newEntry: (timestamp: HLCTimestamp, digest: UInt64)?
        if let state {
            var payload: [UInt8] = []
            let timestamp: HLCTimestamp
            var ttl: UInt64?
            var tombstone = false
            switch state {
            case .lww(let r):
                payload = r.value?.encoded ?? []
                timestamp = r.timestamp
                ttl = r.ttlMillis
                tombstone = r.value == nil
            case .orMap(let s):
                StatePayload.encode(s, into: &payload)
                timestamp = max(oldHeader?.timestamp ?? .zero, s.entries.values.map(\.timestamp).max() ?? .zero)
            case .counter(let c):
                StatePayload.encode(c, into: &payload)
                timestamp = oldHeader?.timestamp ?? .zero
            }
            let flags = Layout.Flags(kind: info.kind, tombstone: tombstone, hasTTL: ttl != nil)
            let digest = tombstone ? 0 : payload.withUnsafeBytes { StatePayload.digest(of: $0, kind: info.kind) }
            var bytes = [UInt8](repeating: 0, count: RecordHeader.size(hasTTL: ttl != nil))
            bytes.withUnsafeMutableBytes { _ = RecordHeader.store(timestamp: timestamp, flags: flags, digest: digest, ttl: ttl, to: $0.baseAddress!) }
            record = bytes + payload
            newEntry = (timestamp, digest)
        }
        if let record {
            try txn.put(record, forKey: keyBuffer, in: dbs.records)
        } else if oldHeader != nil {
            _ = try keyBuffer.withUnsafeBytes { try txn.delete($0, in: dbs.records) }
        }
        deferredRecords[keyBuffer] = nil
        let keyHash = keyBuffer.withUnsafeBytes { Layout.keyHash(ofRecordKey: $0) }
        merkle.replace(
            mapID: info.id, partition: partition, keyHash: keyHash, kind: info.kind,
            old: oldHeader.map { ($0.timestamp, $0.digest) }, new: newEntry)
        if info.kind == .lww, let mapIndexes = indexes[map], !mapIndexes.isEmpty {
            func fields(_ s: StoredState?) throws -> [Value?] {
                guard case .lww(let r)? = s, let value = r.value else { return mapIndexes.map { _ in nil } }
                return try value.encoded.withUnsafeBytes { b in try mapIndexes.map { try $0.field(ofValue: b) } }
            }
            try maintainIndexes(mapIndexes, key: key, partition: partition, old: try fields(old), new: try fields(state), txn)
        }
        if wantChanges {
            let new: StoredState = state ?? {
                switch info.kind {
                case .lww: .lww(LWWRecord(value: nil, timestamp: oldHeader?.timestamp ?? .zero, ttlMillis: nil))
                case .orMap: .orMap(ORSet())
                case .counter: .counter(PNCounter())
                }
            }()
            changes.append(Change(map: map, key: key, sequence: stamp(), old: old, new: new))
        }
    }
}
