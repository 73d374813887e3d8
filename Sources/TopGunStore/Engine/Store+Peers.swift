import LMDB
import TopGunCore

extension Store {
    /// Applies a segment of `peer`'s op log and stores the peer's replication cursor in
    /// the same transaction, so a restart resumes exactly after the last applied entry.
    ///
    /// The cursor advances to `cursor` (normally the segment's last sequence), except
    /// when an entry is refused for clock drift or for being older than the GC horizon
    /// (see `collectGarbage`): then it stops just before that entry, so the entry is
    /// offered again later instead of being skipped. Horizon refusals are counted on
    /// the peer's record: that peer or this store needs a repair. Cursors never move
    /// backwards.
    ///
    /// - Parameters:
    ///   - scope: the maps and partitions the segment was filtered to; the stored
    ///     scope narrows to what every segment covered (see `recordRepair`).
    ///   - holdingCursor: apply without moving the cursor (a session that already
    ///     refused an entry goes on applying what follows, and offers the refused one
    ///     again next time).
    ///   - trustingStamps: take the peer's stamps however far ahead of this clock (a
    ///     user's app pulling from its server: its HLC follows the server's).
    ///   - restampingDrift: an op stamped beyond the drift bound is taken under a fresh
    ///     stamp of this store (`.restamped`) instead of holding the cursor (a server
    ///     taking a user's app's writes when the app's clock is ahead).
    public func apply(
        _ entries: [LoggedOperation], fromPeer peer: NodeID, cursor: HLCTimestamp, scope: PeerScope = .all, holdingCursor: Bool = false,
        writesRejected: Int = 0, trustingStamps: Bool = false, restampingDrift: Bool = false
    ) throws -> [ApplyOutcome] {
        let outcomes = try commit { batch, txn in
            batch.trustsStamps = trustingStamps
            let user = try batch.horizon(forPeer: peer, txn)
            var outcomes: [ApplyOutcome] = []
            outcomes.reserveCapacity(entries.count)
            var stop: HLCTimestamp?
            var previous: HLCTimestamp?
            var refused = 0
            var drifted = 0
            for entry in entries {
                var outcome = try batch.applyRemote(entry.operation, txn)
                if !restampingDrift, case .rejected(.clockDrift) = outcome { drifted += 1 }
                if restampingDrift, case .rejected(.clockDrift) = outcome {
                    var op = entry.operation
                    op.timestamp = batch.stamp()
                    let taken = try batch.apply(op, local: false, txn)
                    if case .applied(let sequence) = taken { outcome = .restamped(sequence) } else { outcome = taken }
                }
                // A user's write older than the horizon is refused for good (the server
                // tells the app, which reverts it): its cursor does not wait.
                let holds = outcome.holdsCursor && !(user && { if case .rejected(.beyondHorizon) = outcome { true } else { false } }())
                if holds && stop == nil { stop = previous ?? .zero }
                if case .rejected(.beyondHorizon) = outcome { refused += 1 }
                previous = entry.sequence
                outcomes.append(outcome)
            }
            let wall = batch.wall
            try Self.updatePeer(peer, txn, dbs) { state, isNew in
                if !holdingCursor { state.cursor = max(state.cursor, stop ?? cursor) }
                state.lastSeenMillis = wall
                state.refusedBeyondHorizon += refused
                state.refusedForClockDrift += drifted
                state.writesRejected += writesRejected
                if !holdingCursor { state.scope = isNew ? scope : (state.scope ?? .all).intersection(scope) }
            }
            return outcomes
        }
        // Counted once committed: LMDB runs the body again after growing the map.
        let refused = outcomes.filter { if case .rejected(.beyondHorizon) = $0 { true } else { false } }.count
        if refused > 0 { counters.record(refusedBeyondHorizon: refused) }
        return outcomes
    }

    /// Records the clock offset measured at a handshake with `peer` (its wall clock
    /// minus this node's, ms).
    public func recordClockOffset(_ peer: NodeID, millis: Int64) throws {
        let wall = options.wallClock.milliseconds()
        try write { txn in
            try Self.updatePeer(peer, txn, dbs) { state, _ in
                state.lastSeenMillis = wall
                state.clockOffsetMillis = millis
            }
        }
    }

    /// Records that a Merkle repair from `peer` covering `scope` completed: every record
    /// of that scope the peer held up to its op-log key `head` is merged here. The
    /// cursor moves to `head` and the stored scope becomes `scope`.
    public func recordRepair(fromPeer peer: NodeID, through head: HLCTimestamp, scope: PeerScope) throws {
        let wall = options.wallClock.milliseconds()
        try write { txn in
            try Self.updatePeer(peer, txn, dbs) { state, _ in
                state.cursor = max(state.cursor, head)
                state.lastSeenMillis = wall
                state.scope = scope
            }
        }
    }

    /// Moves `peer`'s cursor back to `head` when it is past it: the peer's log never
    /// reached it (the peer was restored from a backup, or a damaged key put one of its
    /// entries in the future). Returns the cursor it had.
    @discardableResult
    public func rewindCursor(ofPeer peer: NodeID, to head: HLCTimestamp) throws -> HLCTimestamp {
        try write { txn in
            var before = HLCTimestamp.zero
            try Self.updatePeer(peer, txn, dbs) { state, _ in
                before = state.cursor
                state.cursor = min(state.cursor, head)
            }
            return before
        }
    }

    /// Makes `peer` known (a subscriber that pulls from this store): from now on
    /// garbage collection waits for its acknowledgements, across restarts, until it
    /// acknowledges or `forgetPeer` declares it gone.
    public func registerPeer(_ peer: NodeID) throws {
        let wall = options.wallClock.milliseconds()
        try write { txn in
            try Self.updatePeer(peer, txn, dbs) { state, _ in state.lastSeenMillis = wall }
        }
    }

    /// Records that node id `peer` is used by `user` (a user's app; nil: a replica)
    /// and binds it to that principal.
    ///
    /// - Returns: false, changing nothing, when the id is already bound to another
    ///   principal (a user's app cannot take a replica's id or another user's, nor a
    ///   replica a user's).
    public func claimPeer(_ peer: NodeID, user: String?) throws -> Bool {
        let wall = options.wallClock.milliseconds()
        return try write { txn in
            // Bytes, not String `==` (canonically equivalent subjects are other users).
            if let stored = try Self.readPeer(peer, txn.reads, dbs), !Self.samePrincipal(stored.user, user) { return false }
            try Self.updatePeer(peer, txn, dbs) { state, isNew in
                state.lastSeenMillis = wall
                if isNew { state.user = user }
            }
            return true
        }
    }

    /// What `claimDevice` decided.
    public enum DeviceClaim: Sendable, Equatable {
        /// The id is bound to the user (now, or since an earlier session).
        case claimed
        /// The id is bound to another principal.
        case takenByAnother
        /// The id is new and the user already has `limit` devices.
        case limitReached(Int)
    }

    /// Binds `peer` to user `subject` unless another principal holds it or the user
    /// already has `maxDevices` node ids, counted and claimed in one write transaction:
    /// simultaneous claims cannot pass the limit together.
    public func claimDevice(_ peer: NodeID, user subject: String, maxDevices: Int) throws -> DeviceClaim {
        let wall = options.wallClock.milliseconds()
        return try write { txn in
            if let stored = try Self.readPeer(peer, txn.reads, dbs) {
                guard Self.samePrincipal(stored.user, subject) else { return .takenByAnother }
            } else {
                var devices = 0
                try txn.forEach(in: dbs.peers) { k, v in
                    guard k.byteCount == 8 else { return true }
                    if let state = v.withUnsafeBytes({ PeerState(node: NodeID(0), $0) }), Self.samePrincipal(state.user, subject) { devices += 1 }
                    return devices < maxDevices
                }
                if devices >= maxDevices { return .limitReached(maxDevices) }
            }
            try Self.updatePeer(peer, txn, dbs) { state, isNew in
                state.lastSeenMillis = wall
                if isNew { state.user = subject }
            }
            return .claimed
        }
    }

    /// Binds `peer` to the replicas, taking it from a user's app that claimed it first
    /// (a replica that proved the shared secret wins).
    ///
    /// - Returns: the user that held the id, if one did.
    public func reclaimPeerForReplica(_ peer: NodeID) throws -> String? {
        let wall = options.wallClock.milliseconds()
        return try write { txn in
            let previous = try Self.readPeer(peer, txn.reads, dbs)?.user
            // Nothing the user's app did under the id carries over: cursor,
            // acknowledgement and join horizon start afresh.
            try txn.delete([UInt8](bigEndian: peer.rawValue), in: dbs.peers)
            try Self.updatePeer(peer, txn, dbs) { state, _ in state.lastSeenMillis = wall }
            return previous
        }
    }

    /// How many node ids are bound to user `subject` (its devices).
    public func nodeCount(ofUser subject: String) throws -> Int {
        try peers().filter { Self.samePrincipal($0.user, subject) }.count
    }

    static func samePrincipal(_ a: String?, _ b: String?) -> Bool {
        switch (a, b) {
        case (nil, nil): true
        case (let a?, let b?): a.utf8.elementsEqual(b.utf8)
        default: false
        }
    }

    /// Declares `peer` gone for good: garbage collection stops waiting for it. If it
    /// comes back, whatever of its writes is older than the GC horizon is refused
    /// (counted on its record) until a repair.
    ///
    /// - Returns: false when the peer was not known.
    @discardableResult
    public func forgetPeer(_ peer: NodeID) throws -> Bool {
        try write { txn in
            try txn.delete([UInt8](bigEndian: peer.rawValue), in: dbs.peers)
        }
    }

    /// The stored replication cursor of `peer`.
    public func peerCursor(_ peer: NodeID) throws -> HLCTimestamp? {
        guard let state = try self.peer(peer), state.cursor > .zero else { return nil }
        return state.cursor
    }

    /// What this store knows about `peer`.
    public func peer(_ node: NodeID) throws -> PeerState? {
        try read { txn in try Self.readPeer(node, txn, dbs) }
    }

    /// Every replica this store pulls from or that pulls from it.
    public func peers() throws -> [PeerState] {
        try read { txn in
            var out: [PeerState] = []
            try txn.forEach(in: dbs.peers) { k, v in
                guard k.byteCount == 8 else { return true }
                let node = k.withUnsafeBytes { NodeID($0.loadBigEndian(as: UInt64.self)) }
                if let state = v.withUnsafeBytes({ PeerState(node: node, $0) }) { out.append(state) }
                return true
            }
            return out
        }
    }

    static func readPeer(_ peer: NodeID, _ txn: borrowing ReadTransaction, _ dbs: DBs) throws -> PeerState? {
        let key = [UInt8](bigEndian: peer.rawValue)
        return try txn.value(forKey: key, in: dbs.peers).flatMap { raw in raw.withUnsafeBytes { PeerState(node: peer, $0) } }
    }

    /// Reads, changes and writes back the record of `peer` (a new one when absent).
    static func updatePeer(
        _ peer: NodeID, _ txn: borrowing WriteTransaction, _ dbs: DBs, _ change: (inout PeerState, _ isNew: Bool) -> Void
    ) throws {
        let key = [UInt8](bigEndian: peer.rawValue)
        let stored = try readPeer(peer, txn.reads, dbs)
        var state: PeerState
        if let stored {
            state = stored
        } else {
            let horizon = try txn.value(forKey: Layout.Meta.horizon, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) }
            state = PeerState(node: peer, joinedAtHorizon: horizon ?? .zero)
        }
        change(&state, stored == nil)
        try txn.put(state.encoded, forKey: key, in: dbs.peers)
    }

    /// The oldest op-log key still present (nil for an empty log).
    public func firstSequence() throws -> HLCTimestamp? {
        try read { txn in
            var first: HLCTimestamp?
            try txn.withCursor(on: dbs.oplog) { cursor in
                if try cursor.first() { first = HLCTimestamp(loadingFrom: cursor.currentKey.baseAddress!) }
            }
            return first
        }
    }

    /// Re-reads the map table (maps created by another process on the same files).
    public func refreshMaps() throws {
        publishMaps(try read { txn in try Self.loadMaps(txn, dbs) })
    }

    // MARK: Anti-entropy

    /// The state operations that repair a replica whose bucket digests are `theirs`:
    /// the records of every bucket (of `maps`, or all maps; of `partitions`, or all) whose
    /// digest differs from ours.
    ///
    /// - Parameter visible: when given, the records a peer may see, by map: digests
    ///   are computed over those alone (so records it may not see neither leak nor
    ///   differ for ever) and only those are sent. Maps it returns nil for are whole;
    ///   maps it may see nothing of are skipped.
    public func repairOperations(
        theirs: [String: [UInt16: [UInt64]]], maps: [String] = [], partitions: [UInt16] = [],
        visible: (@Sendable (String) -> RecordFilter)? = nil
    ) throws -> [ReplicatedOperation] {
        var ops: [ReplicatedOperation] = []
        for part in try repairPlan(theirs: theirs, maps: maps, partitions: partitions, visible: visible) {
            ops += try repairOperations(part, visible: visible)
        }
        return ops
    }

    /// One partition of a map whose bucket digests differ from a peer's.
    public struct RepairPart: Sendable, Equatable {
        public var map: String
        public var partition: UInt16
        public var buckets: Set<UInt8>
    }

    /// Where this store's digests differ from `theirs`, partition by partition, in the
    /// order `repairOperations(theirs:…)` sends them: a repair can then read and send
    /// one partition at a time, holding no more than that in memory.
    public func repairPlan(
        theirs: [String: [UInt16: [UInt64]]], maps: [String] = [], partitions: [UInt16] = [],
        visible: (@Sendable (String) -> RecordFilter)? = nil
    ) throws -> [RepairPart] {
        var plan: [RepairPart] = []
        let names = maps.isEmpty ? Array(Set(self.maps.keys).union(theirs.keys)).sorted() : maps
        let zero = [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)
        for map in names {
            let filter = visible?(map) ?? .all
            if case .none = filter { continue }
            let ours = try bucketDigests(map: map, filter)
            let their = theirs[map] ?? [:]
            for partition in Set(ours.keys).union(their.keys).sorted() {
                if !partitions.isEmpty && !partitions.contains(partition) { continue }
                let a = ours[partition] ?? zero
                let b = their[partition] ?? zero
                let differing = Set((0..<MerkleBuckets.bucketCount).filter { $0 < b.count && a[$0] != b[$0] || $0 >= b.count && a[$0] != 0 }.map { UInt8($0) })
                if !differing.isEmpty { plan.append(RepairPart(map: map, partition: partition, buckets: differing)) }
            }
        }
        return plan
    }

    /// The current states of the records in one part of a repair plan that `visible`
    /// lets the peer see.
    public func repairOperations(_ part: RepairPart, visible: (@Sendable (String) -> RecordFilter)? = nil) throws -> [ReplicatedOperation] {
        let filter = visible?(part.map) ?? .all
        var found = try stateOperations(map: part.map, partition: part.partition, buckets: part.buckets)
        switch filter {
        case .all: break
        case .none: found = []
        case .some(let admits): found = found.filter { admits($0.key) }
        }
        return found
    }

    /// Which records of a map a peer may see.
    public enum RecordFilter: Sendable {
        case all
        case none
        /// The keys the closure admits.
        case some(@Sendable (String) -> Bool)
    }

    /// Bucket digests of the records of `map` that `filter` admits: the stored digests
    /// for `.all`, else computed by a scan of the map.
    public func bucketDigests(map: String, _ filter: RecordFilter) throws -> [UInt16: [UInt64]] {
        switch filter {
        case .all: return try bucketDigests(map: map)
        case .none: return [:]
        case .some(let admits):
            guard let info = mapInfo(map) else { return [:] }
            return try read { txn in
                var out: [UInt16: [UInt64]] = [:]
                try txn.forEach(in: dbs.records, range: .prefix(Layout.recordPrefix(mapID: info.id))) { key, value in
                    try key.withUnsafeBytes { k in
                        try value.withUnsafeBytes { v in
                            guard k.count > Layout.recordPrefixBytes, let header = RecordHeader(v) else {
                                throw StoreError(.corruptRecord, "record of \(map)")
                            }
                            let name = String(decoding: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
                            guard admits(name) else { return }
                            let partition = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                            let keyHash = Layout.keyHash(ofRecordKey: k)
                            out[partition, default: [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)][
                                Int(MerkleBuckets.bucket(ofKeyHash: keyHash))] ^=
                                Layout.merkleEntry(kind: info.kind, keyHash: keyHash, timestamp: header.timestamp, digest: header.digest)
                        }
                    }
                    return true
                }
                return out.filter { $0.value.contains { $0 != 0 } }
            }
        }
    }

    /// Bucket digests of every partition of `map` that has any (absent = all zero).
    public func bucketDigests(map: String) throws -> [UInt16: [UInt64]] {
        guard let info = mapInfo(map) else { return [:] }
        return try read { txn in
            var out: [UInt16: [UInt64]] = [:]
            try txn.forEach(in: dbs.merkle, range: .prefix(Layout.recordPrefix(mapID: info.id))) { k, v in
                guard k.byteCount == 6, v.byteCount == MerkleBuckets.bucketCount * 8 else {
                    throw StoreError(.corruptRecord, "Merkle digests")
                }
                let partition = k.withUnsafeBytes { $0.loadBigEndian(fromByteOffset: 4, as: UInt16.self) }
                out[partition] = v.withUnsafeBytes { raw in
                    (0..<MerkleBuckets.bucketCount).map { raw.loadBigEndian(fromByteOffset: $0 * 8, as: UInt64.self) }
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
            out.append(ReplicatedOperation(map: map, key: key, state: state))
            return true
        }
        return out
    }
}

extension Store {
    /// Records stored, tombstones included (`mdb_stat`, no scan).
    public func recordCount() throws -> Int {
        try read { txn in try txn.statistics(of: dbs.records).entries }
    }

    /// Entries in the op log (`mdb_stat`, no scan).
    public func opLogCount() throws -> Int {
        try read { txn in try txn.statistics(of: dbs.oplog).entries }
    }
}
