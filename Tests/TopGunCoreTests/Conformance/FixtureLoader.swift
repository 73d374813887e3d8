import Foundation
import TopGunCore
import TopGunTestSupport

/// Loads `Fixtures/topgun/*.json` (copied from TopGun's vectors) from the repository.
enum Fixture {
    static let directory = repositoryRoot + "/Fixtures/topgun"

    static func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static var vectorFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
    }
}

/// The one place where TopGun's vectors are mapped onto our deliberate differences
/// (DESIGN.md section 2, Fixtures/topgun/SEMANTICS.md):
///
/// 1. Node ids: TopGun's string ids become 64-bit ids that keep their UTF-16
///    code-unit order (`NodeMapping`). Pairs marked `locale_sensitive` follow
///    `codeunit_order_sign`, since we never use locale collation.
/// 2. Equal HLCs with different values: TopGun keeps the first arrival; we keep the
///    greater value digest, the same in either order (`expectedIdenticalStampWinner`).
/// 3. OR-Map `merge()` of one tag seen with two contents: TopGun keeps the local one;
///    we keep the newer timestamp, as TopGun's own `mergeKey` does.
/// 4. Non-strict HLC mode (accept any drift) is `maxDriftMillis: nil`; by default we
///    are strict.
/// 5. Merkle roots (`merkle.json`, `expect_merkle_root`) are informative: our digest
///    includes the value.
struct NodeMapping {
    // Keyed by code units: Swift's String equality is canonical equivalence, which
    // would merge "é" and "e\u{301}", two different TopGun node ids.
    private var ids: [[UInt16]: NodeID] = [:]

    /// Maps every string in `names`, in code-unit order, to 1, 2, 3, …
    init(_ names: some Sequence<String>) {
        let sorted = Set(names.map { Array($0.utf16) }).sorted { $0.lexicographicallyPrecedes($1) }
        for (i, name) in sorted.enumerated() { ids[name] = NodeID(UInt64(i + 1)) }
    }

    subscript(_ name: String) -> NodeID {
        guard let id = ids[Array(name.utf16)] else { fatalError("node \(name) was not collected") }
        return id
    }

    /// Every `nodeId` string and every node part of an HLC-shaped string in `json`.
    static func collect(from json: Any, into names: inout [String]) {
        if let dict = json as? [String: Any] {
            for (key, value) in dict {
                if key == "nodeId", let s = value as? String { names.append(s) }
                collect(from: value, into: &names)
            }
        } else if let array = json as? [Any] {
            for item in array { collect(from: item, into: &names) }
        } else if let s = json as? String {
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count == 3, UInt64(parts[0]) != nil, UInt64(parts[1]) != nil { names.append(String(parts[2])) }
        }
    }

    func timestamp(_ json: Any?) -> HLCTimestamp {
        let t = json as! [String: Any]
        return HLCTimestamp(
            millis: (t["millis"] as! NSNumber).uint64Value,
            counter: (t["counter"] as! NSNumber).uint16Value,
            node: self[t["nodeId"] as! String])
    }

    /// A TopGun tag string `millis:counter:node` as our tag; other strings get a
    /// synthetic tag that is stable within one mapping.
    func tag(_ text: String) -> HLCTimestamp {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 3, let m = UInt64(parts[0]), let c = UInt16(parts[1]) {
            return HLCTimestamp(millis: m, counter: c, node: self[String(parts[2])])
        }
        return HLCTimestamp(millis: 0, counter: UInt16(truncatingIfNeeded: Partitioner.hash(text)), node: NodeID(.max))
    }
}

/// JSON scalar or null to `Value`.
func fixtureValue(_ json: Any?) -> Value? {
    switch json {
    case nil, is NSNull: return nil
    case let s as String: return .string(s)
    case let n as NSNumber:
        return n.doubleValue == n.doubleValue.rounded() ? .int(n.int64Value) : .double(n.doubleValue)
    default: fatalError("unsupported fixture value \(String(describing: json))")
    }
}
