import ArgumentParser
import Foundation
import TopGunCore
import TopGunQuery
import TopGunStore

struct QueryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query",
        abstract: "Run a JSON predicate over a map.",
        discussion: #"""
            Example:
              topgun query --data ./topgun-data users '{"op":"gte","path":"age","value":18}' --order age --limit 20
              topgun query --data ./topgun-data users '{"op":"eq","path":"id","value":"u1"}' --explain
            """#)

    @OptionGroup var options: DataOption
    @Argument(help: "Map name.") var map: String
    @Argument(help: "Predicate as JSON.") var predicate: String
    @Option(help: "Sort by this field path (prefix with - for descending).") var order: String?
    @Option(help: "At most this many rows.") var limit: Int?
    @Option(help: "Continue after this cursor (printed by an earlier page).") var after: String?
    @Flag(help: "Print the plan and its counters instead of rows.") var explain = false
    @Option(help: "table or json.") var format: OutputFormat = .table

    func run() async throws {
        let parsed: QueryPredicate
        do {
            parsed = try JSONDecoder().decode(QueryPredicate.self, from: Data(predicate.utf8))
        } catch {
            throw CLIError("malformed predicate JSON: \(error)")
        }
        let store = try options.openForReading()
        guard store.maps[map] != nil else { throw CLIError("unknown map \(map)") }
        var query = Query(store: store, map: map).where(parsed).after(after)
        if let order { query = order.hasPrefix("-") ? query.orderBy(String(order.dropFirst()), descending: true) : query.orderBy(order) }
        if let limit { query = query.limit(limit) }
        let result = try query.run()
        if explain {
            print(result.explanation)
            return
        }
        printRows(result.rows.map { ($0.key, $0.value) }, format: format)
        if let next = result.nextCursor { FileHandle.standardError.write(Data("next page: --after \(next)\n".utf8)) }
    }
}
