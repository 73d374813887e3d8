import NIOCore
import TopGunCore
import TopGunStore

/// What `ReplicaNode.repair(from:)` did.
public struct RepairReport: Sendable, Equatable {
    public var peer: NodeID
    /// Records the peer sent (those whose Merkle bucket differed).
    public var received: Int
    /// Records that changed this store.
    public var applied: Int
    /// Records refused for clock drift (stamps too far ahead of this clock): the peer
    /// cursor did not move, run the repair again once the clocks agree.
    public var refused: Int
    /// The peer's op-log key the repair covers; the peer cursor moved to it.
    public var head: HLCTimestamp
}

extension ReplicaNode {
    /// An operator's repair: sends this store's Merkle digests of every map to `address`
    /// and merges the records of every differing bucket, overriding the GC horizon (see
    /// `Store.apply(_:overridingHorizon:repairFrom:)`), then moves the peer cursor to
    /// the log head the repair covers. The node need not be running.
    ///
    /// - Throws: `ReplicationError` when the peer cannot be reached, refuses the
    ///   handshake, or sends anything but a repair.
    public func repair(from address: PeerAddress) async throws -> RepairReport {
        let channel = try await connect(address)
        return try await channel.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            let (peer, _, _) = try await handshake(channel.channel, address, outbound, &frames, offersLog: false)
            try await outbound.write(Message.digests(try digests(for: [], visibleTo: Access(principal: .replica(peer), policy: nil))).frame)
            var report = RepairReport(peer: peer, received: 0, applied: 0, refused: 0, head: .zero)
            while let frame = try await frames.next() {
                let message = try Message(frame)
                switch message {
                case .repair(let segment):
                    guard segment.origin == peer else {
                        throw ReplicationError(.wrongOrigin, "segment claims origin \(segment.origin), peer is \(peer)")
                    }
                    let outcomes = try store.apply(
                        segment.entries.map(\.operation), overridingHorizon: true, repairFrom: peer, trustingStamps: configuration.bearerToken != nil)
                    report.received += outcomes.count
                    report.applied += outcomes.filter(\.isApplied).count
                    report.refused += outcomes.filter(\.holdsCursor).count
                case .resume(let head):
                    report.head = head
                    // A refused record must be offered again: the cursor moves only when
                    // the repair is complete.
                    if report.refused == 0 { try store.recordRepair(fromPeer: peer, through: report.head, scope: .all) }
                    logger.info("repaired", metadata: ["peer": "\(peer)", "received": "\(report.received)", "applied": "\(report.applied)"])
                    return report
                case .error(let error):
                    throw error
                case .hello, .welcome, .proof, .admitted, .subscribe, .segment, .ack, .digests, .needDigests, .heartbeat, .rejected, .rewind, .notice:
                    throw message.unexpected(from: "a server during a repair")
                }
            }
            throw ReplicationError(.protocolViolation, "the peer closed the connection before the repair completed")
        }
    }
}
