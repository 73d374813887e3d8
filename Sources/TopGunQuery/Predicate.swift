import TopGunCore

/// A filter over the records of a map: field paths (`"address.city"`) of the value,
/// or the record key (`key`, and TopGun's aliases `_key`, `id`, `_id`).
///
/// Comparisons across types follow `Value.compare`'s total order (null < bool <
/// number < string < bytes < array < map), so they never fail: `"age" >= 18` also
/// matches a string age. A missing field matches only `neq` and `not(...)`.
public indirect enum QueryPredicate: Sendable, Hashable {
    case eq(String, Value)
    case neq(String, Value)
    case lt(String, Value)
    case lte(String, Value)
    case gt(String, Value)
    case gte(String, Value)
    /// Inclusive on both ends.
    case between(String, Value, Value)
    case isIn(String, [Value])
    /// The field is a string starting with the prefix.
    case prefix(String, String)
    /// The field is a string containing the substring, or an array containing the value.
    case contains(String, Value)
    case exists(String)
    case and([QueryPredicate])
    case or([QueryPredicate])
    case not(QueryPredicate)

    /// Paths that name the record key.
    public static let keyAliases: Set<String> = ["key", "_key", "id", "_id"]

    /// True when `key`/`value` satisfy the predicate.
    public func matches(key: String, value: Value) -> Bool {
        func field(_ path: String) -> Value? {
            Self.keyAliases.contains(path) ? .string(key) : value[path: path]
        }
        func compare(_ path: String, _ v: Value, _ test: (Int) -> Bool) -> Bool {
            guard let f = field(path) else { return false }
            return test(Value.compare(f, v))
        }
        switch self {
        case .eq(let p, let v): return compare(p, v) { $0 == 0 }
        case .neq(let p, let v): return !compare(p, v) { $0 == 0 }
        case .lt(let p, let v): return compare(p, v) { $0 < 0 }
        case .lte(let p, let v): return compare(p, v) { $0 <= 0 }
        case .gt(let p, let v): return compare(p, v) { $0 > 0 }
        case .gte(let p, let v): return compare(p, v) { $0 >= 0 }
        case .between(let p, let lo, let hi):
            guard let f = field(p) else { return false }
            return Value.compare(f, lo) >= 0 && Value.compare(f, hi) <= 0
        case .isIn(let p, let values):
            guard let f = field(p) else { return false }
            return values.contains { Value.compare(f, $0) == 0 }
        case .prefix(let p, let prefix):
            guard case .string(let s)? = field(p) else { return false }
            return s.utf8.starts(with: prefix.utf8)
        case .contains(let p, let v):
            switch (field(p), v) {
            case (.string(let s)?, .string(let sub)): return sub.isEmpty || s.contains(sub)
            case (.array(let items)?, _): return items.contains { Value.compare($0, v) == 0 }
            default: return false
            }
        case .exists(let p): return field(p) != nil
        case .and(let ps): return ps.allSatisfy { $0.matches(key: key, value: value) }
        case .or(let ps): return ps.contains { $0.matches(key: key, value: value) }
        case .not(let p): return !p.matches(key: key, value: value)
        }
    }

    /// The top-level conjuncts (`and` flattened).
    var conjuncts: [QueryPredicate] {
        if case .and(let ps) = self { return ps.flatMap(\.conjuncts) }
        return [self]
    }

    public static func && (a: QueryPredicate, b: QueryPredicate) -> QueryPredicate { .and(a.conjuncts + b.conjuncts) }
    public static func || (a: QueryPredicate, b: QueryPredicate) -> QueryPredicate { .or([a, b]) }
    public static prefix func ! (a: QueryPredicate) -> QueryPredicate { .not(a) }
}

/// A field path in the predicate builder: `"age" >= 18 && "city" == "Oslo"`.
public struct Field: ExpressibleByStringLiteral, Sendable, Hashable {
    public let path: String
    public init(_ path: String) { self.path = path }
    public init(stringLiteral path: String) { self.path = path }

    public static func == (f: Field, v: Value) -> QueryPredicate { .eq(f.path, v) }
    public static func != (f: Field, v: Value) -> QueryPredicate { .neq(f.path, v) }
    public static func < (f: Field, v: Value) -> QueryPredicate { .lt(f.path, v) }
    public static func <= (f: Field, v: Value) -> QueryPredicate { .lte(f.path, v) }
    public static func > (f: Field, v: Value) -> QueryPredicate { .gt(f.path, v) }
    public static func >= (f: Field, v: Value) -> QueryPredicate { .gte(f.path, v) }

    public func between(_ low: Value, _ high: Value) -> QueryPredicate { .between(path, low, high) }
    public func isIn(_ values: [Value]) -> QueryPredicate { .isIn(path, values) }
    public func hasPrefix(_ prefix: String) -> QueryPredicate { .prefix(path, prefix) }
    public func contains(_ value: Value) -> QueryPredicate { .contains(path, value) }
    public var exists: QueryPredicate { .exists(path) }
}
