import Foundation
import Testing
import TopGunCore
import TopGunQuery
import TopGunStore
import TopGunTestSupport

/// Random documents with numbers, strings, nested maps, arrays and missing fields.
func randomDocument(_ i: Int, _ rng: inout SplitMix64) -> Value {
    var fields: [String: Value] = ["n": .int(Int64(i))]
    if Int.random(in: 0..<10, using: &rng) > 0 {
        fields["age"] = Bool.random(using: &rng)
            ? .int(Int64.random(in: 0..<100, using: &rng)) : .double(Double(Int.random(in: 0..<200, using: &rng)) / 2)
    }
    if Int.random(in: 0..<10, using: &rng) > 1 {
        fields["city"] = .string(["Oslo", "Bergen", "Paris", "Pune", "Lima"].randomElement(using: &rng)!)
    }
    if Bool.random(using: &rng) { fields["tags"] = .array([.string("a"), .string(["x", "y"].randomElement(using: &rng)!)]) }
    if Bool.random(using: &rng) { fields["address"] = .map(["zip": .int(Int64.random(in: 0..<20, using: &rng))]) }
    if Int.random(in: 0..<20, using: &rng) == 0 { fields["age"] = .string("unknown") }
    return .map(fields)
}

func randomPredicate(_ rng: inout SplitMix64, keys: Int, depth: Int = 2) -> QueryPredicate {
    let paths = ["age", "city", "tags", "address.zip", "n", "missing", "key", "id"]
    func value(for path: String) -> Value {
        switch path {
        case "city": .string(["Oslo", "Bergen", "Paris", "Pune", "Lima", "P"].randomElement(using: &rng)!)
        case "key", "id", "_id", "_key": .string("k\(Int.random(in: 0..<keys, using: &rng))")
        case "tags": .string(["a", "x", "y", "z"].randomElement(using: &rng)!)
        default: Bool.random(using: &rng) ? .int(Int64.random(in: 0..<100, using: &rng)) : .double(Double(Int.random(in: 0..<200, using: &rng)) / 2)
        }
    }
    let path = paths.randomElement(using: &rng)!
    switch Int.random(in: 0..<(depth > 0 ? 15 : 12), using: &rng) {
    case 0: return .eq(path, value(for: path))
    case 1: return .neq(path, value(for: path))
    case 2: return .lt(path, value(for: path))
    case 3: return .lte(path, value(for: path))
    case 4: return .gt(path, value(for: path))
    case 5: return .gte(path, value(for: path))
    case 6:
        let (a, b) = (value(for: path), value(for: path))
        return Value.compare(a, b) <= 0 ? .between(path, a, b) : .between(path, b, a)
    case 7: return .isIn(path, (0..<Int.random(in: 1...4, using: &rng)).map { _ in value(for: path) })
    case 8: return .prefix(["city", "key"].randomElement(using: &rng)!, ["P", "O", "k1", "Pa", ""].randomElement(using: &rng)!)
    case 9: return .contains(["tags", "city"].randomElement(using: &rng)!, .string(["a", "x", "is", "n"].randomElement(using: &rng)!))
    case 10: return .exists(path)
    case 11: return .eq("city", value(for: "city"))
    case 12: return .and((0..<Int.random(in: 2...3, using: &rng)).map { _ in randomPredicate(&rng, keys: keys, depth: depth - 1) })
    case 13: return .or((0..<2).map { _ in randomPredicate(&rng, keys: keys, depth: depth - 1) })
    default: return .not(randomPredicate(&rng, keys: keys, depth: depth - 1))
    }
}

@Suite(.timeLimit(.minutes(2)))
struct QueryTests {
    func withData(_ count: Int, seed: UInt64, _ body: (Database, [String: Value], inout SplitMix64) async throws -> Void) async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir, options: .init(durability: .noSync))
            var rng = SplitMix64(seed: seed)
            var model: [String: Value] = [:]
            var mutations: [Mutation] = []
            for i in 0..<count {
                let doc = randomDocument(i, &rng)
                model["k\(i)"] = doc
                mutations.append(.set(map: "docs", key: "k\(i)", value: doc, ttlMillis: nil))
            }
            _ = try db.store.apply(mutations)
            try await body(db, model, &rng)
        }
    }

    @Test func everyPlanAgreesWithBruteForce() async throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["TOPGUN_QUERY_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max)
        try await withData(1_500, seed: seed) { db, initial, rng in
            var model = initial
            try db.createIndex(map: "docs", path: "age", kind: .range)
            try db.createIndex(map: "docs", path: "city", kind: .hash)
            try db.createIndex(map: "docs", path: "address.zip", kind: .range)
            var plans: [String: Int] = [:]
            for round in 0..<1_200 {
                if round % 100 == 0 {
                    // Writes between queries: indexes must follow updates and deletes.
                    var mutations: [Mutation] = []
                    for _ in 0..<50 {
                        let key = "k\(Int.random(in: 0..<1_600, using: &rng))"
                        if Int.random(in: 0..<4, using: &rng) == 0 {
                            model[key] = nil
                            mutations.append(.set(map: "docs", key: key, value: nil, ttlMillis: nil))
                        } else {
                            let doc = randomDocument(round, &rng)
                            model[key] = doc
                            mutations.append(.set(map: "docs", key: key, value: doc, ttlMillis: nil))
                        }
                    }
                    _ = try db.store.apply(mutations)
                }
                let predicate = randomPredicate(&rng, keys: 1_600)
                var query = db.query("docs").where(predicate)
                var partitions: Set<UInt16>?
                if Int.random(in: 0..<8, using: &rng) == 0 {
                    partitions = Set((0..<5).map { _ in UInt16.random(in: 0..<271, using: &rng) })
                    query = query.partitions(Array(partitions!))
                }
                // Every other query through the async variant (its own thread).
                let result = round % 2 == 0 ? try query.run() : try await query.runInBackground()
                let expected = model.filter { key, value in
                    predicate.matches(key: key, value: value)
                        && (partitions?.contains(Partitioner.partition(of: key)) ?? true)
                }.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                #expect(result.rows.map(\.key) == expected, "seed \(seed) round \(round): \(predicate)")
                plans["\(result.explanation.access)".prefix(8).description, default: 0] += 1
            }
            // The random queries exercised every access path.
            #expect(plans.count == 4, "\(plans)")
        }
    }

    @Test func keyPredicatesArePrunedToTheirPartitions() async throws {
        try await withData(3_000, seed: 1) { db, _, _ in
            let one = try db.query("docs").where("id" == "k42").explain()
            #expect(one.partitionsTouched == 1 && one.recordsExamined == 1 && one.recordsReturned == 1)
            let three = try db.query("docs").where(Field("_key").isIn(["k1", "k2", "k3"])).explain()
            #expect(three.partitionsTouched <= 3 && three.recordsExamined == 3)
            let both = try db.query("docs").where("key" == "k7" && "n" == 7).run()
            #expect(both.rows.map(\.key) == ["k7"])
            let scan = try db.query("docs").where("n" == 7).explain()
            #expect(scan.access == .fullScan && scan.partitionsTouched == 271 && scan.recordsExamined == 3_000)
        }
    }

    @Test func indexesServeRangesAndReportThemselves() async throws {
        try await withData(3_000, seed: 2) { db, model, _ in
            var progress: [IndexBuildProgress] = []
            try db.store.createIndex(map: "docs", path: "n", kind: .range, chunkSize: 1_000) { progress.append($0) }
            #expect(progress.count == 3 && progress.last?.recordsIndexed == 3_000)
            let result = try db.query("docs").where(Field("n").between(100, 129)).run()
            #expect(result.rows.count == 30)
            #expect(result.explanation.indexUsed == "docs.n (range)")
            #expect(result.explanation.recordsExamined == 30)
            let ordered = try db.query("docs").where("n" < 5).orderBy("n", descending: true).run()
            #expect(ordered.rows.map(\.key) == ["k4", "k3", "k2", "k1", "k0"])
            #expect(model.count == 3_000)
        }
    }

    @Test func cursorPagesStayCorrectWhileWritesHappen() async throws {
        try await withData(500, seed: 3) { db, _, _ in
            var seen: [String] = []
            var cursor: String?
            var page = 0
            repeat {
                let result = try db.query("docs").where(Field("n").exists).orderBy("n").limit(40).after(cursor).run()
                seen += result.rows.map(\.key)
                cursor = result.nextCursor
                // A write after each page: moves a not-yet-seen record, adds one.
                _ = try db.store.apply([Mutation.set(map: "docs", key: "new\(page)", value: ["n": 10_000], ttlMillis: nil)])
                page += 1
            } while cursor != nil
            #expect(seen.count == Set(seen).count, "no duplicates across pages")
            #expect(Array(seen.prefix(500)) == (0..<500).map { "k\($0)" })
            let error = #expect(throws: QueryError.self) { try db.query("docs").after("zz").run() }
            #expect(error?.code == .malformedCursor)
        }
    }

    @Test func predicatesRoundTripThroughJSON() throws {
        let p: QueryPredicate = ("age" >= 18 && Field("city").isIn(["Oslo", "Lima"])) || !Field("email").exists
            || Field("name").hasPrefix("An") || Field("tags").contains("x") || Field("n").between(1, 2.5)
        let data = try JSONEncoder().encode(p)
        #expect(try JSONDecoder().decode(QueryPredicate.self, from: data) == p)
        let text = #"{"op":"and","args":[{"op":"gte","path":"age","value":18},{"op":"eq","path":"id","value":"u1"}]}"#
        #expect(try JSONDecoder().decode(QueryPredicate.self, from: Data(text.utf8)) == .and([.gte("age", 18), .eq("id", "u1")]))
    }

    @Test func mixedTypesFollowTheTotalOrder() {
        let ordered: [Value] = [.null, false, true, -1.5, 0, 1, 1.5, "", "a", .bytes([0]), [], [:]]
        for (i, a) in ordered.enumerated() {
            for (j, b) in ordered.enumerated() {
                let c = Value.compare(a, b)
                #expect(c == (i < j ? -1 : i == j ? 0 : 1), "\(a) vs \(b)")
                let (ka, kb) = (OrderedKey.encode(a), OrderedKey.encode(b))
                if a.isScalar && b.isScalar { #expect(ka.lexicographicallyPrecedes(kb) == (i < j), "\(a) vs \(b)") }
            }
        }
        // Strings order by their bytes, as in a range index: canonically equivalent
        // strings with different bytes are not equal (a comparator that called them
        // equal but ordered each differently against a third string was not a total order).
        let composed = Value.string("\u{e9}")
        let decomposed = Value.string("e\u{301}")
        #expect(Value.compare(composed, decomposed) == 1 && Value.compare(decomposed, composed) == -1)
        #expect(OrderedKey.encode(decomposed).lexicographicallyPrecedes(OrderedKey.encode(composed)))
        #expect(Value.compare(.int(3), .double(3)) == 0)
        #expect(OrderedKey.encode(.int(3)) == OrderedKey.encode(.double(3)))
        #expect(Value.compare(.int(.max), .double(9.3e18)) == -1)
    }
}

extension Value {
    var isScalar: Bool {
        switch self {
        case .array, .map: false
        default: true
        }
    }
}
