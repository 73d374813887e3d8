import TopGunCore

/// Who is at the other end of a session: a replica node (proved the shared secret) or
/// a user (presented a verified JWT). Policies grant by subject and role.
public struct Principal: Sendable, Hashable, CustomStringConvertible {
    /// The JWT `sub` claim, or `node:<id>` for a replica.
    public var subject: String
    /// The JWT `roles` claim, or `["replica"]` for a replica.
    public var roles: [String]
    /// When the credential stops being valid (the JWT `exp`), in ms since the epoch; the
    /// session ends then. Nil for replicas.
    public var expiresAtMillis: UInt64?

    public init(subject: String, roles: [String], expiresAtMillis: UInt64? = nil) {
        self.subject = subject
        self.roles = roles
        self.expiresAtMillis = expiresAtMillis
    }

    /// A node that proved the shared secret: a full replica.
    public static func replica(_ node: NodeID) -> Principal {
        Principal(subject: "node:\(node)", roles: ["replica"])
    }

    /// True for a node authenticated by the shared secret.
    public var isReplica: Bool { roles.contains { $0.utf8.elementsEqual("replica".utf8) } && subject.utf8.starts(with: "node:".utf8) }

    public var description: String { isReplica ? subject : "user:\(subject)" }

    /// What may follow `{sub}` in a policy's key pattern, and so what a user's subject
    /// may not contain: a subject `alice:x` would otherwise own keys inside `alice:*`.
    public static let subjectSeparators: Set<Unicode.Scalar> = [":", "/"]

    /// Why `subject` cannot be a user's (nil when it can): empty, a separator, or a
    /// control character.
    public static func refusal(ofSubject subject: String) -> String? {
        if subject.isEmpty { return "the subject is empty" }
        for scalar in subject.unicodeScalars {
            if subjectSeparators.contains(scalar) { return "the subject contains \"\(scalar)\", which separates a subject's keys in policies" }
            if scalar.properties.generalCategory == .control { return "the subject contains a control character" }
        }
        return nil
    }
}
