import Foundation
import Synchronization
import TopGunStore

/// Who may read and write which records, loaded from a JSON policy file
/// (`topgun serve --policy FILE`):
///
/// ```json
/// {"rules": [
///   {"who": "role:replica", "maps": "*",      "allow": ["read", "write"]},
///   {"who": "*",            "maps": "public", "allow": ["read"]},
///   {"who": "*",            "maps": "notes",  "keys": "{sub}:*", "allow": ["read", "write"]},
///   {"who": "role:banned",  "maps": "*",      "deny":  ["read", "write"]}
/// ]}
/// ```
///
/// `who` is `*` (any authenticated principal), `user:SUB` or `role:ROLE`; `maps` a name
/// or glob (or a list of them); `keys` an optional glob in which `{sub}` is the caller's
/// subject. Deny by default; a matching deny wins over any allow.
public struct Policy: Sendable, Equatable {
    public enum Action: String, Sendable, Codable, Hashable {
        case read
        case write
    }

    /// One rule.
    public struct Rule: Sendable, Equatable {
        public enum Who: Sendable, Hashable {
            case anyone
            case user(String)
            case role(String)
        }
        public var who: Who
        var maps: [Glob]
        var keys: Glob?
        public var allow: Set<Action>
        public var deny: Set<Action>

        func applies(to principal: Principal) -> Bool {
            switch who {
            case .anyone: true
            // Exact: String `==` would also match canonically equivalent spellings.
            case .user(let sub): principal.subject.utf8.elementsEqual(sub.utf8)
            case .role(let role): principal.roles.contains { $0.utf8.elementsEqual(role.utf8) }
            }
        }

        func covers(map: String) -> Bool { maps.contains { $0.matches(map) } }
    }

    public var rules: [Rule]

    /// Parses a policy document.
    ///
    /// - Throws: `ReplicationError(.badPolicy)` naming the rule that is wrong.
    public init(json: [UInt8]) throws(ReplicationError) {
        struct RawRule: Decodable {
            enum Maps: Decodable {
                case one(String)
                case many([String])
                init(from decoder: any Decoder) throws {
                    let c = try decoder.singleValueContainer()
                    if let s = try? c.decode(String.self) { self = .one(s) } else { self = .many(try c.decode([String].self)) }
                }
                var list: [String] {
                    switch self {
                    case .one(let s): [s]
                    case .many(let l): l
                    }
                }
            }
            var who: String
            var maps: Maps
            var keys: String?
            var allow: [String]?
            var deny: [String]?
        }
        struct RawPolicy: Decodable { var rules: [RawRule] }
        let raw: RawPolicy
        do {
            raw = try JSONDecoder().decode(RawPolicy.self, from: Data(json))
        } catch {
            throw ReplicationError(.badPolicy, "not a policy document: \(error)")
        }
        var rules: [Rule] = []
        for (i, r) in raw.rules.enumerated() {
            let who: Rule.Who
            if r.who == "*" {
                who = .anyone
            } else if r.who.hasPrefix("user:"), r.who.count > 5 {
                who = .user(String(r.who.dropFirst(5)))
            } else if r.who.hasPrefix("role:"), r.who.count > 5 {
                who = .role(String(r.who.dropFirst(5)))
            } else {
                throw ReplicationError(.badPolicy, "rule \(i + 1): who \"\(r.who)\" is not *, user:SUB or role:ROLE")
            }
            func actions(_ names: [String]?) throws(ReplicationError) -> Set<Action> {
                var out = Set<Action>()
                for name in names ?? [] {
                    guard let action = Action(rawValue: name) else {
                        throw ReplicationError(.badPolicy, "rule \(i + 1): unknown action \"\(name)\" (read, write)")
                    }
                    out.insert(action)
                }
                return out
            }
            let allow = try actions(r.allow)
            let deny = try actions(r.deny)
            guard !allow.isEmpty || !deny.isEmpty else { throw ReplicationError(.badPolicy, "rule \(i + 1) allows and denies nothing") }
            guard !r.maps.list.isEmpty, !r.maps.list.contains("") else { throw ReplicationError(.badPolicy, "rule \(i + 1) names no map") }
            // `{sub}` ends the pattern or is followed by a separator no subject holds, so
            // one user's keys are never inside another's.
            if let keys = r.keys {
                var rest = Substring(keys)
                while let marker = rest.range(of: "{sub}") {
                    rest = rest[marker.upperBound...]
                    if let next = rest.unicodeScalars.first, !Principal.subjectSeparators.contains(next) {
                        throw ReplicationError(
                            .badPolicy, "rule \(i + 1): {sub} in \"\(keys)\" is followed by \"\(next)\"; follow it with : or / (or end the pattern)")
                    }
                }
            }
            rules.append(Rule(who: who, maps: r.maps.list.map(Glob.init), keys: r.keys.map(Glob.init), allow: allow, deny: deny))
        }
        self.rules = rules
    }

    /// Reads and parses the policy file at `path`.
    public static func load(path: String) throws(ReplicationError) -> Policy {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ReplicationError(.badPolicy, "cannot read the policy file \(path)")
        }
        do {
            return try Policy(json: Array(data))
        } catch {
            throw ReplicationError(.badPolicy, "\(path): \(error.message)")
        }
    }

    /// True when `principal` may do `action` on record `key` of `map`.
    public func permits(_ principal: Principal, _ action: Action, map: String, key: String) -> Bool {
        Self.decide(rules.filter { $0.applies(to: principal) && $0.covers(map: map) }, principal, action, key: key)
    }

    /// The rule of rules: among `rules` (those for this principal and map) whose key
    /// glob matches, a deny wins, else an allow, else the answer is no.
    static func decide(_ rules: [Rule], _ principal: Principal, _ action: Action, key: String) -> Bool {
        var allowed = false
        for rule in rules {
            if let keys = rule.keys, !keys.matches(key, subject: principal.subject) { continue }
            if rule.deny.contains(action) { return false }
            if rule.allow.contains(action) { allowed = true }
        }
        return allowed
    }
}

/// What one session's principal may do, with the policy's rules for each map worked
/// out once. Without a policy every authenticated principal may do everything.
public final class Access: Sendable {
    /// How much of a map a principal may read.
    public enum Coverage: Sendable, Equatable {
        case all
        case none
        /// Some keys: digests and repairs are computed over the readable records only.
        case some
    }

    public let principal: Principal
    let policy: Policy?
    private let rulesByMap = Mutex<[String: [Policy.Rule]]>([:])

    public init(principal: Principal, policy: Policy?) {
        self.principal = principal
        self.policy = policy
    }

    /// True when nothing is restricted.
    public var isUnrestricted: Bool { policy == nil }

    private func rules(for map: String) -> [Policy.Rule] {
        guard let policy else { return [] }
        if let cached = rulesByMap.withLock({ $0[map] }) { return cached }
        let rules = policy.rules.filter { $0.applies(to: principal) && $0.covers(map: map) }
        rulesByMap.withLock { if $0.count < 10_000 { $0[map] = rules } }
        return rules
    }

    public func mayRead(map: String, key: String) -> Bool { permits(.read, map: map, key: key) }
    public func mayWrite(map: String, key: String) -> Bool { permits(.write, map: map, key: key) }

    public func permits(_ action: Policy.Action, map: String, key: String) -> Bool {
        guard policy != nil else { return true }
        return Policy.decide(rules(for: map), principal, action, key: key)
    }

    /// The records of `map` the principal may read, for digests and repairs.
    public func readable(in map: String) -> Store.RecordFilter {
        switch readCoverage(of: map) {
        case .all: .all
        case .none: .none
        case .some: .some { [self] key in mayRead(map: map, key: key) }
        }
    }

    /// How much of `map` the principal may read.
    public func readCoverage(of map: String) -> Coverage {
        guard policy != nil else { return .all }
        let rules = rules(for: map)
        if rules.contains(where: { $0.keys == nil && $0.deny.contains(.read) }) { return .none }
        guard rules.contains(where: { $0.allow.contains(.read) }) else { return .none }
        let keyedDeny = rules.contains { $0.keys != nil && $0.deny.contains(.read) }
        if !keyedDeny && rules.contains(where: { $0.allow.contains(.read) && ($0.keys == nil || $0.keys!.matchesEverything) }) {
            return .all
        }
        return .some
    }
}
