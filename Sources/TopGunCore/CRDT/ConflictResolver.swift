/// A custom merge function a map can register, run inside the write transaction
/// (TopGun's conflict resolvers).
///
/// The resolver sees the current record (if any) and the incoming one, after the LWW
/// rule would have let the incoming record win. It may accept it, replace its value,
/// or reject it with a reason that is reported to the caller (never silently dropped).
///
/// - Important: A resolver must be deterministic and depend only on its inputs, so
///   every replica reaches the same decision; it must not block or do I/O.
public struct ConflictResolver: Sendable {
    /// What the resolver decided.
    public enum Resolution: Sendable, Equatable {
        /// Apply the incoming record as is.
        case accept
        /// Apply the incoming record's stamp with this value instead.
        case replace(Value?)
        /// Keep the current record; the reason goes back to the caller.
        case reject(String)
    }

    public let name: String
    private let body: @Sendable (_ current: LWWRecord?, _ incoming: LWWRecord) -> Resolution

    public init(name: String, _ body: @escaping @Sendable (_ current: LWWRecord?, _ incoming: LWWRecord) -> Resolution) {
        self.name = name
        self.body = body
    }

    /// Decides on `incoming` given the `current` record.
    public func resolve(current: LWWRecord?, incoming: LWWRecord) -> Resolution {
        body(current, incoming)
    }

    /// The incoming value always wins (plain LWW; the default).
    public static let lastWriterWins = ConflictResolver(name: "lww") { _, _ in .accept }

    /// Keeps the numerically larger of the two values at `path` (nil path: the value
    /// itself); a smaller incoming value is rejected.
    public static func maximum(at path: String? = nil) -> ConflictResolver {
        ConflictResolver(name: "max:\(path ?? "")") { current, incoming in
            guard let old = current?.value, let new = incoming.value else { return .accept }
            let a = path.map { old[path: $0] } ?? old
            let b = path.map { new[path: $0] } ?? new
            guard let x = a?.numeric, let y = b?.numeric else { return .accept }
            return y >= x ? .accept : .reject("value \(y) is below the current maximum \(x)")
        }
    }

    /// Rejects incoming values for which `predicate` holds, with `reason`.
    public static func reject(
        if predicate: @escaping @Sendable (Value?) -> Bool, reason: String
    ) -> ConflictResolver {
        ConflictResolver(name: "reject-if") { _, incoming in
            predicate(incoming.value) ? .reject(reason) : .accept
        }
    }
}

extension Value {
    /// The value as a Double when it is a number.
    public var numeric: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        default: nil
        }
    }
}
