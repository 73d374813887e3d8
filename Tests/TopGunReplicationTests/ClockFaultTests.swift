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

    /// A replica's clock spent a day ahead and came back: its persisted HLC keeps its
    /// new stamps a day ahead, so its peer refuses them (they wait, nothing is lost).
    /// The documented way out: run the peer with a drift bound past the excursion; every
    /// write then arrives, and later writes too.
    @Test func aDayLongExcursionIsLetInByALargerDriftBound() async throws {
        try await withTemporaryDirectory { root in
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let clock = ManualWallClock(now + 86_400_000)
            do {
                let away = try Self.store(root + "/away", node: 2, clock: clock)
                _ = try away.apply((0..<20).map { Mutation.set(map: "m", key: "k\($0)", value: .int(Int64($0)), ttlMillis: nil) })
            }
            clock.set(now)
            let returned = try Self.store(root + "/away", node: 2, clock: clock)
            _ = try returned.apply([Mutation.set(map: "m", key: "after", value: 1, ttlMillis: nil)])
            do {
                let strict = try Self.store(root + "/peer", node: 1, clock: ManualWallClock(now))
                let source = try await RunningNode(returned)
                let pulling = try await RunningNode(strict, listen: false, peers: [source.port])
                #expect(try await eventually { (pulling.node.statistics.refusedForClockDrift[returned.nodeID] ?? 0) > 0 })
                #expect(try records(strict, "m").isEmpty)
                await pulling.stop()
                await source.stop()
            }
            let lenient = try Store(
                path: root + "/peer", options: .init(durability: .noSync, maxClockDriftMillis: 2 * 86_400_000, wallClock: ManualWallClock(now), nodeID: NodeID(1)))
            let source = try await RunningNode(returned)
            let pulling = try await RunningNode(lenient, listen: false, peers: [source.port])
            #expect(try await eventually { try records(lenient, "m").count == 21 })
            _ = try returned.apply([Mutation.set(map: "m", key: "later", value: 2, ttlMillis: nil)])
            #expect(try await eventually { try lenient.state(map: "m", key: "later") != nil })
            await pulling.stop()
            await source.stop()
        }
    }
}
