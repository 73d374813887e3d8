import LMDB
import TopGunCore

extension Store {
    /// Upgrades a database written under an older schema, in the open's write
    /// transaction, so a crash leaves either the old schema or the new one.
    ///
    /// Schema 1 → 2: an OR-Map record's digest covers its live entries only (tombstoned
    /// tags left out, see `StatePayload.liveDigest(ofORSet:)`). Every OR-Map record whose
    /// digest changes is rewritten with the new one, and its Merkle bucket follows.
    ///
    /// Schema 2 → 3: new LWW log entries name their record instead of copying its value
    /// (`Layout.Flags.valueInRecord`). Entries written before carry their value and stay
    /// readable as they are, so nothing is rewritten; the version only keeps older
    /// libraries from misreading the new entries.
    static func migrate(from version: UInt32, _ txn: borrowing WriteTransaction, _ dbs: DBs) throws {
        guard version == 1 || version == 2 else {
            throw StoreError(.unsupportedSchema, "database schema \(version); this library reads \(Layout.schemaVersion)")
        }
        if version == 1 { try upgradeORDigests(txn, dbs) }
        try txn.put([UInt8](bigEndian: Layout.schemaVersion), forKey: Layout.Meta.schema, in: dbs.meta)
    }

    /// Schema 1 → 2 (see `migrate`).
    private static func upgradeORDigests(_ txn: borrowing WriteTransaction, _ dbs: DBs) throws {
        var rewrites: [(key: [UInt8], record: [UInt8])] = []
        var merkle = MerkleDeltas()
        try txn.forEach(in: dbs.records) { key, value in
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in
                    guard let header = RecordHeader(v), header.flags.kind == .orMap, k.count >= Layout.recordPrefixBytes else { return }
                    let digest = header.payloadDigest(of: v)
                    guard digest != header.digest else { return }
                    var record = Array(v)
                    record.withUnsafeMutableBytes { $0.storeBigEndian(digest, toByteOffset: 17) }
                    rewrites.append((Array(k), record))
                    let keyHash = Layout.keyHash(ofRecordKey: k)
                    merkle.replace(
                        mapID: k.loadBigEndian(as: UInt32.self), partition: k.loadBigEndian(fromByteOffset: 4, as: UInt16.self),
                        keyHash: keyHash, kind: .orMap, old: (header.timestamp, header.digest), new: (header.timestamp, digest))
                }
            }
            return true
        }
        for (key, record) in rewrites { try txn.put(record, forKey: key, in: dbs.records) }
        try merkle.write(txn, dbs.merkle)
    }
}
