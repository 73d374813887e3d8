import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// Corrupted copies of a real database, driven by a seed: bit flips of 1–64 bytes
/// anywhere, garbage and zeroed pages, damaged meta pages, truncation to any length.
/// `check`, `get`, `scan`, `export` and `put` run on each: no command may die by a
/// signal, and none may print a wrong value with exit status 0.
/// `TOPGUN_CORRUPTION_CASES=N` (default 24), `TOPGUN_CORRUPTION_SEED=S`.
@Suite(.timeLimit(.minutes(10)))
struct CorruptionTests {
    static let pageSize = 4096

    /// A database with every CRDT kind, an index and a few thousand records.
    static func build(_ dir: String) throws -> [String: String] {
        var expected: [String: String] = [:]
        let store = try Store(path: dir, options: .init(durability: .durable))
        _ = try store.apply([Mutation.set(map: "users", key: "seed", value: ["age": 1], ttlMillis: nil)])
        expected["seed"] = Value.map(["age": 1]).json
        try store.createIndex(map: "users", path: "age", kind: .range)
        for batch in 0..<30 {
            var mutations: [Mutation] = []
            for i in 0..<100 {
                let n = batch * 100 + i
                let value: Value = ["name": .string("user-\(n)"), "age": .int(Int64(n % 90)), "pad": .string(String(repeating: "x", count: n % 50))]
                mutations.append(.set(map: "users", key: "u\(n)", value: value, ttlMillis: nil))
                expected["u\(n)"] = value.json
                if n % 7 == 0 { mutations.append(.increment(map: "likes", key: "p\(n % 40)", by: 1)) }
                if n % 11 == 0 { mutations.append(.add(map: "tags", key: "t\(n % 30)", value: .string("tag-\(n)"), ttlMillis: nil)) }
                if n % 13 == 0 { mutations.append(.set(map: "users", key: "u\(n - 1)", value: nil, ttlMillis: nil)) }
            }
            _ = try store.apply(mutations)
            for i in 0..<100 where (batch * 100 + i) % 13 == 0 { expected["u\(batch * 100 + i - 1)"] = nil }
        }
        #expect(try store.check().isConsistent)
        return expected
    }

    enum Damage: CustomStringConvertible {
        case flips(Int)
        case garbagePage(Int)
        case zeroPage(Int)
        case meta(Int)
        case truncate(Int)

        var description: String {
            switch self {
            case .flips(let n): "\(n) flipped bytes"
            case .garbagePage(let p): "garbage page \(p)"
            case .zeroPage(let p): "zeroed page \(p)"
            case .meta(let n): "\(n) bytes of meta page damaged"
            case .truncate(let n): "truncated to \(n) bytes"
            }
        }
    }

    static func damage(_ original: [UInt8], _ rng: inout SplitMix64) -> ([UInt8], Damage) {
        var bytes = original
        let pages = bytes.count / pageSize
        switch Int.random(in: 0..<5, using: &rng) {
        case 0:
            let n = Int.random(in: 1...64, using: &rng)
            for _ in 0..<n { bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng) }
            return (bytes, .flips(n))
        case 1:
            let p = Int.random(in: 0..<pages, using: &rng)
            for i in p * pageSize..<(p + 1) * pageSize { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
            return (bytes, .garbagePage(p))
        case 2:
            let p = Int.random(in: 0..<pages, using: &rng)
            for i in p * pageSize..<(p + 1) * pageSize { bytes[i] = 0 }
            return (bytes, .zeroPage(p))
        case 3:
            let n = Int.random(in: 1...8, using: &rng)
            let page = Int.random(in: 0...1, using: &rng)
            for _ in 0..<n { bytes[page * pageSize + Int.random(in: 0..<160, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng) }
            return (bytes, .meta(n))
        default:
            let n = Int.random(in: 0..<bytes.count, using: &rng)
            return (Array(bytes[0..<n]), .truncate(n))
        }
    }

    static func run(_ binary: String, _ args: [String]) throws -> ProcessResult {
        try runTopGun(args)
    }

    @Test func corruptedCopiesNeverCrashAndNeverLie() throws {
        let binary = try #require(CLI.binary, "build the topgun executable first (swift build)")
        let env = ProcessInfo.processInfo.environment
        let cases = env["TOPGUN_CORRUPTION_CASES"].flatMap(Int.init) ?? 24
        let seed = env["TOPGUN_CORRUPTION_SEED"].flatMap(UInt64.init) ?? 0xC0_44_0B7
        try withTemporaryDirectory { root in
            let expected = try Self.build(root + "/original")
            let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: root + "/original/data.mdb")))
            // The undamaged file passes: the verifier has no false alarms on it.
            let healthy = try Self.run(binary, ["check", "--data", root + "/original"])
            #expect(healthy.status == 0 && healthy.out.contains("ok"), "\(healthy.out)")
            var rng = SplitMix64(seed: seed)
            var deaths: [String] = []
            var lies: [String] = []
            var refused = 0
            for c in 0..<cases {
                let dir = root + "/case\(c)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                let (bytes, damage) = Self.damage(original, &rng)
                try Data(bytes).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
                if let keep = env["TOPGUN_CORRUPTION_KEEP"], Int(keep) == c {
                    // Keep one case for a closer look (its original is kept beside it).
                    try? FileManager.default.removeItem(atPath: "/tmp/topgun-corruption-case")
                    try FileManager.default.copyItem(atPath: root, toPath: "/tmp/topgun-corruption-case")
                }
                let key = "u\(Int.random(in: 0..<3_000, using: &rng))"
                let d = ["--data", dir]
                let runs: [(String, [String])] = [
                    ("check", ["check"] + d), ("get", ["get"] + d + ["users", key]), ("scan", ["scan"] + d + ["users"]),
                    ("export", ["export"] + d + [dir + "/out.tgs"]), ("put", ["put"] + d + ["users", "new", "1"]),
                ]
                for (name, args) in runs {
                    let r = try Self.run(binary, args)
                    if r.signalled { deaths.append("case \(c) (\(damage)): \(name) died by signal \(r.status)") }
                    if r.status != 0 { refused += 1 }
                    guard r.status == 0 else { continue }
                    if name == "get" {
                        let answer = r.out.trimmingCharacters(in: .newlines)
                        if answer != (expected[key] ?? "") && !(expected[key] == nil && answer.isEmpty) {
                            lies.append("case \(c) (\(damage)): get \(key) printed \(answer.prefix(60)), stored \(expected[key] ?? "nothing")")
                        }
                    }
                    if name == "scan" {
                        for line in r.out.split(separator: "\n") {
                            let parts = line.split(separator: " ", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                            if parts.count == 2, expected[parts[0]] != parts[1] {
                                lies.append("case \(c) (\(damage)): scan printed \(parts[0]) = \(parts[1].prefix(60))")
                                break
                            }
                        }
                    }
                }
            }
            #expect(deaths.isEmpty, "\(deaths.count) deaths by signal in \(cases) cases (seed \(seed)): \(deaths.prefix(5))")
            #expect(lies.isEmpty, "\(lies.count) wrong values with exit 0 (seed \(seed)): \(lies.prefix(5))")
            print("corruption: \(cases) cases, \(cases * 5) commands, \(refused) refused with an error, \(deaths.count) deaths, \(lies.count) wrong values (seed \(seed))")
        }
    }
}
