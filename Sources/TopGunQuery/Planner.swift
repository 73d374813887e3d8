import TopGunCore
import TopGunStore

/// How a query reaches its candidate records.
public enum AccessPath: Sendable, Equatable {
    /// Point reads of these keys, each in its own partition (TopGun's SPEC-047 pruning).
    case keyLookup([String])
    /// Range scans of these partitions only.
    case partitionScan([UInt16])
    /// Ranges of a secondary index.
    case indexScan(IndexDefinition, [IndexRange])
    /// Every partition of the map.
    case fullScan
}

/// A range over an index's indexed-value bytes (nil = open end).
public struct IndexRange: Sendable, Equatable {
    public var lower: [UInt8]?
    public var upper: [UInt8]?
}

/// The chosen plan and the counters of a run.
public struct Explanation: Sendable, CustomStringConvertible {
    public var access: AccessPath
    public var partitionsTouched = 0
    public var recordsExamined = 0
    public var recordsReturned = 0
    /// The index named an entry its record does not match (a damaged index): the
    /// result was read from the records instead (`topgun check` names the index, and
    /// `topgun repair` or `Store.heal(everything:)` fixes it).
    public var indexDamaged = false

    init(plan: Plan) { access = plan.access }

    /// The index used, as `map.path (kind)`, if any.
    public var indexUsed: String? {
        if case .indexScan(let index, _) = access { return "\(index.map).\(index.path) (\(index.kind))" }
        return nil
    }

    public var description: String {
        let path: String
        switch access {
        case .keyLookup(let keys): path = "key lookup of \(keys.count) key(s)"
        case .partitionScan(let ps): path = "scan of \(ps.count) partition(s)"
        case .indexScan(_, let ranges): path = "index scan of \(indexUsed ?? "?"), \(ranges.count) range(s)"
        case .fullScan: path = "full scan"
        }
        return "\(path); partitions touched \(partitionsTouched) of \(Partitioner.partitionCount), "
            + "records examined \(recordsExamined), returned \(recordsReturned)"
            + (indexDamaged ? "; the index is damaged: answered from the records" : "")
    }
}

struct Plan {
    var access: AccessPath
}

/// Chooses, in order: key predicates → point reads; an explicit partition filter →
/// those partitions; a ready secondary index serving one conjunct; else a full scan.
/// The whole predicate is always re-checked on each candidate.
struct Planner {
    let store: Store
    let map: String
    let predicate: QueryPredicate?
    let partitions: [UInt16]?

    func plan() -> Plan {
        let conjuncts = predicate?.conjuncts ?? []
        if var keys = keyConstraint(conjuncts) {
            if let partitions {
                let allowed = Set(partitions)
                keys.removeAll { !allowed.contains(Partitioner.partition(of: $0)) }
            }
            return Plan(access: .keyLookup(keys))
        }
        if let partitions { return Plan(access: .partitionScan(Array(Set(partitions)).sorted())) }
        let indexes = store.indexes(of: map).filter(\.isReady)
        for conjunct in conjuncts {
            if let access = indexAccess(conjunct, indexes) { return Plan(access: access) }
        }
        return Plan(access: .fullScan)
    }

    /// Keys named by `key == "k"` / `key in [...]` conjuncts (intersected).
    func keyConstraint(_ conjuncts: [QueryPredicate]) -> [String]? {
        var keys: Set<String>?
        var order: [String] = []
        for c in conjuncts {
            var named: [String]?
            switch c {
            case .eq(let p, .string(let k)) where QueryPredicate.keyAliases.contains(p): named = [k]
            case .isIn(let p, let values) where QueryPredicate.keyAliases.contains(p):
                named = values.compactMap { if case .string(let s) = $0 { s } else { nil } }
            default: break
            }
            guard let named else { continue }
            if keys == nil { order = named }
            keys = keys.map { $0.intersection(named) } ?? Set(named)
        }
        guard let keys else { return nil }
        var seen = Set<String>()
        return order.filter { keys.contains($0) && seen.insert($0).inserted }
    }

    func indexAccess(_ c: QueryPredicate, _ indexes: [IndexDefinition]) -> AccessPath? {
        func index(_ path: String, rangeOnly: Bool) -> IndexDefinition? {
            indexes.first { $0.path == path && (!rangeOnly || $0.kind == .range) }
        }
        func point(_ idx: IndexDefinition, _ v: Value) -> IndexRange {
            let bytes = store.indexedValue(idx, v)
            return IndexRange(lower: bytes, upper: successor(bytes))
        }
        switch c {
        case .eq(let p, let v):
            guard let idx = index(p, rangeOnly: false) else { return nil }
            return .indexScan(idx, [point(idx, v)])
        case .isIn(let p, let values):
            guard let idx = index(p, rangeOnly: false) else { return nil }
            return .indexScan(idx, values.map { point(idx, $0) })
        case .gt(let p, let v), .gte(let p, let v):
            guard let idx = index(p, rangeOnly: true) else { return nil }
            return .indexScan(idx, [IndexRange(lower: store.indexedValue(idx, v), upper: nil)])
        case .lt(let p, let v):
            guard let idx = index(p, rangeOnly: true) else { return nil }
            return .indexScan(idx, [IndexRange(lower: nil, upper: store.indexedValue(idx, v))])
        case .lte(let p, let v):
            guard let idx = index(p, rangeOnly: true) else { return nil }
            return .indexScan(idx, [IndexRange(lower: nil, upper: successor(store.indexedValue(idx, v)))])
        case .between(let p, let lo, let hi):
            guard let idx = index(p, rangeOnly: true) else { return nil }
            return .indexScan(idx, [IndexRange(lower: store.indexedValue(idx, lo), upper: successor(store.indexedValue(idx, hi)))])
        case .prefix(let p, let prefix):
            guard let idx = index(p, rangeOnly: true) else { return nil }
            let start = OrderedKey.encodePrefix(prefix)
            return .indexScan(idx, [IndexRange(lower: start, upper: successor(start))])
        default:
            return nil
        }
    }

    /// The first byte string greater than every string starting with `bytes`.
    func successor(_ bytes: [UInt8]) -> [UInt8]? { store.indexedValueEnd(ofPrefix: bytes) }
}
