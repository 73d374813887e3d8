import TopGunCore

/// The decoded state of one record.
public enum StoredState: Sendable, Equatable {
    case lww(LWWRecord)
    case orMap(ORSet)
    case counter(PNCounter)

    /// Decodes a stored record.
    ///
    /// The payload is checked against the digest in the header first, so a changed
    /// byte on disk is an error, never a wrong value.
    ///
    /// - Throws: `StoreError(.corruptRecord)` for bytes that are not a valid record
    ///   of `kind` (a truncated header, an unknown kind, a digest mismatch, an
    ///   undecodable payload).
    init(decoding raw: UnsafeRawBufferPointer, kind: CRDTKind) throws(StoreError) {
        guard let header = RecordHeader(raw) else {
            throw StoreError(.corruptRecord, "record header of \(raw.count) bytes is invalid")
        }
        guard header.flags.kind == kind else {
            throw StoreError(.corruptRecord, "record of kind \(String(describing: header.flags.kind)) in a \(kind) map")
        }
        guard header.payloadDigest(of: raw) == header.digest else {
            throw StoreError(.corruptRecord, "record digest does not match its bytes")
        }
        let payload = UnsafeRawBufferPointer(rebasing: raw[header.payloadOffset...])
        do {
            switch kind {
            case .lww:
                if header.flags.contains(.tombstone) {
                    guard payload.isEmpty else { throw ValueCodingError(.trailingBytes, at: header.payloadOffset) }
                    self = .lww(LWWRecord(value: nil, timestamp: header.timestamp, ttlMillis: header.ttl))
                } else {
                    let value = try Value(messagePack: payload)
                    self = .lww(LWWRecord(value: value, timestamp: header.timestamp, ttlMillis: header.ttl))
                }
            case .orMap: self = .orMap(try StatePayload.decodeORSet(payload))
            case .counter: self = .counter(try StatePayload.decodeCounter(payload))
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.corruptRecord, "record payload: \(error)", underlying: error)
        }
    }

}

extension StoreError {
    /// This corruption error, naming the record it was found in.
    func naming(map: String, key: String) -> StoreError {
        code == .corruptRecord ? StoreError(.corruptRecord, "\(map)/\(key): \(message)", underlying: underlying) : self
    }
}

/// One committed change, delivered on the change feed after commit.
public struct Change: Sendable, Equatable {
    public var map: String
    public var key: String
    /// The op-log key of the change; gaps in a subscriber's sequence mean it fell
    /// behind and dropped changes (read them back with `Store.operations(after:)`).
    public var sequence: HLCTimestamp
    public var old: StoredState?
    public var new: StoredState
}
