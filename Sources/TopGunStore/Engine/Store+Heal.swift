import LMDB
import Synchronization
import TopGunCore

/// What `Store.heal(everything:)` changed.
public struct HealReport: Sendable, Equatable, CustomStringConvertible {
    /// Records removed because they fail their digest, do not parse or sit in the wrong
    /// partition (`MAP/KEY`). Their Merkle digests no longer count them, so the next
    /// digest exchange with a peer that holds them brings them back.
    public var quarantined: [String] = []
    /// Op-log entries removed (`SEQUENCE: why`): bytes that do not parse, or a key above
    /// the HLC high-water mark, which only damage puts there (every commit raises the
    /// mark past its keys). Such a key stopped every local write (the log is appended in
    /// key order) and moved a replica's cursor past entries it never received.
    public var logEntriesRemoved: [String] = []
    /// Records whose current write had no readable op-log entry and got a new one
    /// (`MAP/KEY`), so log readers and replicas see them again.
    public var relogged: [String] = []
    /// Index entries removed or added to agree with the records again.
    public var indexEntriesFixed = 0

    public init() {}

    public var isEmpty: Bool { quarantined.isEmpty && logEntriesRemoved.isEmpty && relogged.isEmpty && indexEntriesFixed == 0 }

    public var description: String {
        func list(_ names: [String]) -> String {
            names.prefix(10).joined(separator: ", ") + (names.count > 10 ? " and \(names.count - 10) more" : "")
        }
        var parts: [String] = []
        if !quarantined.isEmpty { parts.append("\(quarantined.count) damaged records removed (\(list(quarantined)))") }
        if !logEntriesRemoved.isEmpty { parts.append("\(logEntriesRemoved.count) op-log entries removed (\(list(logEntriesRemoved)))") }
        if !relogged.isEmpty { parts.append("\(relogged.count) records logged again (\(list(relogged)))") }
        if indexEntriesFixed > 0 { parts.append("\(indexEntriesFixed) index entries fixed") }
        return parts.isEmpty ? "nothing to heal" : parts.joined(separator: "; ")
    }
}

/// Damage readers met in this process, for the next `Store.heal()`: record keys and
/// op-log keys, as stored.
struct NotedDamage {
    var records = Set<[UInt8]>()
    var logKeys = Set<[UInt8]>()
    /// Record prefixes (map id, partition) whose records disagree with their Merkle
    /// digests: a record is missing from its key range.
    var partitions = Set<[UInt8]>()
    var isEmpty: Bool { records.isEmpty && logKeys.isEmpty && partitions.isEmpty }
}

extension Store {
    /// Records that readers met a damaged record (its stored key) and wakes
    /// `damageSignal`: a replica node heals and asks its peers for the record.
    func noteDamage(record key: [UInt8]) {
        let added = notedDamage.withLock { $0.records.insert(key).inserted }
        if added { damageSignal.notify() }
    }

    /// Records that readers met an op-log entry that does not parse (its key).
    func noteDamage(logKey key: [UInt8]) {
        let added = notedDamage.withLock { $0.logKeys.insert(key).inserted }
        if added { damageSignal.notify() }
    }

    /// Records that a scan found partition `prefix` (map id, partition) to disagree
    /// with its Merkle digests.
    func noteDamage(partition prefix: [UInt8]) {
        let added = notedDamage.withLock { $0.partitions.insert(prefix).inserted }
        if added { damageSignal.notify() }
    }

    /// True when readers of this process met damage that `heal()` has not handled.
    public var hasNotedDamage: Bool { !notedDamage.withLock { $0.isEmpty } }

    /// Damaged records that were removed and that no write has brought back yet
    /// (`MAP/KEY`), across restarts.
    public func quarantinedRecords() throws -> [String] {
        try read { txn in
            var keys: [[UInt8]] = []
            try txn.forEach(in: dbs.meta, range: .prefix(Layout.Meta.quarantinePrefix)) { k, _ in
                keys.append(k.withUnsafeBytes { Array($0[Layout.Meta.quarantinePrefix.count...]) })
                return true
            }
            // A local write may have brought one back (only peers' writes lift the mark).
            return try keys.filter { try txn.value(forKey: $0, in: dbs.records) == nil }.map { key in key.withUnsafeBytes { recordName($0) } }
        }
    }

    /// How many damaged records this store removed and how many came back since it was
    /// created (from a peer's repair or a later write).
    public func damageTotals() throws -> (quarantined: UInt64, restored: UInt64) {
        func total(_ raw: [UInt8]?) -> UInt64 {
            guard let raw, raw.count == 8 else { return 0 }
            return raw.withUnsafeBytes { $0.loadBigEndian(as: UInt64.self) }
        }
        return try read { txn in
            (total(try txn.value(forKey: Layout.Meta.quarantinedTotal, in: dbs.meta)), total(try txn.value(forKey: Layout.Meta.restoredTotal, in: dbs.meta)))
        }
    }

    /// Removes what is damaged so that what is left is whole and a peer can restore the
    /// rest, in one write transaction:
    ///
    /// - op-log entries that do not parse or whose key is above the HLC high-water mark;
    /// - records that fail their digest, do not parse or sit in another partition than
    ///   their key's (quarantined: listed by `quarantinedRecords()` until a write brings
    ///   them back), with their index entries; the Merkle digests of their partitions
    ///   are recomputed from the records left, so a digest exchange with a peer that
    ///   holds them differs and the peer's repair sends them;
    /// - records whose current write lost its log entry get a new entry (the same state
    ///   and origin stamp under a new op-log key), so replicas receive them again.
    ///
    /// With `everything` false only the damage readers of this process met
    /// (`hasNotedDamage`) and the log's keys above the high-water mark are examined; with
    /// `everything` every record, entry and index entry is (what `check` reads), and
    /// every index is made to agree with the records.
    ///
    /// A damaged record cannot be read, so removing it loses nothing that was readable;
    /// without a peer that holds it, it stays listed as quarantined.
    public func heal(everything: Bool = false) throws -> HealReport {
        try refreshMaps()
        let noted = notedDamage.withLock { noted in
            defer { noted = NotedDamage() }
            return noted
        }
        let report: HealReport
        do {
            report = try write { txn in
                var batch = try Batch(store: self, wantChanges: false, txn)
                let report = try heal(everything: everything, noted: noted, &batch, txn)
                if !report.relogged.isEmpty { try batch.finish(txn) }
                return report
            }
        } catch let error as LMDBError {
            // Met again next time.
            notedDamage.withLock {
                $0.records.formUnion(noted.records)
                $0.logKeys.formUnion(noted.logKeys)
                $0.partitions.formUnion(noted.partitions)
            }
            throw storeError(error, "heal aborted, nothing changed")
        }
        if !report.relogged.isEmpty { commits.notify() }
        return report
    }

    private func heal(everything: Bool, noted: NotedDamage, _ batch: inout Batch, _ txn: borrowing WriteTransaction) throws -> HealReport {
        var report = HealReport()
        let names = mapsByID.withLock { $0 }
        let highWater = try txn.value(forKey: Layout.Meta.highWater, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) } ?? .zero
        let truncated = try txn.value(forKey: Layout.Meta.truncated, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) } ?? .zero

        // 1. The op log: which entries to examine, which to remove, which records they
        // named (their current write may need a new entry).
        var examine: [([UInt8], [UInt8])] = []
        let above = highWater.successor.bytes
        try txn.forEach(in: dbs.oplog, range: everything ? KeyRange() : KeyRange(from: above)) { k, v in
            examine.append((k.withUnsafeBytes { Array($0) }, v.withUnsafeBytes { Array($0) }))
            return true
        }
        if !everything {
            for key in noted.logKeys where key.lexicographicallyPrecedes(above) {
                if let value = try txn.value(forKey: key, in: dbs.oplog) { examine.append((key, value)) }
            }
        }
        var namedRecords = Set<[UInt8]>()
        var logged = Set<[UInt8]>()
        var recordKey: [UInt8] = []
        // An entry removed without naming its record (its map id or key is what is
        // damaged) leaves a record without its entry somewhere: every record is looked at.
        var namesLost = false
        var namedByRemoved = Set<[UInt8]>()
        for (key, value) in examine {
            let sequence = HLCTimestamp(bytes: key)
            var why: String?
            var named = false
            if let sequence, sequence > highWater { why = "above the HLC high-water mark \(highWater)" }
            if sequence == nil { why = "key of \(key.count) bytes" }
            do {
                try value.withUnsafeBytes { v in
                    let entry = try LogEntry(v)
                    guard let name = names[entry.mapID], let info = mapInfo(name) else {
                        throw StoreError(.corruptRecord, "unknown map id \(entry.mapID)")
                    }
                    guard entry.flags.kind == info.kind else { throw StoreError(.corruptRecord, "kind does not match map \(name)") }
                    entry.recordKey(into: &recordKey)
                    namedRecords.insert(recordKey)
                    named = true
                    // The payload decodes: an OR-Map or counter state, or an LWW value
                    // carried by the entry.
                    if entry.flags.kind != .lww {
                        _ = try entry.operation(map: name)
                    } else if !entry.flags.contains(.valueInRecord) && !entry.flags.contains(.tombstone) {
                        try Value.validate(messagePack: entry.payload)
                    }
                    if why == nil { logged.insert(recordKey + entry.origin.bytes) }
                }
            } catch {
                why = why ?? "\(error)"
            }
            guard let why else { continue }
            if !named { namesLost = true } else { namedByRemoved.insert(recordKey) }
            _ = try txn.delete(key, in: dbs.oplog)
            report.logEntriesRemoved.append("\(sequence.map { "\($0)" } ?? "?"): \(why)")
        }

        // 2. Records: quarantine the damaged ones; find those whose write lost its entry.
        let allRecords = everything || namesLost
        var records: [([UInt8], [UInt8])] = []
        if allRecords {
            try txn.forEach(in: dbs.records) { k, v in
                records.append((k.withUnsafeBytes { Array($0) }, v.withUnsafeBytes { Array($0) }))
                return true
            }
        } else {
            for key in noted.records.union(namedRecords) {
                if let value = try txn.value(forKey: key, in: dbs.records) { records.append((key, value)) }
            }
        }
        var touched = noted.partitions  // record prefixes (map id, partition) whose Merkle digests change
        var quarantinedByMap: [UInt32: Set<[UInt8]>] = [:]
        var relog: [(key: [UInt8], value: [UInt8])] = []
        for (key, value) in records {
            guard key.count > Layout.recordPrefixBytes else {
                _ = try txn.delete(key, in: dbs.records)
                report.quarantined.append("record key of \(key.count) bytes")
                continue
            }
            let damage: String? = key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in
                    Self.damage(ofRecord: v, key: k, names: names, mapInfo: { self.mapInfo($0) })
                }
            }
            if damage != nil {
                _ = try txn.delete(key, in: dbs.records)
                let name = key.withUnsafeBytes { recordName($0) }
                report.quarantined.append(name)
                touched.insert(Array(key[..<Layout.recordPrefixBytes]))
                // Where the key would live if its map or partition bytes are what changed:
                // that partition's digests still count the record it was.
                if let text = String(validating: key[Layout.recordPrefixBytes...], as: UTF8.self) {
                    for (_, info) in mapsByName.withLock({ $0 }) {
                        touched.insert(Layout.recordPrefix(mapID: info.id, partition: Partitioner.partition(of: text)))
                    }
                }
                let mapID = key.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) }
                quarantinedByMap[mapID, default: []].insert(Array(key[4...]))
                // A record of no map, or in another partition than its key's, is a damaged
                // key: no peer holds it under that key (the record it was is missing from
                // its partition, whose digests now differ, so a repair sends it).
                let keyIsSound = names[mapID] != nil && key.withUnsafeBytes { k in
                    String(validating: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self).map {
                        Partitioner.partition(of: $0) == k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                    } ?? false
                }
                if keyIsSound { try txn.put([], forKey: Layout.Meta.quarantinePrefix + key, in: dbs.meta) }
                continue
            }
            guard let header = value.withUnsafeBytes({ RecordHeader($0) }) else { continue }
            // LWW records whose write lost its entry (all of them looked at, or those a
            // removed entry named), and OR-Map or counter records a removed entry named.
            if allRecords {
                if (header.flags.kind == .lww && header.timestamp > truncated) || namedByRemoved.contains(key) { relog.append((key, value)) }
            } else if namedRecords.contains(key) {
                relog.append((key, value))
            }
        }
        if allRecords { logged = try Self.loggedWrites(txn.reads, dbs) }
        for (key, value) in relog {
            guard let header = value.withUnsafeBytes({ RecordHeader($0) }) else { continue }
            // An LWW record whose write still has its entry needs none; an OR-Map or
            // counter record named by a removed entry gets its whole state logged (a
            // state merges into any replica idempotently).
            if header.flags.kind == .lww && logged.contains(key + header.timestamp.bytes) { continue }
            let mapID = key.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) }
            let recordKeyText = String(decoding: key[Layout.recordPrefixBytes...], as: UTF8.self)
            let sequence = batch.stamp()
            if header.flags.kind == .lww {
                try batch.appendLWWLog(
                    sequence: sequence, origin: header.timestamp, mapID: mapID, key: recordKeyText,
                    tombstone: header.flags.contains(.tombstone), ttl: header.ttl, txn)
            } else {
                let flags = Layout.Flags(rawValue: header.flags.kind!.rawValue)
                try batch.appendLog(
                    sequence: sequence, origin: header.timestamp, mapID: mapID, flags: flags, ttl: nil, key: recordKeyText,
                    payload: Array(value[header.payloadOffset...]), txn)
            }
            report.relogged.append(key.withUnsafeBytes { recordName($0) })
        }

        // 3. Merkle digests of every partition that lost a record (all, when healing
        // everything: a damaged digest is damage too).
        if everything {
            for (_, info) in mapsByName.withLock({ $0 }) {
                for p in 0..<UInt16(Partitioner.partitionCount) { touched.insert(Layout.recordPrefix(mapID: info.id, partition: p)) }
            }
        }
        for prefix in touched { try recomputeMerkle(prefix: prefix, txn) }

        // 4. Indexes: entries of removed records go; with `everything`, each index is made
        // to agree with the records both ways.
        let registry = indexRegistry.withLock { $0 }
        for (map, list) in registry {
            guard let info = mapInfo(map) else { continue }
            for index in list {
                var expected: [[UInt8]: [UInt8]] = [:]
                if everything {
                    try txn.forEach(in: dbs.records, range: .prefix(Layout.recordPrefix(mapID: info.id))) { k, v in
                        k.withUnsafeBytes { k in
                            v.withUnsafeBytes { v in
                                guard k.count > Layout.recordPrefixBytes, let field = try? index.field(ofRecord: v) else { return }
                                let key = String(decoding: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
                                let partition = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                                expected[Layout.indexKey(index, value: field, partition: partition, key: key)] = Layout.indexEntryValue(
                                    partition: partition, key: key)
                            }
                        }
                        return true
                    }
                } else if quarantinedByMap[info.id] == nil {
                    continue
                }
                let removed = quarantinedByMap[info.id] ?? []
                var stale: [[UInt8]] = []
                var present = Set<[UInt8]>()
                try txn.forEach(in: dbs.index, range: .prefix([UInt8](bigEndian: index.id))) { k, v in
                    let key = k.withUnsafeBytes { Array($0) }
                    let value = v.withUnsafeBytes { Array($0) }
                    let consistent = Layout.isConsistentIndexEntry(key: key, value: value)
                    if everything ? (expected[key] != value || !consistent) : removed.contains(value) {
                        stale.append(key)
                    } else {
                        present.insert(key)
                    }
                    return true
                }
                for key in stale { _ = try txn.delete(key, in: dbs.index) }
                report.indexEntriesFixed += stale.count
                if everything && index.isReady {
                    for (key, value) in expected where !present.contains(key) {
                        try txn.put(value, forKey: key, in: dbs.index)
                        report.indexEntriesFixed += 1
                    }
                }
            }
        }
        if !report.quarantined.isEmpty {
            try Self.addToTotal(Layout.Meta.quarantinedTotal, UInt64(report.quarantined.count), txn, dbs)
        }
        return report
    }

    /// Why a stored record is damaged, or nil when it is whole.
    static func damage(
        ofRecord v: UnsafeRawBufferPointer, key k: UnsafeRawBufferPointer, names: [UInt32: String], mapInfo: (String) -> MapInfo?
    ) -> String? {
        let mapID = k.loadBigEndian(as: UInt32.self)
        let partition = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
        guard let key = String(validating: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self) else {
            return "key is not UTF-8"
        }
        guard let name = names[mapID], let info = mapInfo(name) else { return "unknown map id \(mapID)" }
        guard Partitioner.partition(of: key) == partition else { return "stored in partition \(partition)" }
        guard let header = RecordHeader(v) else { return "invalid record header" }
        guard header.flags.kind == info.kind else { return "kind does not match its map" }
        guard header.payloadDigest(of: v) == header.digest else { return "stored digest does not match its value" }
        do { _ = try StoredState(decoding: v, kind: info.kind) } catch { return "\(error)" }
        return nil
    }

    /// Recomputes the Merkle digests of one (map, partition) from its records.
    func recomputeMerkle(prefix: [UInt8], _ txn: borrowing WriteTransaction) throws {
        guard prefix.count == Layout.recordPrefixBytes else { return }
        let mapID = prefix.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) }
        guard let name = mapsByID.withLock({ $0[mapID] }), let info = mapInfo(name) else { return }
        var buckets = [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)
        try txn.forEach(in: dbs.records, range: .prefix(prefix)) { k, v in
            k.withUnsafeBytes { k in
                v.withUnsafeBytes { v in
                    guard k.count > Layout.recordPrefixBytes, let header = RecordHeader(v) else { return }
                    let keyHash = Layout.keyHash(ofRecordKey: k)
                    buckets[Int(MerkleBuckets.bucket(ofKeyHash: keyHash))] ^= Layout.merkleEntry(
                        kind: info.kind, keyHash: keyHash, timestamp: header.timestamp, digest: header.digest)
                }
            }
            return true
        }
        if buckets.allSatisfy({ $0 == 0 }) {
            _ = try txn.delete(prefix, in: dbs.merkle)
        } else {
            var raw: [UInt8] = []
            for b in buckets { raw.appendBigEndian(b) }
            try txn.put(raw, forKey: prefix, in: dbs.merkle)
        }
    }

    static func addToTotal(_ key: [UInt8], _ n: UInt64, _ txn: borrowing WriteTransaction, _ dbs: DBs) throws {
        let old = try txn.value(forKey: key, in: dbs.meta).flatMap { $0.count == 8 ? $0.withUnsafeBytes { $0.loadBigEndian(as: UInt64.self) } : nil } ?? 0
        try txn.put([UInt8](bigEndian: old &+ n), forKey: key, in: dbs.meta)
    }

    /// `MAP/KEY` for a stored record key.
    func recordName(_ k: UnsafeRawBufferPointer) -> String {
        guard k.count >= Layout.recordPrefixBytes else { return "record key of \(k.count) bytes" }
        let mapID = k.loadBigEndian(as: UInt32.self)
        let key = String(decoding: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
        return "\(mapsByID.withLock { $0[mapID] } ?? "map \(mapID)")/\(key)"
    }
}
