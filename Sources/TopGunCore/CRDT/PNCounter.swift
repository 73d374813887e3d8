/// A positive-negative counter (TopGun's `PNCounter`): per node, the total of its
/// increments and the total of its decrements.
///
/// The value is Σ positive − Σ negative. Merge takes the per-node maximum of each
/// total: commutative, associative, idempotent, O(nodes). Unlike TopGun, deltas are
/// integers. A local change that would take a total past 2⁶⁴ or the value out of the
/// `Int64` range is refused by the store (`adding(_:by:)` says which would).
public struct PNCounter: Hashable, Sendable {
    public private(set) var positive: [NodeID: UInt64]
    public private(set) var negative: [NodeID: UInt64]

    public init(positive: [NodeID: UInt64] = [:], negative: [NodeID: UInt64] = [:]) {
        self.positive = positive.filter { $0.value != 0 }
        self.negative = negative.filter { $0.value != 0 }
    }

    /// The counter's value.
    public var value: Int64 {
        let p = positive.values.reduce(UInt64(0), &+)
        let n = negative.values.reduce(UInt64(0), &+)
        return Int64(bitPattern: p &- n)
    }

    /// The value after adding `delta` for `node`, or nil when a total would overflow or
    /// the value would leave the `Int64` range.
    public func adding(_ delta: Int64, by node: NodeID) -> Int64? {
        let nodes = Set(positive.keys).union(negative.keys)
        return Self.value(adding: delta, by: node, to: nodes.lazy.map { ($0, positive[$0] ?? 0, negative[$0] ?? 0) })
    }

    /// The rule of `adding(_:by:)` over per-node totals (node, positive, negative), each
    /// node once: for readers that hold the totals in another form (a stored payload).
    public static func value(
        adding delta: Int64, by node: NodeID, to totals: some Sequence<(NodeID, UInt64, UInt64)>
    ) -> Int64? {
        var p: UInt64 = 0
        var n: UInt64 = 0
        var seen = false
        func add(_ a: UInt64, to sum: inout UInt64) -> Bool {
            let (s, o) = sum.addingReportingOverflow(a)
            sum = s
            return !o
        }
        for (id, positive, negative) in totals {
            var (tp, tn) = (positive, negative)
            if id == node {
                seen = true
                if delta > 0 { guard add(UInt64(delta), to: &tp) else { return nil } }
                if delta < 0 { guard add(delta.magnitude, to: &tn) else { return nil } }
            }
            guard add(tp, to: &p), add(tn, to: &n) else { return nil }
        }
        if !seen {
            if delta > 0 { guard add(UInt64(delta), to: &p) else { return nil } }
            if delta < 0 { guard add(delta.magnitude, to: &n) else { return nil } }
        }
        if p >= n { return p - n <= UInt64(Int64.max) ? Int64(p - n) : nil }
        let m = n - p
        return m <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- m) : nil
    }

    /// Adds `delta` on behalf of `node` (TopGun's `addAndGet`); 0 is a no-op.
    ///
    /// - Returns: the new value.
    @discardableResult
    public mutating func add(_ delta: Int64, by node: NodeID) -> Int64 {
        if delta > 0 {
            positive[node, default: 0] &+= UInt64(delta)
        } else if delta < 0 {
            negative[node, default: 0] &+= delta.magnitude
        }
        return value
    }

    /// Merges `other` into `self`.
    ///
    /// - Returns: true when some total increased.
    @discardableResult
    public mutating func merge(_ other: PNCounter) -> Bool {
        var changed = false
        for (node, total) in other.positive where total > positive[node, default: 0] {
            positive[node] = total
            changed = true
        }
        for (node, total) in other.negative where total > negative[node, default: 0] {
            negative[node] = total
            changed = true
        }
        return changed
    }
}
