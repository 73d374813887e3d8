import ArgumentParser
import Foundation
import TopGunCore
import TopGunQuery
import TopGunStore

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a live query: the current rows, then enter/update/leave lines as changes commit.",
        discussion: #"Example: topgun watch --data ./topgun-data users '{"op":"gte","path":"age","value":18}'"#)

    @OptionGroup var options: DataOption
    @Argument(help: "Map name.") var map: String
    @Argument(help: "Predicate as JSON (default: everything).") var predicate: String?

    func run() async throws {
        let store = try options.openForReading()
        var query = Query(store: store, map: map)
        if let predicate {
            guard let parsed = try? JSONDecoder().decode(QueryPredicate.self, from: Data(predicate.utf8)) else {
                throw CLIError("malformed predicate JSON")
            }
            query = query.where(parsed)
        }
        // Tail the op log, so writes of other processes (topgun put, topgun serve) show too.
        let initial = try query.run()
        var current: [String: Value] = [:]
        for row in initial.rows {
            current[row.key] = row.value
            emit("initial", row.key, row.value)
        }
        var cursor = try store.lastSequence()
        while true {
            let entries = try store.operations(after: cursor, limit: 1_000)
            for entry in entries where entry.operation.map == map {
                let key = entry.operation.key
                let now = try query.where(.eq("key", .string(key))).run().rows.first
                switch (current[key], now) {
                case (nil, let row?): emit("enter", key, row.value)
                case (let old?, let row?) where old != row.value: emit("update", key, row.value)
                case (_?, nil): emit("leave", key, nil)
                default: break
                }
                current[key] = now?.value
            }
            if let last = entries.last { cursor = last.sequence } else { try await Task.sleep(for: .milliseconds(100)) }
        }
    }

    func emit(_ event: String, _ key: String, _ value: Value?) {
        var fields: [String: Value] = ["event": .string(event), "key": .string(key)]
        if let value { fields["value"] = value }
        print(Value.map(fields).json)
        fflush(nil)
    }
}
