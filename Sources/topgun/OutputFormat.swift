import ArgumentParser
import TopGunCore
import TopGunQuery

/// `--format table|json` for commands that print records.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Prints rows as aligned `key  value` lines or one JSON object per line.
func printRows(_ rows: [(key: String, value: Value)], format: OutputFormat) {
    switch format {
    case .json:
        for row in rows { print(Value.map(["key": .string(row.key), "value": row.value]).json) }
    case .table:
        let width = min(40, rows.map(\.key.count).max() ?? 3)
        for row in rows { print(row.key.padding(toLength: max(width, row.key.count), withPad: " ", startingAt: 0) + "  " + row.value.json) }
    }
}
