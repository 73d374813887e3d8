/// A positive-negative counter (TopGun's `PNCounter`): per node, the total of its
/// increments and the total of its decrements.
///
/// The value is Σ positive − Σ negative. Merge takes the per-node maximum of each
/// total: commutative, associative, idempotent, O(nodes). Unlike TopGun, deltas are
/// integers; totals wrap at 2⁶⁴ (a limit far beyond any real counter).
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
