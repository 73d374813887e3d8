import TopGunCore

/// Turns subscribers' acknowledgements into positions garbage collection may rely on.
///
/// A subscriber acknowledges how far it applied this store's log and where its own
/// log stood then. Writes in its log before that point may be older than something
/// it just acknowledged and may still be on their way here; so an acknowledgement
/// counts only once this store has pulled the subscriber's log that far (its cursor
/// on the subscriber reaches the reported head). A subscriber that serves no log
/// reports no head: its acknowledgement counts at once.
public struct AcknowledgementTracker: Sendable {
    struct Pending: Sendable {
        var acked: HLCTimestamp
        var peerHead: HLCTimestamp
    }

    var pending: [NodeID: [Pending]] = [:]
    var ready: [NodeID: HLCTimestamp] = [:]
    /// Most waiting acknowledgements kept per peer; a newer one replaces the newest.
    let capacity = 32

    public init() {}

    /// Notes that `peer` applied this store's log through `acked` while its own log
    /// ended at `peerHead` (nil: it serves no log).
    public mutating func record(_ peer: NodeID, acked: HLCTimestamp, peerHead: HLCTimestamp?) {
        guard let peerHead, peerHead > .zero else {
            ready[peer] = max(ready[peer] ?? .zero, acked)
            return
        }
        var list = pending[peer, default: []]
        if list.count >= capacity { list.removeLast() }
        list.append(Pending(acked: acked, peerHead: peerHead))
        pending[peer] = list
    }

    /// The acknowledgements that now count, given this store's cursor on each peer
    /// (`cursor(peer)`); they are handed out once.
    public mutating func confirmed(cursor: (NodeID) throws -> HLCTimestamp?) rethrows -> [NodeID: HLCTimestamp] {
        var out = ready
        ready = [:]
        for (peer, list) in pending {
            let pulled = try cursor(peer) ?? .zero
            var waiting: [Pending] = []
            for item in list {
                if item.peerHead <= pulled {
                    out[peer] = max(out[peer] ?? .zero, item.acked)
                } else {
                    waiting.append(item)
                }
            }
            pending[peer] = waiting.isEmpty ? nil : waiting
        }
        return out
    }
}
