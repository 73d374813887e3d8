import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// Clock faults are loud: a peer whose clock runs ahead is told so at the handshake, on
/// both sides, and what is refused for drift is counted per peer.
@Suite(.timeLimit(.minutes(2)))
struct ClockFaultTests {
    static func store(_ dir: String, node: UInt64, clock: ManualWallClock) throws -> Store {
        try Store(path: dir, options: .init(durability: .noSync, wallClock: clock, nodeID: NodeID(node)))
    }

    /// A node whose clock is two minutes ahead (beyond the 60 s bound): both sides learn
    /// the offset at the handshake, the server refuses its writes, counts them for that
    /// peer (statistics and the stored peer record `inspect` shows) and holds the
    /// cursor; once the clocks agree the writes arrive.
    @Test func aPeerTwoMinutesAheadIsToldAndCounted() async throws {
        try await withTemporaryDirectory { root in
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let serverClock = ManualWallClock(now)
            let aheadClock = ManualWallClock(now + 120_000)
            let server = try Self.store(root + "/server", node: 1, clock: serverClock)
            let ahead = try Self.store(root + "/ahead", node: 2, clock: aheadClock)
            _ = try ahead.apply([Mutation.set(map: "m", key: "k", value: "from the future", ttlMillis: nil)])
            let serving = try await RunningNode(server)
            let pushing = try await RunningNode(ahead, listen: false, peers: [serving.port])
            #expect(try await eventually { (serving.node.statistics.refusedForClockDrift[ahead.nodeID] ?? 0) > 0 })
            let offset = try #require(serving.node.statistics.clockOffsets[ahead.nodeID])
            #expect((119_000...121_000).contains(offset), "the server sees the peer 120 s ahead: \(offset)")
            let seen = try #require(pushing.node.statistics.clockOffsets[server.nodeID])
            #expect((-121_000 ... -119_000).contains(seen), "the ahead node sees the server 120 s behind: \(seen)")
            let record = try #require(try server.peer(ahead.nodeID))
            #expect(record.refusedForClockDrift > 0 && (119_000...121_000).contains(record.clockOffsetMillis))
            #expect(try server.state(map: "m", key: "k") == nil, "refused")
            // The ahead node is told, with a code, and counts it.
            #expect(try await eventually { (pushing.node.statistics.notices["clock drift"] ?? 0) > 0 })
            // The clocks agree again (the server's caught up): the write arrives.
            serverClock.set(now + 121_000)
            #expect(try await eventually { if case .lww(let r)? = try server.state(map: "m", key: "k") { r.value == "from the future" } else { false } })
            await pushing.stop()
            await serving.stop()
        }
    }
}
