import Foundation
import LMDB
import Synchronization
import TopGunCore

/// The storage engine: CRDT records, op log and Merkle digests in one LMDB environment.
///
/// Every change, local or remote, goes through `apply`: one write transaction per
/// batch that merges each op with the stored record and, only when the state changes,
/// writes the record, updates its Merkle bucket and appends one op-log entry under a
/// fresh local HLC. Readers use MVCC snapshots on any thread.
public final class Store: Sendable {
    /// How commits reach the disk.
    public enum Durability: Sendable, Equatable {
        /// Every commit is flushed (fsync) before it returns.
        case durable
        /// The meta page is not flushed: a machine crash may lose the newest commits,
        /// a process crash never.
        case noMetaSync
        /// Flushing is left to the operating system.
        case noSync

        var lmdb: Environment.Durability {
            switch self {
            case .durable: .durable
            case .noMetaSync: .noMetaSync
            case .noSync: .noSync
            }
        }
    }

    /// Open-time settings.
    public struct Options: Sendable {
        public var durability: Durability
        public var mapSize: Int
        public var maxMapSize: Int
        /// Remote stamps further ahead of the local clock are refused.
        public var maxClockDriftMillis: UInt64
        public var wallClock: any WallClock
        /// The node id for a new database (an existing one keeps its stored id).
        public var nodeID: NodeID?
        /// Changes buffered per change-feed subscriber before the oldest are dropped.
        public var changeBufferSize: Int
        /// Most local mutations coalesced into one group commit.
        public var maxGroupSize: Int
        /// Map the file writable (`MDB_WRITEMAP`): commits skip a copy through
        /// `pwrite`, at the cost of exposing the map to stray writes of this process.
        public var writeMap: Bool
        /// How much of an existing data file is verified from its bytes before liblmdb
        /// opens it: `.metaPages` (both meta pages and the file size: microseconds) or
        /// `.full` (every page; see `FileVerifier`).
        public var verification: Verification
        /// Open an existing database for reading only: nothing is created (a missing
        /// one is `StoreError(.notFound)`), a read-only directory works, writes fail.
        public var readOnly: Bool

        public init(
            durability: Durability = .durable, mapSize: Int = 1 << 30, maxMapSize: Int = 1 << 40,
            maxClockDriftMillis: UInt64 = 60_000, wallClock: any WallClock = SystemWallClock(), nodeID: NodeID? = nil,
            changeBufferSize: Int = 4_096, maxGroupSize: Int = 10_000, writeMap: Bool = false, readOnly: Bool = false,
            verification: Verification = .metaPages
        ) {
            self.verification = verification
            self.readOnly = readOnly
            self.writeMap = writeMap
            self.durability = durability
            self.mapSize = mapSize
            self.maxMapSize = maxMapSize
            self.maxClockDriftMillis = maxClockDriftMillis
            self.wallClock = wallClock
            self.nodeID = nodeID
            self.changeBufferSize = changeBufferSize
            self.maxGroupSize = maxGroupSize
        }
    }

    /// How much of a data file is checked before it is opened.
    public enum Verification: Sendable {
        case metaPages
        case full
    }

    struct MapInfo: Sendable {
        let id: UInt32
        let kind: CRDTKind
    }

    struct DBs: Sendable {
        let meta, maps, records, oplog, merkle, index, peers: LMDB.Database
    }

    let env: Environment
    let dbs: DBs
    public let nodeID: NodeID
    public let options: Options
    let clock: Mutex<HybridLogicalClock>
    let mapsByName: Mutex<[String: MapInfo]>
    let mapsByID: Mutex<[UInt32: String]>
    let resolvers = Mutex<[String: ConflictResolver]>([:])
    let horizon: Mutex<HLCTimestamp>
    let indexRegistry: Mutex<[String: [IndexDefinition]]>
    /// The `index.next-id` value the registry was loaded at.
    let indexGeneration = Mutex<[UInt8]?>(nil)
    let feed: ChangeFeed
    /// Bumped after every commit of this process that logged an entry (see
    /// `ChangeSignal`); writes by other processes on the same files are not seen here.
    public let commits = ChangeSignal()
    /// Bumped when a reader meets damage (see `heal()`): a replica node waits on it.
    public let damageSignal = ChangeSignal()
    let notedDamage = Mutex(NotedDamage())
    let healedAtOpenState = Mutex(HealReport())
    /// Write-path counters for metrics.
    public let counters = StoreCounters()

    /// Opens or creates the store in directory `path`.
    ///
    /// - Throws: `StoreError` `.unsupportedSchema` for a database from a newer
    ///   version, `.storage` wrapping `LMDBError` (not a directory, already open,
    ///   corrupt environment, …).
    public init(path: String, options: Options = .init()) throws {
        self.options = options
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if options.readOnly {
            guard exists, FileManager.default.fileExists(atPath: path + "/data.mdb") || !isDirectory.boolValue else {
                throw StoreError(.notFound, "no database at \(path)")
            }
        } else if !exists {
            // Create missing parents too; LMDB itself needs an existing directory.
            try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        if FileManager.default.fileExists(atPath: path + "/data.mdb") {
            let report = FileVerifier.verify(dataFile: path + "/data.mdb", full: options.verification == .full)
            guard report.isIntact else {
                throw StoreError(.corruptFile, "\(path)/data.mdb is damaged: \(report.problems.prefix(3).joined(separator: "; "))")
            }
        }
        do {
            env = try Environment(
                path: path,
                options: .init(
                    databases: Layout.databases, mapSize: options.readOnly ? 0 : options.mapSize, maxMapSize: options.maxMapSize,
                    durability: options.durability.lmdb, writeMap: options.writeMap && !options.readOnly, readOnly: options.readOnly))
        } catch where error.code == .notFound {
            throw StoreError(.notFound, "\(path) is not a TopGun database (a named database is missing)", underlying: error)
        } catch {
            throw StoreError(.storage, "cannot open \(path)", underlying: error)
        }
        dbs = DBs(
            meta: env.database("meta"), maps: env.database("maps"), records: env.database("records"),
            oplog: env.database("oplog"), merkle: env.database("merkle"), index: env.database("index"),
            peers: env.database("peers"))
        let dbs = self.dbs
        let readOnly = options.readOnly
        let (node, highWater, maps, horizon, indexes): (NodeID, HLCTimestamp?, [String: MapInfo], HLCTimestamp, [String: [IndexDefinition]])
        do {
            if !readOnly { try Self.initialize(env, dbs, nodeID: options.nodeID) }
            (node, highWater, maps, horizon, indexes) = try env.read { txn in
                guard let raw = try txn.value(forKey: Layout.Meta.schema, in: dbs.meta) else {
                    throw StoreError(.notFound, "\(path) holds no TopGun database")
                }
                try Self.checkSchema(raw, readOnly: readOnly)
                guard let raw = try txn.value(forKey: Layout.Meta.node, in: dbs.meta), raw.count == 8 else {
                    throw StoreError(.corruptRecord, "\(path): the node id is missing")
                }
                let node = NodeID(raw.withUnsafeBytes { $0.loadBigEndian(as: UInt64.self) })
                let highWater = try txn.value(forKey: Layout.Meta.highWater, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) }
                let horizon = try txn.value(forKey: Layout.Meta.horizon, in: dbs.meta).flatMap { HLCTimestamp(bytes: $0) } ?? .zero
                return (node, highWater, try Self.loadMaps(txn, dbs), horizon, try Self.loadIndexes(txn, dbs))
            }
        } catch let error as LMDBError {
            throw StoreError(.storage, "cannot open \(path)", underlying: error)
        }
        self.nodeID = node
        self.clock = Mutex(
            HybridLogicalClock(
                node: node, wallClock: options.wallClock, maxDriftMillis: options.maxClockDriftMillis, lastIssued: highWater))
        self.mapsByName = Mutex(maps)
        self.mapsByID = Mutex(Dictionary(uniqueKeysWithValues: maps.map { ($0.value.id, $0.key) }))
        self.horizon = Mutex(horizon)
        self.indexRegistry = Mutex(indexes)
        self.feed = ChangeFeed(bufferSize: options.changeBufferSize)
        // An op-log key above the high-water mark is damage that stops every local write
        // (the log is appended in key order): healed before anything else is written.
        if !readOnly, let last = try lastSequence(), last > (highWater ?? .zero) {
            let report = try heal()
            healedAtOpenState.withLock { $0 = report }
        }
    }

    /// What opening this store healed (see `heal(everything:)`): empty unless the op log
    /// held keys above the HLC high-water mark. A replica node logs it.
    public var healedAtOpen: HealReport { healedAtOpenState.withLock { $0 } }

    /// Writes the schema version and a node id into a new database.
    private static func initialize(_ env: Environment, _ dbs: DBs, nodeID: NodeID?) throws {
        try env.write { txn in
            if let raw = try txn.value(forKey: Layout.Meta.schema, in: dbs.meta) {
                let version = schemaVersion(raw)
                if version < Layout.schemaVersion { try migrate(from: version, txn, dbs) }
                try checkSchema(txn.value(forKey: Layout.Meta.schema, in: dbs.meta) ?? raw)
            } else {
                try txn.put([UInt8](bigEndian: Layout.schemaVersion), forKey: Layout.Meta.schema, in: dbs.meta)
            }
            if try txn.value(forKey: Layout.Meta.node, in: dbs.meta) == nil {
                let node = nodeID ?? .random()
                try txn.put([UInt8](bigEndian: node.rawValue), forKey: Layout.Meta.node, in: dbs.meta)
            }
        }
    }

    private static func schemaVersion(_ raw: [UInt8]) -> UInt32 {
        raw.count == 4 ? raw.withUnsafeBytes { $0.loadBigEndian(as: UInt32.self) } : 0
    }

    private static func checkSchema(_ raw: [UInt8], readOnly: Bool = false) throws {
        let version = schemaVersion(raw)
        let readable = readOnly && version >= Layout.oldestReadableSchema && version < Layout.schemaVersion
        guard version == Layout.schemaVersion || readable else {
            let upgrade = version > 0 && version < Layout.schemaVersion ? " (open it once read-write to upgrade it)" : ""
            throw StoreError(.unsupportedSchema, "database schema \(version); this library reads \(Layout.schemaVersion)\(upgrade)")
        }
    }

    /// Gives the database at `path` a fresh random node id, for a copied data directory
    /// (two nodes with one id never exchange writes, and counter slots collide). Stop
    /// every process using the directory first: an open store keeps the id it read.
    ///
    /// - Returns: the old and the new id.
    /// - Throws: `StoreError` when the database cannot be opened.
    public static func resetNodeID(path: String) throws -> (old: NodeID, new: NodeID) {
        let store = try Store(path: path)
        var fresh = NodeID.random()
        while fresh == store.nodeID { fresh = .random() }
        let new = fresh
        try store.write { txn in
            try txn.put([UInt8](bigEndian: new.rawValue), forKey: Layout.Meta.node, in: store.dbs.meta)
        }
        return (store.nodeID, new)
    }

    /// Verifies the data file of the database at `path` from its bytes (every page),
    /// without opening it.
    public static func verifyFile(path: String) -> FileVerifier.Report {
        FileVerifier.verify(dataFile: path + "/data.mdb", full: true)
    }

    /// The highest HLC this node has issued or observed.
    public var clockHighWater: HLCTimestamp { clock.withLock { $0.last } }

    /// Registers a conflict resolver for LWW map `map`. Resolvers live in memory:
    /// register them again after every open, before writing.
    public func register(_ resolver: ConflictResolver, for map: String) {
        resolvers.withLock { $0[map] = resolver }
    }

    /// Flushes commits made with `.noSync` to disk.
    public func sync() throws {
        try env.sync()
    }

    // MARK: Maps

    /// Names and kinds of the maps in the store.
    public var maps: [String: CRDTKind] { mapsByName.withLock { $0.mapValues(\.kind) } }

    func mapInfo(_ name: String) -> MapInfo? { mapsByName.withLock { $0[name] } }

    /// The CRDT kind of map `name`, nil when this store has no such map.
    public func kind(ofMap name: String) -> CRDTKind? { mapInfo(name)?.kind }

    func mapName(_ id: UInt32) -> String? { mapsByID.withLock { $0[id] } }

    /// The map table as stored (`maps`: name → id u32 BE, kind u8).
    static func loadMaps(_ txn: borrowing ReadTransaction, _ dbs: DBs) throws -> [String: MapInfo] {
        var maps: [String: MapInfo] = [:]
        try txn.forEach(in: dbs.maps) { key, value in
            let name = key.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            value.withUnsafeBytes { v in
                if v.count == 5, let kind = CRDTKind(rawValue: v[4]) {
                    maps[name] = MapInfo(id: v.loadBigEndian(as: UInt32.self), kind: kind)
                }
            }
            return true
        }
        return maps
    }

    /// Replaces the cached map table.
    func publishMaps(_ maps: [String: MapInfo]) {
        mapsByName.withLock { $0 = maps }
        mapsByID.withLock { $0 = Dictionary(uniqueKeysWithValues: maps.map { ($0.value.id, $0.key) }) }
    }
}
