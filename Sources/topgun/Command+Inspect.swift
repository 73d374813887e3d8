import ArgumentParser
import Foundation
import TopGunCore
import TopGunStore

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a database: maps, partition skew, op log, clock, GC, peers, file usage.",
        discussion: "Example: topgun inspect --data ./topgun-data --json")

    @OptionGroup var options: DataOption
    @Flag(help: "Print one JSON object.") var json = false

    func run() async throws {
        let store = try options.openForReading()
        var maps: [String: Value] = [:]
        for (name, kind) in store.maps.sorted(by: { $0.key < $1.key }) {
            var perPartition = [Int](repeating: 0, count: Partitioner.partitionCount)
            try store.scan(map: name) { key, _ in
                perPartition[Int(Partitioner.partition(of: key))] += 1
                return true
            }
            let total = perPartition.reduce(0, +)
            let top = perPartition.enumerated().sorted { $0.element > $1.element }.prefix(3)
            let mean = Double(total) / Double(Partitioner.partitionCount)
            maps[name] = .map([
                "kind": .string(kind.description), "records": .int(Int64(total)),
                "top_partitions": .array(top.map { .array([.int(Int64($0.offset)), .int(Int64($0.element))]) }),
                "skew": .double(mean > 0 ? ((Double(top.first?.element ?? 0) / mean) * 100).rounded() / 100 : 0),
                "indexes": .array(store.indexes(of: name).map { .string("\($0.path) (\($0.kind)\($0.isReady ? "" : ", building"))") }),
            ])
        }
        let first = try store.firstSequence()
        let last = try store.lastSequence()
        let logCount = try store.opLogCount()
        let now = SystemWallClock().milliseconds()
        let peers: [Value] = try store.peers().map { p in
            var fields: [String: Value] = [
                "node": .string(p.node.description), "cursor": .string(p.cursor.description),
                "last_seen_ms_ago": .int(Int64(now) - Int64(p.lastSeenMillis)),
                // Pull: how far this node is behind on the peer's log; push: how far the
                // peer had acknowledged this node's log at the last GC run.
                "cursor_lag_ms": .int(Int64(now) - Int64(p.cursor.millis)),
                "acknowledged": .string(p.acknowledged.description),
                "acknowledged_lag_ms": .int(p.acknowledged == .zero ? -1 : Int64(now) - Int64(p.acknowledged.millis)),
                "refused_beyond_gc_horizon": .int(Int64(p.refusedBeyondHorizon)),
                "scope": p.scope.map { s in
                    .map([
                        "maps": s.maps.isEmpty ? .string("all") : .array(s.maps.map { .string($0) }),
                        "partitions": s.partitions.isEmpty ? .string("all") : .array(s.partitions.map { .int(Int64($0)) }),
                    ])
                } ?? .null,
            ]
            // The principal the node id is bound to: a user's app, or a replica.
            fields["principal"] = .string(p.user.map { "user:\($0)" } ?? "replica")
            fields["writes_rejected"] = .int(Int64(p.writesRejected))
            // Its clock minus this node's at the last handshake, and what was refused
            // for stamps beyond the drift bound.
            fields["clock_offset_ms"] = .int(p.clockOffsetMillis)
            fields["refused_for_clock_drift"] = .int(Int64(p.refusedForClockDrift))
            if p.refusedBeyondHorizon > 0 {
                fields["needs_repair"] = .string("writes from this peer older than the GC horizon were refused: topgun repair --from <its address>")
            }
            return .map(fields)
        }
        let damage = try store.damageTotals()
        let outstanding = try store.quarantinedRecords()
        let info = store.environmentInfo
        var fileBytes = 0
        if let attributes = try? FileManager.default.attributesOfItem(atPath: options.data + "/data.mdb") {
            fileBytes = (attributes[.size] as? Int) ?? 0
        }
        let summary: Value = .map([
            "node": .string(store.nodeID.description),
            "maps": .map(maps),
            "oplog": .map([
                "entries": .int(Int64(logCount)), "first": first.map { .string($0.description) } ?? .null,
                "last": last.map { .string($0.description) } ?? .null,
            ]),
            "hlc_high_water": .string(store.clockHighWater.description),
            "gc": .map([
                "horizon": .string(store.garbageCollectionHorizon.description),
                "log_truncated_through": try store.logTruncatedThrough().map { .string($0.description) } ?? .null,
                "last_run_ms_ago": try store.lastGarbageCollection().map { .int(Int64(now) - Int64($0)) } ?? .null,
            ]),
            "peers": .array(peers),
            // Damaged records removed to be fetched again from a peer (`Store.heal`).
            "damage": .map([
                "quarantined_total": .int(Int64(clamping: damage.quarantined)), "restored_total": .int(Int64(clamping: damage.restored)),
                "outstanding": .array(outstanding.map { .string($0) }),
            ]),
            "storage": .map([
                "map_size": .int(Int64(info.mapSize)), "used_bytes": .int(Int64((info.lastPageNumber + 1) * info.pageSize)),
                "file_bytes": .int(Int64(fileBytes)), "page_size": .int(Int64(info.pageSize)),
            ]),
        ])
        if json {
            print(summary.json)
            return
        }
        print("node \(store.nodeID)")
        for (name, m) in maps.sorted(by: { $0.key < $1.key }) {
            print("map \(name): \(m[path: "kind"]!.json) \(m[path: "records"]!.json) records, skew \(m[path: "skew"]!.json), top partitions \(m[path: "top_partitions"]!.json), indexes \(m[path: "indexes"]!.json)")
        }
        print("op log: \(logCount) entries, \(first?.description ?? "-") … \(last?.description ?? "-")")
        print("hlc high-water: \(store.clockHighWater)")
        print("gc: horizon \(store.garbageCollectionHorizon), log truncated through \(try store.logTruncatedThrough()?.description ?? "-")")
        if damage.quarantined > 0 {
            print(
                "damage: \(damage.quarantined) damaged records removed, \(damage.restored) restored from peers\(outstanding.isEmpty ? "" : "; still missing: \(outstanding.prefix(10).joined(separator: ", "))")")
        }
        for p in peers { print("peer \(p.json)") }
        print("storage: \(summary[path: "storage"]!.json)")
    }
}
