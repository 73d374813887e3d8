import TopGunCore

/// The JSON form, for the CLI and the wire:
/// `{"op":"eq","path":"age","value":18}`, `{"op":"between","path":"age","low":1,"high":9}`,
/// `{"op":"in","path":"id","values":["a","b"]}`, `{"op":"prefix","path":"name","value":"An"}`,
/// `{"op":"exists","path":"email"}`, `{"op":"and","args":[…]}`, `{"op":"not","arg":{…}}`.
extension QueryPredicate: Codable {
    enum CodingKeys: String, CodingKey { case op, path, value, low, high, values, args, arg }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let op = try c.decode(String.self, forKey: .op)
        func path() throws -> String { try c.decode(String.self, forKey: .path) }
        func value() throws -> Value { try c.decode(Value.self, forKey: .value) }
        switch op {
        case "eq": self = .eq(try path(), try value())
        case "neq": self = .neq(try path(), try value())
        case "lt": self = .lt(try path(), try value())
        case "lte": self = .lte(try path(), try value())
        case "gt": self = .gt(try path(), try value())
        case "gte": self = .gte(try path(), try value())
        case "between":
            self = .between(try path(), try c.decode(Value.self, forKey: .low), try c.decode(Value.self, forKey: .high))
        case "in": self = .isIn(try path(), try c.decode([Value].self, forKey: .values))
        case "prefix": self = .prefix(try path(), try c.decode(String.self, forKey: .value))
        case "contains": self = .contains(try path(), try value())
        case "exists": self = .exists(try path())
        case "and": self = .and(try c.decode([QueryPredicate].self, forKey: .args))
        case "or": self = .or(try c.decode([QueryPredicate].self, forKey: .args))
        case "not": self = .not(try c.decode(QueryPredicate.self, forKey: .arg))
        default:
            throw DecodingError.dataCorruptedError(forKey: .op, in: c, debugDescription: "unknown predicate op \(op)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        func put(_ op: String, _ path: String, _ value: Value? = nil) throws {
            try c.encode(op, forKey: .op)
            try c.encode(path, forKey: .path)
            if let value { try c.encode(value, forKey: .value) }
        }
        switch self {
        case .eq(let p, let v): try put("eq", p, v)
        case .neq(let p, let v): try put("neq", p, v)
        case .lt(let p, let v): try put("lt", p, v)
        case .lte(let p, let v): try put("lte", p, v)
        case .gt(let p, let v): try put("gt", p, v)
        case .gte(let p, let v): try put("gte", p, v)
        case .between(let p, let lo, let hi):
            try put("between", p)
            try c.encode(lo, forKey: .low)
            try c.encode(hi, forKey: .high)
        case .isIn(let p, let vs):
            try put("in", p)
            try c.encode(vs, forKey: .values)
        case .prefix(let p, let s): try put("prefix", p, .string(s))
        case .contains(let p, let v): try put("contains", p, v)
        case .exists(let p): try put("exists", p)
        case .and(let ps):
            try c.encode("and", forKey: .op)
            try c.encode(ps, forKey: .args)
        case .or(let ps):
            try c.encode("or", forKey: .op)
            try c.encode(ps, forKey: .args)
        case .not(let p):
            try c.encode("not", forKey: .op)
            try c.encode(p, forKey: .arg)
        }
    }
}
