import TopGunCore

/// One op-log entry, parsed in place:
/// `[origin 16][map id 4][flags 1][ttl 8?][key length 2][key][payload]`.
///
/// An LWW entry with `Layout.Flags.valueInRecord` has no payload: its value is in the
/// record (see `Store.readLogEntry`).
struct LogEntry {
    let origin: HLCTimestamp
    let mapID: UInt32
    let flags: Layout.Flags
    let ttl: UInt64?
    let key: String
    /// The payload bytes (empty for tombstones and values held by the record).
    let payload: UnsafeRawBufferPointer

    /// - Throws: `StoreError(.corruptRecord)` for bytes that are not an entry.
    init(_ v: UnsafeRawBufferPointer) throws(StoreError) {
        func corrupt(_ why: String) -> StoreError { StoreError(.corruptRecord, "op-log entry: \(why)") }
        guard v.count >= 16 + 4 + 1 + 2, let base = v.baseAddress else { throw corrupt("too short") }
        origin = HLCTimestamp(loadingFrom: base)
        mapID = base.loadBigEndian(fromByteOffset: 16, as: UInt32.self)
        flags = Layout.Flags(rawValue: v[20])
        var offset = 21
        if flags.contains(.hasTTL) {
            guard v.count >= offset + 8 + 2 else { throw corrupt("too short for its TTL") }
            ttl = base.loadBigEndian(fromByteOffset: offset, as: UInt64.self)
            offset += 8
        } else {
            ttl = nil
        }
        let keyCount = Int(base.loadBigEndian(fromByteOffset: offset, as: UInt16.self))
        offset += 2
        guard v.count >= offset + keyCount, let kind = flags.kind else { throw corrupt("bad key length or kind") }
        guard let key = String(validating: UnsafeRawBufferPointer(rebasing: v[offset..<offset + keyCount]), as: UTF8.self)
        else { throw corrupt("key is not UTF-8") }
        self.key = key
        offset += keyCount
        payload = UnsafeRawBufferPointer(rebasing: v[offset...])
        if flags.contains(.valueInRecord) {
            guard kind == .lww, !flags.contains(.tombstone), !flags.contains(.hasTTL), payload.isEmpty else {
                throw corrupt("an entry whose value is in its record carries more than the record's name")
            }
        }
    }

    /// Sets `out` to the key of the record the entry names.
    func recordKey(into out: inout [UInt8]) {
        Layout.setRecordKey(&out, mapID: mapID, partition: Partitioner.partition(of: key), key: key)
    }

    /// True while the LWW record `header` still holds the write this entry logged; once
    /// a later write superseded it, readers step over the entry and GC removes it.
    func isHeld(by header: RecordHeader) -> Bool {
        header.flags.kind == .lww && header.timestamp == origin
    }

    /// The operation the entry carries itself (not for `valueInRecord` entries).
    func operation(map: String) throws(StoreError) -> ReplicatedOperation {
        do {
            switch flags.kind {
            case .lww?:
                if flags.contains(.tombstone) {
                    return ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .lww(encodedValue: nil, ttlMillis: ttl))
                }
                // Not decoded here: whoever applies it validates it (`Store.apply`), so one
                // bad value from an older version is refused alone instead of stopping
                // every reader of the log.
                return ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .lww(encodedValue: Array(payload), ttlMillis: ttl))
            case .orMap?:
                return ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .orSet(try StatePayload.decodeORSet(payload)))
            case .counter?:
                return ReplicatedOperation(map: map, key: key, timestamp: origin, payload: .counter(try StatePayload.decodeCounter(payload)))
            case nil:
                throw StoreError(.corruptRecord, "op-log entry: unknown kind")
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.corruptRecord, "op-log payload: \(error)", underlying: error)
        }
    }
}
