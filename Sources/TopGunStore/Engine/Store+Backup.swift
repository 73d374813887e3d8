import Foundation
import LMDB
import TopGunCore

/// What a backup or restore produced.
public struct BackupReport: Sendable {
    /// The node id of the copy.
    public var nodeID: NodeID
    /// Bytes of the copied data file.
    public var bytes: Int
    /// The full check of the copy (records, op log, Merkle digests, indexes).
    public var check: CheckReport
}

extension Store {
    /// Writes a hot, consistent, compacted copy of the database into directory `path`
    /// (created; it must not hold a database) and verifies it with a full `check()`.
    /// Writers and replication go on meanwhile; the copy holds every commit made
    /// before the call began. The copy keeps this node's id: restore it with
    /// `Store.restore(from:to:keepNodeID:)`, which gives it a fresh one.
    ///
    /// - Throws: `StoreError(.storage)` when the copy cannot be written (a full disk is
    ///   `.full`), `.corruptRecord` when the copy does not verify.
    @discardableResult
    public func backup(to path: String) throws -> BackupReport {
        try Self.prepareEmptyDirectory(path)
        do {
            try env.copy(toDirectory: path, compact: true)
        } catch {
            try? FileManager.default.removeItem(atPath: path + "/data.mdb")
            throw StoreError(error.code == .noSpace ? .full : .storage, "backup to \(path) failed", underlying: error)
        }
        return try Self.verifyCopy(at: path)
    }

    /// Restores a backup made by `backup(to:)` (or any copy of a data directory) into
    /// `path`, created and empty, and verifies it. The copy gets a fresh node id unless
    /// `keepNodeID` (disaster recovery of the same node whose original is gone for
    /// good): two live nodes with one id never exchange writes.
    @discardableResult
    public static func restore(from source: String, to path: String, keepNodeID: Bool = false) throws -> BackupReport {
        guard FileManager.default.fileExists(atPath: source + "/data.mdb") else {
            throw StoreError(.notFound, "no database at \(source)")
        }
        try prepareEmptyDirectory(path)
        do {
            // Through LMDB, so a restore from a live directory is consistent too.
            let original = try Store(path: source, options: .init(readOnly: true, verification: .full))
            try original.env.copy(toDirectory: path, compact: true)
        } catch let error as LMDBError {
            try? FileManager.default.removeItem(atPath: path + "/data.mdb")
            throw StoreError(error.code == .noSpace ? .full : .storage, "restore into \(path) failed", underlying: error)
        }
        if !keepNodeID { _ = try resetNodeID(path: path) }
        return try verifyCopy(at: path)
    }

    static func prepareEmptyDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw StoreError(.storage, "\(path) exists and is not a directory") }
            guard !FileManager.default.fileExists(atPath: path + "/data.mdb") else {
                throw StoreError(.storage, "\(path) already holds a database")
            }
        } else {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw StoreError(.storage, "cannot create \(path): \(error.localizedDescription)")
            }
        }
    }

    static func verifyCopy(at path: String) throws -> BackupReport {
        let copy = try Store(path: path, options: .init(readOnly: true))
        let report = try copy.check()
        guard report.isConsistent else {
            throw StoreError(.corruptRecord, "the copy at \(path) does not verify: \(report.problems.prefix(3).joined(separator: "; "))")
        }
        let bytes = (try? FileManager.default.attributesOfItem(atPath: path + "/data.mdb")[.size] as? Int) ?? 0
        return BackupReport(nodeID: copy.nodeID, bytes: bytes, check: report)
    }
}
