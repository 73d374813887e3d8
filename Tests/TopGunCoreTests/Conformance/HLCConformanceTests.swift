import Foundation
import Testing
import TopGunCore
import TopGunTestSupport

struct HLCConformanceTests {
    @Test func orderOfPairs() throws {
        let json = try Fixture.load("hlc_order.json")
        var names: [String] = []
        NodeMapping.collect(from: json, into: &names)
        let nodes = NodeMapping(names)
        let pairs = json["pairs"] as! [[String: Any]]
        #expect(pairs.count >= 20)
        for pair in pairs {
            let a = nodes.timestamp(pair["a"])
            let b = nodes.timestamp(pair["b"])
            let localeSensitive = pair["locale_sensitive"] as? Bool ?? false
            let expected = (pair[localeSensitive ? "codeunit_order_sign" : "expected_sign"] as! NSNumber).intValue
            let sign = a < b ? -1 : (a == b ? 0 : 1)
            #expect(sign == expected, "\(pair)")
            // The 16-byte form sorts the same way, byte by byte.
            let bytesSign = a.bytes.lexicographicallyPrecedes(b.bytes) ? -1 : (a.bytes == b.bytes ? 0 : 1)
            #expect(bytesSign == expected)
        }
    }

    @Test func stringFormAndParsing() throws {
        let json = try Fixture.load("hlc_order.json")
        var names: [String] = []
        NodeMapping.collect(from: json, into: &names)
        let nodes = NodeMapping(names)
        for item in json["toString"] as! [[String: Any]] {
            let ts = nodes.timestamp(item["ts"])
            let topgun = item["string"] as! String
            // Same shape; the node part is our 64-bit id in hex.
            let prefix = topgun.split(separator: ":").prefix(2).joined(separator: ":")
            #expect(ts.description == prefix + ":" + ts.node.description)
            #expect(HLCTimestamp(ts.description) == ts)
        }
        for bad in json["parse_must_throw"] as! [String] {
            #expect(HLCTimestamp(bad) == nil, "\(bad)")
        }
    }

    @Test func clockScenarios() throws {
        let json = try Fixture.load("hlc_clock.json")
        var names: [String] = []
        NodeMapping.collect(from: json, into: &names)
        for s in json["scenarios"] as! [[String: Any]] { names.append(s["nodeId"] as! String) }
        let nodes = NodeMapping(names)
        let scenarios = json["scenarios"] as! [[String: Any]]
        #expect(scenarios.count >= 10)
        for scenario in scenarios {
            let name = scenario["name"] as! String
            let wall = ManualWallClock(0)
            let strict = scenario["strictMode"] as! Bool
            let maxDrift = (scenario["maxDriftMs"] as! NSNumber).uint64Value
            var clock = HybridLogicalClock(
                node: nodes[scenario["nodeId"] as! String], wallClock: wall, maxDriftMillis: strict ? maxDrift : nil)
            for step in scenario["steps"] as! [[String: Any]] {
                wall.set((step["wall"] as! NSNumber).uint64Value)
                if step["op"] as! String == "now" {
                    let got = clock.now()
                    let expect = step["expect"] as! [String: Any]
                    #expect(got.millis == (expect["millis"] as! NSNumber).uint64Value, "\(name)")
                    #expect(got.counter == (expect["counter"] as! NSNumber).uint16Value, "\(name)")
                    #expect(got.node == clock.node)
                    continue
                }
                let remote = nodes.timestamp(step["remote"])
                if let message = step["expect_throws"] as? String {
                    let before = clock.last
                    let error = #expect(throws: HLCError.self, "\(name)") { try clock.receive(remote) }
                    #expect(error?.description == message)
                    #expect(clock.last == before, "state unchanged after a refused stamp")
                } else {
                    try clock.receive(remote)
                    let state = step["expect_state"] as! [String: Any]
                    #expect(clock.last.millis == (state["lastMillis"] as! NSNumber).uint64Value, "\(name)")
                    #expect(clock.last.counter == (state["lastCounter"] as! NSNumber).uint16Value, "\(name)")
                }
            }
        }
    }
}
