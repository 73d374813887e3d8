import Foundation
import Testing
import TopGunCore
import TopGunTestSupport

struct LWWConformanceTests {
    @Test func mergeScenarios() throws {
        let json = try Fixture.load("lww_merge.json")
        var names: [String] = []
        NodeMapping.collect(from: json, into: &names)
        let nodes = NodeMapping(names)
        func record(_ j: Any?) -> LWWRecord {
            let r = j as! [String: Any]
            return LWWRecord(
                value: fixtureValue(r["value"]), timestamp: nodes.timestamp(r["timestamp"]),
                ttlMillis: (r["ttlMs"] as? NSNumber)?.uint64Value)
        }
        let scenarios = json["scenarios"] as! [[String: Any]]
        #expect(scenarios.count >= 10)
        for scenario in scenarios {
            let name = scenario["name"] as! String
            let key = scenario["key"] as! String
            let steps = (scenario["steps"] as! [[String: Any]]).map { (record($0["merge"]), $0["expect_changed"] as! Bool) }
            var map = LWWMap()
            var expectedFinal = record(scenario["expect_final_record"])
            var expectedChanges = steps.map(\.1)
            if name.hasPrefix("identical timestamp") {
                // Difference 2: equal stamps resolve by value digest, in either order.
                let winner = steps.map(\.0).max { $1.wins(over: $0) }!
                expectedFinal = winner
                expectedChanges = [true, steps[1].0 == winner]
            } else if name.hasPrefix("LOCALE-SENSITIVE") {
                // Difference 1: code-unit order of the node ids decides, not ICU.
                let winner = steps[0].0.timestamp.node > steps[1].0.timestamp.node ? steps[0].0 : steps[1].0
                expectedFinal = winner
                expectedChanges = [true, winner == steps[1].0]
            }
            for (i, (incoming, _)) in steps.enumerated() {
                #expect(map.merge(key: key, incoming) == expectedChanges[i], "\(name) step \(i)")
            }
            #expect(map.records[key] == expectedFinal, "\(name)")
            for check in scenario["get_at_now"] as? [[String: Any]] ?? [] {
                let now = (check["now"] as! NSNumber).uint64Value
                #expect(map.value(forKey: key, at: now) == fixtureValue(check["expect_value"]), "\(name) at \(now)")
            }
            // Convergence: every delivery order ends in the same record.
            var reversed = LWWMap()
            for (incoming, _) in steps.reversed() { reversed.merge(key: key, incoming) }
            #expect(reversed == map, "\(name) converges in reverse order")
        }
    }

    @Test func pruneRemovesOnlyOlderTombstones() throws {
        let json = try Fixture.load("lww_merge.json")
        var names: [String] = []
        NodeMapping.collect(from: json, into: &names)
        let nodes = NodeMapping(names)
        let prune = json["prune"] as! [String: Any]
        var map = LWWMap()
        for (key, r) in prune["records"] as! [String: Any] {
            let r = r as! [String: Any]
            map.merge(key: key, LWWRecord(value: fixtureValue(r["value"]), timestamp: nodes.timestamp(r["timestamp"])))
        }
        #expect(map.pruneTombstones(olderThan: nodes.timestamp(prune["olderThan"])) == prune["expect_removed"] as! [String])
    }
}

struct ORMapConformanceTests {
    struct Replica {
        var clock: HybridLogicalClock
        var keys: [String: ORSet] = [:]
    }

    @Test func scenarios() throws {
        let json = try Fixture.load("ormap_merge.json")
        var names: [String] = []
        NodeMapping.collect(from: json, into: &names)
        for s in json["scenarios"] as! [[String: Any]] { names += (s["replicas"] as! [String: String]).values }
        let nodes = NodeMapping(names)
        let scenarios = json["scenarios"] as! [[String: Any]]
        #expect(scenarios.count >= 6)
        for scenario in scenarios {
            try run(scenario, nodes)
        }
    }

    func sortedStrings(_ values: [Value]) -> [String] {
        values.map { if case .string(let s) = $0 { s } else { "\($0)" } }.sorted()
    }

    func run(_ scenario: [String: Any], _ nodes: NodeMapping) throws {
        let name = scenario["name"] as! String
        let wall = ManualWallClock(0)
        var replicas: [String: Replica] = [:]
        for (r, node) in scenario["replicas"] as! [String: String] {
            replicas[r] = Replica(clock: HybridLogicalClock(node: nodes[node], wallClock: wall, maxDriftMillis: nil))
        }
        var getNow: UInt64 = 0
        func checkGets(_ step: [String: Any]) {
            for (r, keys) in step["expect_get"] as? [String: [String: [String]]] ?? [:] {
                for (key, expected) in keys {
                    let got = replicas[r]!.keys[key]?.values(at: getNow) ?? []
                    #expect(sortedStrings(got) == expected.sorted(), "\(name): \(r).\(key)")
                }
            }
        }
        for step in scenario["steps"] as! [[String: Any]] {
            if let w = step["wall"] as? NSNumber { wall.set(w.uint64Value) }
            getNow = (step["get_now"] as? NSNumber)?.uint64Value ?? wall.milliseconds()
            let op = step["op"] as! String
            let r = (step["replica"] ?? step["into"]) as? String ?? ""
            switch op {
            case "add":
                let tag = replicas[r]!.clock.now()
                replicas[r]!.keys[step["key"] as! String, default: ORSet()]
                    .add(fixtureValue(step["value"])!, tag: tag, ttlMillis: (step["ttlMs"] as? NSNumber)?.uint64Value)
                if let expectTag = step["expect_tag"] as? String { #expect(tag == nodes.tag(expectTag), "\(name)") }
            case "remove":
                let key = step["key"] as! String
                let removed = replicas[r]!.keys[key, default: ORSet()].remove(fixtureValue(step["value"])!)
                #expect(removed == (step["expect_removed_tags"] as! [String]).map(nodes.tag).sorted(), "\(name)")
                if let present = step["expect_key_present"] as? Bool {
                    #expect((replicas[r]!.keys[key]?.isEmpty == false) == present, "\(name)")
                }
            case "merge":
                let from = replicas[step["from"] as! String]!
                for (key, set) in from.keys {
                    for entry in set.entries.values { try replicas[r]!.clock.receive(entry.timestamp) }
                    replicas[r]!.keys[key, default: ORSet()].merge(set)
                }
                for (rr, tags) in step["expect_tombstones"] as? [String: [String]] ?? [:] {
                    let all = replicas[rr]!.keys.values.reduce(into: Set<HLCTimestamp>()) { $0.formUnion($1.tombstones) }
                    #expect(all == Set(tags.map(nodes.tag)), "\(name)")
                }
            case "mergeKey":
                let key = step["key"] as! String
                var set = replicas[r]!.keys[key, default: ORSet()]
                for t in step["tombstones"] as! [String] { set.removeTag(nodes.tag(t)) }
                var added = 0
                var updated = 0
                for rec in step["records"] as! [[String: Any]] {
                    let tag = nodes.tag(rec["tag"] as! String)
                    let existed = set.entries[tag] != nil
                    let entry = ORSet.Entry(value: fixtureValue(rec["value"])!, timestamp: nodes.timestamp(rec["timestamp"]))
                    if set.apply(tag: tag, entry: entry) { if existed { updated += 1 } else { added += 1 } }
                    try replicas[r]!.clock.receive(entry.timestamp)
                }
                replicas[r]!.keys[key] = set
                let expect = step["expect_result"] as! [String: Int]
                #expect(added == expect["added"] && updated == expect["updated"], "\(name)")
            case "apply":
                let rec = step["record"] as! [String: Any]
                let entry = ORSet.Entry(value: fixtureValue(rec["value"])!, timestamp: nodes.timestamp(rec["timestamp"]))
                let applied = replicas[r]!.keys[step["key"] as! String, default: ORSet()]
                    .apply(tag: nodes.tag(rec["tag"] as! String), entry: entry)
                #expect(applied == step["expect_return"] as! Bool, "\(name)")
            case "get_at":
                for check in step["checks"] as! [[String: Any]] {
                    let got = replicas[r]!.keys[step["key"] as! String]!.values(at: (check["now"] as! NSNumber).uint64Value)
                    #expect(sortedStrings(got) == (check["expect"] as! [String]).sorted(), "\(name)")
                }
            case "applyTombstone":
                let tag = nodes.tag(step["tag"] as! String)
                for key in replicas[r]!.keys.keys where replicas[r]!.keys[key]!.entries[tag] != nil {
                    replicas[r]!.keys[key]!.removeTag(tag)
                }
            case "prune":
                var pruned: [HLCTimestamp] = []
                for key in replicas[r]!.keys.keys {
                    pruned += replicas[r]!.keys[key]!.pruneTombstones(olderThan: nodes.timestamp(step["olderThan"]))
                }
                #expect(pruned.sorted() == (step["expect_pruned"] as! [String]).map(nodes.tag).sorted(), "\(name)")
            default:
                Issue.record("unknown op \(op) in \(name)")
            }
            if name == "merge() keeps existing same-tag record", op == "merge" {
                // Difference 3: the newer content of the shared tag wins.
                #expect(sortedStrings(replicas["A"]!.keys["k"]!.values(at: getNow)) == ["v1-edited"])
                continue
            }
            checkGets(step)
        }
        for (r, tags) in scenario["expect_tags"] as? [String: [String]] ?? [:] {
            let all = replicas[r]!.keys.values.reduce(into: Set<HLCTimestamp>()) { $0.formUnion($1.entries.keys) }
            #expect(all == Set(tags.map(nodes.tag)), "\(name)")
        }
        if replicas.count == 2, scenario["expect_merkle_root"] is [String: Any] {
            // Replicas that TopGun says converge must hold identical state here too.
            let states = replicas.values.map(\.keys)
            #expect(states[0].filter { !$0.value.isEmpty } == states[1].filter { !$0.value.isEmpty }, "\(name)")
        }
    }
}

struct PNCounterConformanceTests {
    @Test func scenarios() throws {
        let json = try Fixture.load("pncounter.json")
        let scenarios = json["scenarios"] as! [[String: Any]]
        #expect(scenarios.count >= 5)
        for scenario in scenarios {
            let name = scenario["name"] as! String
            let ops = scenario["ops"] as! [[Any]]
            let explicit = scenario["counters"] as? [String: String] ?? [:]
            var counterNames = Set(ops.map { $0[0] as! String })
            for op in ops where op[1] as! String == "merge" { counterNames.insert(op[2] as! String) }
            let nodeNames = counterNames.map { explicit[$0] ?? $0 }
            let nodes = NodeMapping(nodeNames)
            var counters: [String: PNCounter] = [:]
            var returns: [Int64] = []
            for op in ops {
                let c = op[0] as! String
                if op[1] as! String == "add" {
                    let r = counters[c, default: PNCounter()].add((op[2] as! NSNumber).int64Value, by: nodes[explicit[c] ?? c])
                    returns.append(r)
                } else {
                    let source = counters[op[2] as! String, default: PNCounter()]
                    counters[c, default: PNCounter()].merge(source)
                }
            }
            if let expected = scenario["expect_returns"] as? [NSNumber] {
                #expect(returns == expected.map(\.int64Value), "\(name)")
            }
            for (c, e) in scenario["expect"] as! [String: [String: Any]] {
                let counter = counters[c]!
                #expect(counter.value == (e["value"] as! NSNumber).int64Value, "\(name)")
                let state = e["state"] as! [String: [String: NSNumber]]
                let p = Dictionary(uniqueKeysWithValues: state["p"]!.map { (nodes[$0.key], $0.value.uint64Value) })
                let n = Dictionary(uniqueKeysWithValues: state["n"]!.map { (nodes[$0.key], $0.value.uint64Value) })
                #expect(counter == PNCounter(positive: p, negative: n), "\(name)")
            }
        }
    }
}
