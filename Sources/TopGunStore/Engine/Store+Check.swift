import LMDB
import TopGunCore

/// Findings of `Store.check()`: empty when the database is consistent.
public struct CheckReport: Sendable {
    public var problems: [String] = []
    public var recordsChecked = 0
    public var logEntriesChecked = 0
    public var indexEntriesChecked = 0
    public var isConsistent: Bool { problems.isEmpty }
}

extension Store {
    /// Verifies the whole database offline: every record and op-log entry decodes,
    /// stored record digests match their values, Merkle digests equal a recomputation
    /// from the records, every index agrees with the records both ways, and the HLC
    /// high-water mark is at least every stamp in records and log.
    public func check() throws -> CheckReport {
        var report = CheckReport()
        try refreshMaps()
        let highWater = try read { txn in
            try txn.value(forKey: Layout.Meta.highWater, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) }
        } ?? .zero
        let names = mapsByID.withLock { $0 }
        try read { txn in
            // Records.
            try txn.forEach(in: dbs.records) { k, v in
                report.recordsChecked += 1
                k.withUnsafeBytes { k in
                    v.withUnsafeBytes { v in
                        guard k.count > Layout.recordPrefixBytes else {
                            report.problems.append("record key of \(k.count) bytes")
                            return
                        }
                        let mapID = k.loadBigEndian(as: UInt32.self)
                        let partition = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                        let key = String(decoding: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
                        guard let name = names[mapID], let info = mapInfo(name) else {
                            report.problems.append("record \(key) of unknown map id \(mapID)")
                            return
                        }
                        if Partitioner.partition(of: key) != partition {
                            report.problems.append("\(name)/\(key) stored in partition \(partition), belongs in \(Partitioner.partition(of: key))")
                        }
                        guard let header = RecordHeader(v) else {
                            report.problems.append("\(name)/\(key): invalid record header")
                            return
                        }
                        do {
                            _ = try StoredState(decoding: v, kind: info.kind)
                            if info.kind == .counter,
                                try StatePayload.counterValue(UnsafeRawBufferPointer(rebasing: v[header.payloadOffset...])) == nil
                            {
                                report.problems.append("\(name)/\(key): counter value outside the Int64 range")
                            }
                        } catch {
                            report.problems.append("\(name)/\(key): \(error)")
                        }
                        if header.payloadDigest(of: v) != header.digest { report.problems.append("\(name)/\(key): stored digest does not match its value") }
                        if header.timestamp > highWater && header.timestamp.node == nodeID {
                            report.problems.append("\(name)/\(key): local stamp \(header.timestamp) above the HLC high-water mark")
                        }
                    }
                }
                return true
            }
            // Op log: each entry parses and stays below the high-water mark.
            var recordKey: [UInt8] = []
            try txn.forEach(in: dbs.oplog) { k, v in
                report.logEntriesChecked += 1
                guard k.byteCount == 16 else {
                    report.problems.append("op-log key of \(k.byteCount) bytes")
                    return true
                }
                let sequence = k.withUnsafeBytes { HLCTimestamp(loadingFrom: $0.baseAddress!) }
                if sequence > highWater { report.problems.append("op-log key \(sequence) above the HLC high-water mark \(highWater)") }
                do {
                    try v.withUnsafeBytes { v in
                        _ = try Self.readLogEntry(v, names: names, recordKey: &recordKey, txn, dbs)
                        let entry = try LogEntry(v)
                        if entry.flags.kind == .lww, entry.origin > highWater {
                            report.problems.append("op-log entry \(sequence): origin \(entry.origin) above the HLC high-water mark")
                        }
                    }
                } catch {
                    report.problems.append("op-log entry \(sequence): \(error)")
                }
                return true
            }
            report.problems += try recordsMissingFromLog(txn).map { "\($0.name): its write at \($0.stamp) has no op-log entry" }
        }
        // Merkle digests.
        for map in maps.keys.sorted() {
            do {
                for partition in try verifyMerkle(map: map) {
                    report.problems.append("\(map): Merkle digests of partition \(partition) differ from the records")
                }
            } catch {
                report.problems.append("\(map): Merkle digests unreadable: \(error)")
            }
        }
        // Indexes, both directions.
        for (map, list) in indexRegistry.withLock({ $0 }) {
            for index in list {
                var expected = Set<[UInt8]>()
                do {
                    guard let info = mapInfo(map) else { continue }
                    try read { txn in
                        try txn.forEach(in: dbs.records, range: .prefix(Layout.recordPrefix(mapID: info.id))) { k, v in
                            try k.withUnsafeBytes { k in
                                try v.withUnsafeBytes { v in
                                    guard k.count > Layout.recordPrefixBytes, let field = try index.field(ofRecord: v) else { return }
                                    let key = String(decoding: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
                                    let partition = k.loadBigEndian(fromByteOffset: 4, as: UInt16.self)
                                    expected.insert(Layout.indexKey(index, value: field, partition: partition, key: key))
                                }
                            }
                            return true
                        }
                    }
                } catch {
                    report.problems.append("index \(map).\(index.path) not verified: \(error)")
                    continue
                }
                var actual = Set<[UInt8]>()
                var mismatched = 0
                try read { txn in
                    try txn.forEach(in: dbs.index, range: .prefix([UInt8](bigEndian: index.id))) { k, v in
                        let key = k.withUnsafeBytes { Array($0) }
                        if !Layout.isConsistentIndexEntry(key: key, value: v.withUnsafeBytes { Array($0) }) { mismatched += 1 }
                        actual.insert(key)
                        return true
                    }
                }
                report.indexEntriesChecked += actual.count
                if mismatched > 0 { report.problems.append("index \(map).\(index.path): \(mismatched) entries name another record than their key") }
                if index.isReady {
                    let missing = expected.subtracting(actual).count
                    let stale = actual.subtracting(expected).count
                    if missing > 0 { report.problems.append("index \(map).\(index.path): \(missing) records missing from the index") }
                    if stale > 0 { report.problems.append("index \(map).\(index.path): \(stale) entries without a matching record") }
                }
            }
        }
        return report
    }

    /// The LWW records written after the log's truncation point whose write has no
    /// op-log entry (`MAP/KEY` and the write's stamp): log readers and replication never
    /// see them. A damaged origin stamp or key in an entry makes it pass for superseded,
    /// so this is read from the records' side.
    public func recordsMissingFromLog() throws -> [(name: String, stamp: HLCTimestamp)] {
        try read { txn in try recordsMissingFromLog(txn) }
    }

    func recordsMissingFromLog(_ txn: borrowing ReadTransaction) throws -> [(name: String, stamp: HLCTimestamp)] {
        let names = mapsByID.withLock { $0 }
        let logged = try Self.loggedWrites(txn, dbs)
        let truncated = try txn.value(forKey: Layout.Meta.truncated, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) } ?? .zero
        var missing: [(name: String, stamp: HLCTimestamp)] = []
        try txn.forEach(in: dbs.records) { k, v in
            k.withUnsafeBytes { k in
                v.withUnsafeBytes { v in
                    guard k.count >= Layout.recordPrefixBytes, let header = RecordHeader(v), header.flags.kind == .lww,
                        header.timestamp > truncated, !logged.contains(Array(k) + header.timestamp.bytes)
                    else { return }
                    let mapID = k.loadBigEndian(as: UInt32.self)
                    let key = String(decoding: UnsafeRawBufferPointer(rebasing: k[Layout.recordPrefixBytes...]), as: UTF8.self)
                    missing.append(("\(names[mapID] ?? "map \(mapID)")/\(key)", header.timestamp))
                }
            }
            return true
        }
        return missing
    }

    /// The LWW writes the op log holds an entry of: record key + origin stamp, for
    /// every entry that parses.
    static func loggedWrites(_ txn: borrowing ReadTransaction, _ dbs: DBs) throws -> Set<[UInt8]> {
        var recordKey: [UInt8] = []
        var logged = Set<[UInt8]>()
        try txn.forEach(in: dbs.oplog) { _, v in
            v.withUnsafeBytes { v in
                guard let entry = try? LogEntry(v), entry.flags.kind == .lww else { return }
                entry.recordKey(into: &recordKey)
                logged.insert(recordKey + entry.origin.bytes)
            }
            return true
        }
        return logged
    }
}
