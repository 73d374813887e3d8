import LMDB
import TopGunCore

extension Store {
    /// Applies operations from another replica (or an import) in one transaction.
    ///
    /// Each op is merged with the stored record; duplicates and stale ops change
    /// nothing and are not logged. An op whose HLC is too far ahead is rejected alone;
    /// the rest of the batch applies.
    ///
    /// - Parameters:
    ///   - overridingHorizon: apply ops older than the GC horizon for keys without a
    ///     record instead of refusing them. For an operator's repair from a peer whose
    ///     data is known good: such an op may be a write a collected tombstone had
    ///     superseded, which then comes back.
    ///   - repairFrom: the peer these ops come from in a Merkle repair; refusals for
    ///     the GC horizon are counted on its record (see `PeerState`), and the horizon
    ///     is the one the peer joined at.
    /// - Returns: one outcome per operation, in order.
    /// - Throws: `StoreError` when the transaction fails; then nothing was applied.
    public func apply(
        _ operations: [ReplicatedOperation], overridingHorizon: Bool = false, repairFrom peer: NodeID? = nil, trustingStamps: Bool = false
    ) throws -> [ApplyOutcome] {
        let outcomes = try commit { batch, txn in
            batch.overridesHorizon = overridingHorizon
            batch.trustsStamps = trustingStamps
            if let peer { _ = try batch.horizon(forPeer: peer, txn) }
            var outcomes: [ApplyOutcome] = []
            outcomes.reserveCapacity(operations.count)
            for op in operations { outcomes.append(try batch.applyRemote(op, txn)) }
            let refused = outcomes.filter { if case .rejected(.beyondHorizon) = $0 { true } else { false } }.count
            if let peer, refused > 0 {
                try Self.updatePeer(peer, txn, dbs) { state, _ in state.refusedBeyondHorizon += refused }
            }
            try liftQuarantine(operations, outcomes, txn)
            return outcomes
        }
        // Counted once committed: LMDB runs the body again after growing the map.
        let refused = outcomes.filter { if case .rejected(.beyondHorizon) = $0 { true } else { false } }.count
        if peer != nil, refused > 0 { counters.record(refusedBeyondHorizon: refused) }
        return outcomes
    }

    /// Applies local mutations in one transaction, stamping each with a fresh HLC.
    /// Records quarantined by `heal` that these operations wrote again are whole again:
    /// no longer listed, and counted as restored.
    private func liftQuarantine(_ operations: [ReplicatedOperation], _ outcomes: [ApplyOutcome], _ txn: borrowing WriteTransaction) throws {
        var any = false
        try txn.forEach(in: dbs.meta, range: .prefix(Layout.Meta.quarantinePrefix)) { _, _ in
            any = true
            return false
        }
        guard any else { return }
        var restored: UInt64 = 0
        for (op, outcome) in zip(operations, outcomes) where outcome.isApplied {
            guard let info = mapInfo(op.map) else { continue }
            if try txn.delete(Layout.Meta.quarantinePrefix + Layout.recordKey(mapID: info.id, key: op.key), in: dbs.meta) { restored += 1 }
        }
        if restored > 0 { try Self.addToTotal(Layout.Meta.restoredTotal, restored, txn, dbs) }
    }

    public func apply(_ mutations: [Mutation]) throws -> [ApplyOutcome] {
        try commit { batch, txn in try mutations.map { try batch.apply($0, txn) } }
    }

    /// Runs one write transaction with `body`, then publishes its changes.
    func commit(_ body: (inout Batch, borrowing WriteTransaction) throws -> [ApplyOutcome]) throws -> [ApplyOutcome] {
        let started = ContinuousClock.now
        defer { counters.record(batchDuration: ContinuousClock.now - started) }
        let wantChanges = feed.hasSubscribers
        let (outcomes, changes, newMaps): ([ApplyOutcome], [Change], [String: MapInfo])
        do {
            (outcomes, changes, newMaps) = try write { txn in
                var batch = try Batch(store: self, wantChanges: wantChanges, txn)
                let outcomes = try body(&batch, txn)
                try batch.finish(txn)
                return (outcomes, batch.changes, batch.newMaps)
            }
        } catch let error as LMDBError {
            throw storeError(error, "write aborted, nothing applied")
        }
        if !newMaps.isEmpty {
            mapsByName.withLock { for (name, info) in newMaps { $0[name] = info } }
            mapsByID.withLock { for (name, info) in newMaps { $0[info.id] = name } }
        }
        if !changes.isEmpty { feed.publish(changes) }
        let applied = outcomes.reduce(0) { $0 + ($1.isApplied ? 1 : 0) }
        if applied > 0 { commits.notify() }
        counters.record(applied: applied, of: outcomes.count)
        return outcomes
    }
}

/// The state of one write transaction: scratch buffers, Merkle deltas, changes.
struct Batch {
    let store: Store
    let dbs: Store.DBs
    let wantChanges: Bool
    var changes: [Change] = []
    var newMaps: [String: Store.MapInfo] = [:]
    var merkle = MerkleDeltas()
    var keyBuffer: [UInt8] = []
    var deltaBuffer: [UInt8] = []
    var stateBuffer: [UInt8] = []
    var orLayout = StatePayload.ORLayout()
    /// OR-Map and counter records above `deferredRecordBytes`, written at the end of
    /// the batch: record key → header and payload.
    var deferredRecords: [[UInt8]: [UInt8]] = [:]
    static let deferredRecordBytes = 1_024
    var clock: HybridLogicalClock
    /// One wall-clock reading for the whole batch.
    let wall: UInt64
    /// The last map looked up, to skip the shared map table for runs of one map.
    var lastMap: (name: String, info: Store.MapInfo)?
    /// LWW ops older than this for keys without a record are refused (see
    /// `Store.collectGarbage`); a peer's batch lowers it to the peer's join horizon.
    var horizon: HLCTimestamp
    var overridesHorizon = false
    /// Remote stamps are taken whatever their distance from this wall clock (see
    /// `applyRemote`).
    var trustsStamps = false
    /// OR-Map adds with tags at or before the horizon are checked (batches from no peer).
    var checksCollectedTags = true
    let resolvers: [String: ConflictResolver]
    let indexes: [String: [IndexDefinition]]

    init(store: Store, wantChanges: Bool, _ txn: borrowing WriteTransaction) throws {
        self.store = store
        self.dbs = store.dbs
        self.wantChanges = wantChanges
        // Another process (a CLI next to a server) may have issued stamps with this
        // node id: start past the persisted high-water mark as well.
        var clock = store.clock.withLock { $0 }
        if let raw = try txn.value(forKey: Layout.Meta.highWater, in: store.dbs.meta), let persisted = HLCTimestamp(bytes: raw),
            persisted > clock.last
        {
            clock = HybridLogicalClock(
                node: clock.node, wallClock: clock.wallClock, maxDriftMillis: clock.maxDriftMillis, lastIssued: persisted)
        }
        self.clock = clock
        self.wall = store.options.wallClock.milliseconds()
        self.horizon = store.horizon.withLock { $0 }
        self.resolvers = store.resolvers.withLock { $0 }
        // Another process may have created an index since this one loaded them: a changed
        // index counter reloads the definitions, so this write maintains the new index too.
        let generation = try txn.value(forKey: Layout.Meta.indexNextID, in: store.dbs.meta)
        var indexes = store.indexRegistry.withLock { $0 }
        if generation != store.indexGeneration.withLock({ $0 }) {
            indexes = try Store.loadIndexes(txn.reads, store.dbs)
            store.indexRegistry.withLock { $0 = indexes }
            store.indexGeneration.withLock { $0 = generation }
        }
        self.indexes = indexes
        keyBuffer.reserveCapacity(Layout.recordPrefixBytes + Layout.maxKeyBytes)
    }

    // MARK: Maps

    mutating func map(_ name: String, kind: CRDTKind, _ txn: borrowing WriteTransaction) throws -> Store.MapInfo? {
        if let last = lastMap, last.name == name { return last.info.kind == kind ? last.info : nil }
        guard let info = try lookUpOrCreate(name, kind: kind, txn) else { return nil }
        lastMap = (name, info)
        return info.kind == kind ? info : nil
    }

    mutating func lookUpOrCreate(_ name: String, kind: CRDTKind, _ txn: borrowing WriteTransaction) throws -> Store.MapInfo? {
        if let info = newMaps[name] ?? store.mapInfo(name) {
            return info.kind == kind ? info : nil
        }
        // Created by another process since this one loaded the map list?
        if let raw = try txn.value(forKey: Array(name.utf8), in: dbs.maps), raw.count == 5, let k = CRDTKind(rawValue: raw[4]) {
            let info = Store.MapInfo(id: raw.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) }, kind: k)
            newMaps[name] = info
            return info.kind == kind ? info : nil
        }
        guard !name.isEmpty, name.utf8.count <= Layout.maxKeyBytes else {
            throw StoreError(.invalidKey, "map names are 1 to \(Layout.maxKeyBytes) UTF-8 bytes")
        }
        let next = try txn.value(forKey: Layout.Meta.nextMapID, in: dbs.meta)
            .map { $0.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) } } ?? 1
        try txn.put([UInt8](bigEndian: (next + 1)), forKey: Layout.Meta.nextMapID, in: dbs.meta)
        var value = [UInt8](bigEndian: next)
        value.append(kind.rawValue)
        try txn.put(value, forKey: Array(name.utf8), in: dbs.maps)
        let info = Store.MapInfo(id: next, kind: kind)
        newMaps[name] = info
        return info
    }

    // MARK: Steps

    mutating func applyRemote(_ op: ReplicatedOperation, _ txn: borrowing WriteTransaction) throws -> ApplyOutcome {
        do throws(HLCError) {
            if trustsStamps {
                // The sender's clock is the reference (a user's app pulling from its
                // server): the HLC follows its stamps, however far this clock is off.
                let bound = clock.maxDriftMillis
                clock.maxDriftMillis = nil
                defer { clock.maxDriftMillis = bound }
                try clock.receive(op.timestamp, wall: wall)
            } else {
                try clock.receive(op.timestamp, wall: wall)
            }
        } catch {
            return .rejected(.clockDrift(error))
        }
        return try apply(op, local: false, txn)
    }

    /// A fresh local stamp (the wall clock is read once per batch).
    mutating func stamp() -> HLCTimestamp { clock.now(wall: wall) }

    mutating func apply(_ mutation: Mutation, _ txn: borrowing WriteTransaction) throws -> ApplyOutcome {
        switch mutation {
        case .set(let map, let key, let value, let ttl):
            // Nesting before encoding; the bytes are then checked once, with every op.
            do { try value?.checkNesting() } catch { return .rejected(.invalid("value of \(map)/\(key): \(error)")) }
            let encoded = value?.encoded
            return try apply(.init(map: map, key: key, timestamp: stamp(), payload: .lww(encodedValue: encoded, ttlMillis: ttl)), local: true, txn)
        case .setEncoded(let map, let key, let bytes, let ttl):
            return try apply(.init(map: map, key: key, timestamp: stamp(), payload: .lww(encodedValue: bytes, ttlMillis: ttl)), local: true, txn)
        case .add(let map, let key, let value, let ttl):
            let tag = stamp()
            var delta = ORSet()
            delta.add(value, tag: tag, ttlMillis: ttl)
            return try apply(.init(map: map, key: key, timestamp: tag, payload: .orSet(delta)), local: true, txn)
        case .remove(let map, let key, let value):
            return try removeEntries(map: map, key: key, txn) { $0 == value }
        case .removeAll(let map, let key):
            if let kind = kindOf(map), kind != .orMap { return .rejected(.kindMismatch("map \(map) is \(kind), not an or-map")) }
            // Every live tag, read from the payload without decoding its values.
            let tags = try withPayload(map: map, key: key, kind: .orMap, txn) { try StatePayload.liveTags($0) } ?? []
            guard !tags.isEmpty else { return .unchanged }
            return try apply(.init(map: map, key: key, timestamp: stamp(), payload: .orSet(ORSet(tombstones: Set(tags)))), local: true, txn)
        case .increment(let map, let key, let amount):
            guard amount != 0 else { return .unchanged }
            if let kind = kindOf(map), kind != .counter { return .rejected(.kindMismatch("map \(map) is \(kind), not a pn-counter")) }
            // This node's totals and the range check, read from the payload in place; the
            // delta is this node's new totals.
            let own = clock.node
            let totals = try withPayload(map: map, key: key, kind: .counter, txn) { try StatePayload.counterTotals($0) } ?? []
            guard PNCounter.value(adding: amount, by: own, to: totals) != nil else {
                let value = PNCounter.value(adding: 0, by: own, to: totals).map(String.init) ?? "its limit"
                return .rejected(.invalid("counter \(map)/\(key) at \(value) cannot change by \(amount) within the Int64 range"))
            }
            let mine = totals.first { $0.0 == own }
            var (positive, negative) = (mine?.1 ?? 0, mine?.2 ?? 0)
            if amount > 0 { positive += UInt64(amount) } else { negative += amount.magnitude }
            let delta = PNCounter(positive: [own: positive], negative: [own: negative])
            return try apply(.init(map: map, key: key, timestamp: stamp(), payload: .counter(delta)), local: true, txn)
        case .update(let map, let key, let ttl, let body):
            var current: Value?
            if let state = try readState(map: map, key: key, kind: .lww, txn), case .lww(let record) = state {
                current = record.visibleValue(at: store.options.wallClock.milliseconds())
            }
            let next: Value?
            do { next = try body(current) } catch { return .failed(UpdateFailure(error)) }
            if next == nil && current == nil { return .unchanged }
            return try apply(.init(map: map, key: key, timestamp: stamp(), payload: .lww(encodedValue: next?.encoded, ttlMillis: ttl)), local: true, txn)
        }
    }

    /// Removes the observed OR-Map entries of `key` whose value `matches` (tombstones
    /// their tags); nothing observed is `.unchanged`.
    mutating func removeEntries(map: String, key: String, _ txn: borrowing WriteTransaction, matching matches: (Value) -> Bool) throws -> ApplyOutcome {
        if let kind = kindOf(map), kind != .orMap { return .rejected(.kindMismatch("map \(map) is \(kind), not an or-map")) }
        guard let current = try readState(map: map, key: key, kind: .orMap, txn), case .orMap(let set) = current else {
            return .unchanged
        }
        let tags = set.entries.filter { matches($0.value.value) }.keys
        guard !tags.isEmpty else { return .unchanged }
        let delta = ORSet(tombstones: Set(tags))
        return try apply(.init(map: map, key: key, timestamp: stamp(), payload: .orSet(delta)), local: true, txn)
    }

    /// The kind of an existing map (nil when there is none yet).
    func kindOf(_ map: String) -> CRDTKind? { (newMaps[map] ?? store.mapInfo(map))?.kind }

    /// Calls `body` with the stored bytes of the record of `key` in a map of `kind` (nil
    /// when there is none): the copy this batch holds back (`deferredRecords`), else the
    /// one in the transaction.
    func withRecord<R>(
        map: String, key: String, kind: CRDTKind, _ txn: borrowing WriteTransaction, _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R? {
        guard let info = newMaps[map] ?? store.mapInfo(map), info.kind == kind else { return nil }
        let recordKey = Layout.recordKey(mapID: info.id, key: key)
        if !deferredRecords.isEmpty, let record = deferredRecords[recordKey] { return try record.withUnsafeBytes { try body($0) } }
        return try recordKey.withUnsafeBytes { k in try txn.withValue(forKey: k, in: dbs.records) { try body($0) } }
    }

    /// Calls `body` with the payload of the record of `key` (nil when there is none),
    /// after checking it against its header digest, without decoding it.
    func withPayload<R>(
        map: String, key: String, kind: CRDTKind, _ txn: borrowing WriteTransaction, _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R? {
        try withRecord(map: map, key: key, kind: kind, txn) { raw in
            guard let header = RecordHeader(raw), header.flags.kind == kind, header.payloadDigest(of: raw) == header.digest else {
                throw StoreError(.corruptRecord, "\(map)/\(key): record header or digest does not match its bytes")
            }
            return try body(UnsafeRawBufferPointer(rebasing: raw[header.payloadOffset...]))
        }
    }

    /// The decoded state of the record of `key` (nil when there is none).
    func readState(map: String, key: String, kind: CRDTKind, _ txn: borrowing WriteTransaction) throws -> StoredState? {
        do {
            return try withRecord(map: map, key: key, kind: kind, txn) { try StoredState(decoding: $0, kind: kind) }
        } catch let error as StoreError {
            throw error.naming(map: map, key: key)
        }
    }

    // MARK: The merge path

    mutating func apply(_ op: ReplicatedOperation, local: Bool, _ txn: borrowing WriteTransaction) throws -> ApplyOutcome {
        // Refused alone, before anything is created: what is stored can be read back.
        if let problem = Self.problem(with: op) { return .rejected(.invalid(problem)) }
        let kind = op.payload.kind
        guard let info = try map(op.map, kind: kind, txn) else {
            return .rejected(.kindMismatch("map \(op.map) is not \(kind)"))
        }
        let partition = Partitioner.partition(of: op.key)
        Layout.setRecordKey(&keyBuffer, mapID: info.id, partition: partition, key: op.key)

        switch op.payload {
        case .lww(let encoded, let ttl):
            return try applyLWW(op, local: local, info: info, partition: partition, encoded: encoded, ttl: ttl, txn)
        case .orSet(let delta):
            if checksCollectedTags && !local && !overridesHorizon && horizon > .zero, delta.entries.keys.contains(where: { $0 <= horizon }),
                try addsCollectedTag(delta, map: op.map, key: op.key, txn)
            {
                return .rejected(.beyondHorizon(horizon))
            }
            return try applyState(op, local: local, info: info, partition: partition, txn)
        case .counter:
            return try applyState(op, local: local, info: info, partition: partition, txn)
        }
    }

    /// Sets the horizon for a batch from `peer`: its ops are checked against the
    /// horizon as it was when the peer was first recorded (every tombstone collected
    /// since waited for its acknowledgement), and its ordered stream cannot carry a
    /// collected OR-Map tag.
    ///
    /// - Returns: true when `peer` is a user's app (a refusal is then final: the server
    ///   tells the app, which reverts the write).
    mutating func horizon(forPeer peer: NodeID, _ txn: borrowing WriteTransaction) throws -> Bool {
        let state = try Store.readPeer(peer, txn.reads, dbs)
        horizon = min(horizon, state?.joinedAtHorizon ?? horizon)
        checksCollectedTags = false
        return state?.user != nil
    }

    /// True when `delta` adds a tag at or before the horizon that the record neither
    /// holds nor has tombstoned: the tag may have been removed and collected (see
    /// `Store.collectGarbage`), so the add is refused like a stale LWW write. Only for
    /// ops that come from no peer (imports, unordered merges): a peer's ordered stream
    /// and its repairs cannot carry a collected tag (the GC rule, and logs never carry
    /// an add their node has tombstoned), while a replica that joined late may hold
    /// offline adds with old tags that are new everywhere.
    func addsCollectedTag(_ delta: ORSet, map: String, key: String, _ txn: borrowing WriteTransaction) throws -> Bool {
        var stored = ORSet()
        if case .orMap(let set)? = try readState(map: map, key: key, kind: .orMap, txn) { stored = set }
        return delta.entries.keys.contains { tag in
            tag <= horizon && stored.entries[tag] == nil && !stored.tombstones.contains(tag) && !delta.tombstones.contains(tag)
        }
    }

    /// Why `op` cannot be stored, if it cannot: the same limits the readers enforce.
    static func problem(with op: ReplicatedOperation) -> String? {
        let keyCount = op.key.utf8.count
        guard keyCount > 0, keyCount <= Layout.maxKeyBytes else { return "keys are 1 to \(Layout.maxKeyBytes) UTF-8 bytes" }
        let mapCount = op.map.utf8.count
        guard mapCount > 0, mapCount <= Layout.maxKeyBytes else { return "map names are 1 to \(Layout.maxKeyBytes) UTF-8 bytes" }
        do {
            switch op.payload {
            case .lww(let encoded?, _): try Value.validate(messagePack: encoded)
            case .lww(nil, _), .counter: break
            case .orSet(let set): for entry in set.entries.values { _ = try entry.value.storableEncoding() }
            }
        } catch {
            return "value of \(op.map)/\(op.key): \(error)"
        }
        return nil
    }

    /// LWW: decides from the 16 stored HLC bytes, in place, without decoding values.
    mutating func applyLWW(
        _ op: ReplicatedOperation, local: Bool, info: Store.MapInfo, partition: UInt16, encoded: [UInt8]?, ttl: UInt64?,
        _ txn: borrowing WriteTransaction
    ) throws -> ApplyOutcome {
        let incoming = op.timestamp
        // The value digest is needed only when the op is not already beaten on its HLC.
        var digest: UInt64 = 0
        var digested = false
        // (exists, wins, old timestamp, old digest, old bytes if a change feed or resolver needs them)
        let resolver = resolvers.isEmpty ? nil : resolvers[op.map]
        let mapIndexes = indexes.isEmpty ? [] : indexes[op.map] ?? []
        let needOld = wantChanges || resolver != nil
        // The stored record, read in place into locals (the closure returns nothing, so
        // the lookup passes no large generic result through LMDB's module).
        var exists = false
        var wins = true
        var oldStamp = HLCTimestamp.zero
        var oldDigest: UInt64 = 0
        var oldState: StoredState?
        var oldFields: [Value?] = []
        try keyBuffer.withUnsafeBytes { key in
            _ = try txn.withValue(forKey: key, in: dbs.records) { (raw) throws -> Void in
                guard let header = RecordHeader(raw) else { return }
                exists = true
                oldStamp = header.timestamp
                oldDigest = header.digest
                wins = LWWOrder.wins(
                    timestamp: incoming, digest: { digest = encoded.map { Digest64.hash($0) } ?? 0; digested = true; return digest }(), ttl: ttl,
                    over: header.timestamp, digest: header.digest, ttl: header.ttl)
                guard wins else { return }
                if needOld { oldState = try? StoredState(decoding: raw, kind: .lww) }
                if !mapIndexes.isEmpty && !header.flags.contains(.tombstone) {
                    // The header is parsed already: the fields come from its payload.
                    let payload = UnsafeRawBufferPointer(rebasing: raw[header.payloadOffset...])
                    oldFields = try mapIndexes.map { try $0.field(ofValue: payload) }
                }
            }
        }
        if !wins { return .unchanged }
        if !exists && incoming < horizon && !overridesHorizon {
            // A tombstone for a key that is not here resurrects nothing: drop it. A value
            // may be a write a collected tombstone superseded: refuse it, loudly.
            return encoded == nil ? .unchanged : .rejected(.beyondHorizon(horizon))
        }
        if !digested { digest = encoded.map { Digest64.hash($0) } ?? 0 }

        var finalEncoded = encoded
        var finalDigest = digest
        if let resolver {
            var current: LWWRecord?
            if case .lww(let r)? = oldState { current = r }
            let value = try encoded.map { bytes in try Value(messagePack: bytes) }
            switch resolver.resolve(current: current, incoming: LWWRecord(value: value, timestamp: incoming, ttlMillis: ttl)) {
            case .accept: break
            case .replace(let replacement):
                finalEncoded = replacement?.encoded
                finalDigest = finalEncoded.map { Digest64.hash($0) } ?? 0
            case .reject(let reason): return .rejected(.resolver(reason))
            }
        }

        // Record.
        let flags = Layout.Flags(kind: .lww, tombstone: finalEncoded == nil, hasTTL: ttl != nil)
        let payloadCount = finalEncoded?.count ?? 0
        let headerSize = RecordHeader.size(hasTTL: ttl != nil)
        try keyBuffer.withUnsafeBytes { key in
            try txn.reserve(headerSize + payloadCount, forKey: key, in: dbs.records) { out in
                RecordHeader.store(timestamp: incoming, flags: flags, digest: finalDigest, ttl: ttl, to: out.baseAddress!)
                if let finalEncoded {
                    finalEncoded.withUnsafeBytes { out.baseAddress!.advanced(by: headerSize).copyMemory(from: $0.baseAddress!, byteCount: payloadCount) }
                }
            }
        }
        // Merkle bucket, accumulated for the batch.
        let keyHash = keyBuffer.withUnsafeBytes { Layout.keyHash(ofRecordKey: $0) }
        merkle.replace(
            mapID: info.id, partition: partition, keyHash: keyHash, kind: .lww,
            old: exists ? (oldStamp, oldDigest) : nil, new: (incoming, finalDigest))

        let sequence = local ? incoming : stamp()
        try appendLWWLog(sequence: sequence, origin: incoming, mapID: info.id, key: op.key, tombstone: finalEncoded == nil, ttl: ttl, txn)

        if !mapIndexes.isEmpty {
            let newFields: [Value?] = try finalEncoded.map { bytes in
                try bytes.withUnsafeBytes { b in try mapIndexes.map { try $0.field(ofValue: b) } }
            } ?? mapIndexes.map { _ in nil }
            try maintainIndexes(
                mapIndexes, key: op.key, partition: partition,
                old: oldFields.isEmpty ? mapIndexes.map { _ in nil } : oldFields, new: newFields, txn)
        }
        if wantChanges {
            let value = try finalEncoded.map { try Value(messagePack: $0) }
            changes.append(
                Change(
                    map: op.map, key: op.key, sequence: sequence, old: oldState,
                    new: .lww(LWWRecord(value: value, timestamp: incoming, ttlMillis: ttl))))
        }
        return .applied(sequence)
    }

    /// OR-Map and PN-Counter: merge the delta into the stored payload bytes, write if changed.
    mutating func applyState(
        _ op: ReplicatedOperation, local: Bool, info: Store.MapInfo, partition: UInt16, _ txn: borrowing WriteTransaction
    ) throws -> ApplyOutcome {
        deltaBuffer.removeAll(keepingCapacity: true)
        switch op.payload {
        case .orSet(let d): StatePayload.encode(d, into: &deltaBuffer)
        case .counter(let d): StatePayload.encode(d, into: &deltaBuffer)
        case .lww: preconditionFailure("LWW ops take applyLWW")
        }
        var merged = stateBuffer
        stateBuffer = []
        defer { stateBuffer = merged }
        var scratch = orLayout
        defer { orLayout = scratch }
        let kind = info.kind
        let payload = op.payload
        let deltaBytes = deltaBuffer
        let wantChanges = self.wantChanges
        // The stored record, merged in place into locals (nothing large passes back
        // through LMDB's generic lookup).
        var storedHeader: RecordHeader?
        var changed = false
        var oldState: StoredState?
        func inspect(_ raw: UnsafeRawBufferPointer) throws {
            guard let header = RecordHeader(raw), header.flags.kind == kind else {
                throw StoreError(.corruptRecord, "record of \(op.map)/\(op.key) is not a \(kind) record")
            }
            storedHeader = header
            let stored = UnsafeRawBufferPointer(rebasing: raw[header.payloadOffset...])
            changed = try Self.merge(payload, stored: stored, deltaBytes: deltaBytes, scratch: &scratch, into: &merged)
            if changed && wantChanges { oldState = try StoredState(decoding: raw, kind: kind) }
        }
        let deferred = deferredRecords.isEmpty ? nil : deferredRecords[keyBuffer]
        if let deferred {
            try deferred.withUnsafeBytes { try inspect($0) }
        } else {
            try keyBuffer.withUnsafeBytes { key in _ = try txn.withValue(forKey: key, in: dbs.records) { raw in try inspect(raw) } }
        }
        if storedHeader == nil {
            _ = try Self.merge(payload, stored: nil, deltaBytes: deltaBytes, scratch: &scratch, into: &merged)
        } else if !changed {
            return .unchanged
        }
        // Every counter change, local or merged, keeps the value an Int64: per-node
        // totals are a peer's claim, and a crafted one could wrap the sum.
        if kind == .counter, try merged.withUnsafeBytes({ try StatePayload.counterValue($0) }) == nil {
            return .rejected(.invalid("counter \(op.map)/\(op.key) would leave the Int64 range with this change"))
        }

        if case .orSet(let d) = payload, storedHeader != nil, !d.entries.isEmpty,
            merged.withUnsafeBytes({ m in d.entries.keys.contains { StatePayload.hasTombstone(m, $0) } })
        {
            // The log (and so every subscriber) must never carry an add this replica has
            // tombstoned: a subscriber that collected the tag would take it as new.
            let live = merged.withUnsafeBytes { m in d.entries.filter { !StatePayload.hasTombstone(m, $0.key) } }
            deltaBuffer.removeAll(keepingCapacity: true)
            StatePayload.encode(ORSet(entries: live, tombstones: d.tombstones), into: &deltaBuffer)
        }
        let timestamp = max(storedHeader?.timestamp ?? .zero, op.timestamp)
        let digest = merged.withUnsafeBytes { StatePayload.digest(of: $0, kind: kind) }
        let flags = Layout.Flags(kind: kind, tombstone: false, hasTTL: false)
        let count = merged.count
        if deferred != nil || Layout.headerBytes + count > Self.deferredRecordBytes {
            // A large record changed again later in this batch would take fresh pages each
            // time (pages freed in a transaction are reused only after it): keep it here
            // and write it once, at the end of the batch.
            var record = [UInt8](repeating: 0, count: Layout.headerBytes)
            record.withUnsafeMutableBytes { _ = RecordHeader.store(timestamp: timestamp, flags: flags, digest: digest, ttl: nil, to: $0.baseAddress!) }
            record.append(contentsOf: merged)
            deferredRecords[keyBuffer] = record
        } else {
            try keyBuffer.withUnsafeBytes { key in
                try txn.reserve(Layout.headerBytes + count, forKey: key, in: dbs.records) { out in
                    RecordHeader.store(timestamp: timestamp, flags: flags, digest: digest, ttl: nil, to: out.baseAddress!)
                    merged.withUnsafeBytes { out.baseAddress!.advanced(by: Layout.headerBytes).copyMemory(from: $0.baseAddress!, byteCount: count) }
                }
            }
        }
        let keyHash = keyBuffer.withUnsafeBytes { Layout.keyHash(ofRecordKey: $0) }
        merkle.replace(
            mapID: info.id, partition: partition, keyHash: keyHash, kind: info.kind,
            old: storedHeader.map { ($0.timestamp, $0.digest) }, new: (timestamp, digest))

        let sequence = local ? op.timestamp : stamp()
        try appendLog(sequence: sequence, origin: op.timestamp, mapID: info.id, flags: flags, ttl: nil, key: op.key, payload: deltaBuffer, txn)
        if wantChanges {
            let new: StoredState = try merged.withUnsafeBytes { bytes in
                kind == .orMap ? .orMap(try StatePayload.decodeORSet(bytes)) : .counter(try StatePayload.decodeCounter(bytes))
            }
            changes.append(Change(map: op.map, key: op.key, sequence: sequence, old: oldState, new: new))
        }
        return .applied(sequence)
    }

    static func merge(
        _ payload: ReplicatedOperation.Payload, stored: UnsafeRawBufferPointer?, deltaBytes: [UInt8],
        scratch: inout StatePayload.ORLayout, into out: inout [UInt8]
    ) throws -> Bool {
        switch payload {
        case .orSet(let d):
            return try StatePayload.mergeORSet(stored: stored, delta: d, scratch: &scratch, into: &out)
        case .counter:
            return try deltaBytes.withUnsafeBytes { try StatePayload.mergeCounter(stored: stored, delta: $0, into: &out) }
        case .lww:
            preconditionFailure("LWW ops take applyLWW")
        }
    }

    /// Logs an LWW record's write: a value stays in its record only (the entry names the
    /// record, `Layout.Flags.valueInRecord`); a tombstone entry carries its flags and TTL.
    mutating func appendLWWLog(
        sequence: HLCTimestamp, origin: HLCTimestamp, mapID: UInt32, key: String, tombstone: Bool, ttl: UInt64?,
        _ txn: borrowing WriteTransaction
    ) throws {
        if tombstone {
            let flags = Layout.Flags(kind: .lww, tombstone: true, hasTTL: ttl != nil)
            try appendLog(sequence: sequence, origin: origin, mapID: mapID, flags: flags, ttl: ttl, key: key, payload: nil, txn)
        } else {
            let flags = Layout.Flags(rawValue: CRDTKind.lww.rawValue | Layout.Flags.valueInRecord.rawValue)
            try appendLog(sequence: sequence, origin: origin, mapID: mapID, flags: flags, ttl: nil, key: key, payload: nil, txn)
        }
    }

    /// Appends `[origin 16][map id 4][flags 1][ttl 8?][key length 2][key][payload]`
    /// (`LogEntry`), written in place in the page LMDB reserves for it.
    mutating func appendLog(
        sequence: HLCTimestamp, origin: HLCTimestamp, mapID: UInt32, flags: Layout.Flags, ttl: UInt64?, key: String,
        payload: [UInt8]?, _ txn: borrowing WriteTransaction
    ) throws {
        var key = key
        var seqKey = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &seqKey) { sequence.store(to: $0.baseAddress!) }
        let oplog = dbs.oplog
        try withUnsafeBytes(of: seqKey) { k in
            try key.withUTF8 { keyBytes in
                let keyAt = 21 + (ttl == nil ? 0 : 8) + 2
                let payloadCount = payload?.count ?? 0
                try txn.reserve(keyAt + keyBytes.count + payloadCount, forKey: k, in: oplog, flags: .append) { out in
                    let p = out.baseAddress!
                    origin.store(to: p)
                    p.storeBigEndian(mapID, toByteOffset: 16)
                    p.storeBytes(of: flags.rawValue, toByteOffset: 20, as: UInt8.self)
                    if let ttl { p.storeBigEndian(ttl, toByteOffset: 21) }
                    p.storeBigEndian(UInt16(keyBytes.count), toByteOffset: keyAt - 2)
                    if let base = keyBytes.baseAddress { (p + keyAt).copyMemory(from: base, byteCount: keyBytes.count) }
                    payload?.withUnsafeBytes { bytes in
                        if let base = bytes.baseAddress { (p + keyAt + keyBytes.count).copyMemory(from: base, byteCount: payloadCount) }
                    }
                }
            }
        }
    }

    /// Writes the accumulated Merkle bucket digests and the HLC high-water mark.
    mutating func finish(_ txn: borrowing WriteTransaction) throws {
        for (key, record) in deferredRecords { try txn.put(record, forKey: key, in: dbs.records) }
        try merkle.write(txn, dbs.merkle)
        try txn.put(clock.last.bytes, forKey: Layout.Meta.highWater, in: dbs.meta)
        // Publish the clock only once the commit is certain to be attempted; a failed
        // commit leaves a clock that is ahead, which is harmless.
        let final = clock
        store.clock.withLock { if final.last > $0.last { $0 = final } }
    }
}
