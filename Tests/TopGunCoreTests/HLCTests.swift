import Testing
import TopGunCore
import TopGunTestSupport

struct HLCTests {
    @Test func binaryFormRoundTripsAndSorts() {
        let a = HLCTimestamp(millis: 1_700_000_000_000, counter: 65_535, node: NodeID(3))
        let b = HLCTimestamp(millis: 1_700_000_000_001, counter: 0, node: NodeID(1))
        #expect(a.bytes.count == 16)
        #expect(HLCTimestamp(bytes: a.bytes) == a)
        #expect(HLCTimestamp(bytes: [1, 2, 3]) == nil)
        #expect(a < b && a.bytes.lexicographicallyPrecedes(b.bytes))
        #expect(a.successor == HLCTimestamp(millis: 1_700_000_000_001, counter: 0, node: NodeID(3)))
    }

    @Test func nowIsStrictlyMonotonicWhateverTheWallClockDoes() {
        let wall = ManualWallClock(5_000)
        var clock = HybridLogicalClock(node: NodeID(1), wallClock: wall)
        var previous = clock.now()
        for step in 0..<200_000 {
            if step % 1_000 == 0 { wall.set(step % 3_000 == 0 ? 4_000 : 5_000 + UInt64(step / 1_000)) }
            let next = clock.now()
            #expect(next > previous)
            previous = next
        }
    }

    @Test func counterOverflowBorrowsTheNextMillisecond() {
        let wall = ManualWallClock(10)
        var clock = HybridLogicalClock(node: NodeID(1), wallClock: wall)
        var last = clock.now()
        for _ in 0..<70_000 { last = clock.now() }
        #expect(last.millis == 11 && Int(last.counter) == 70_000 - 65_536)
    }

    @Test func restartFromHighWaterMarkNeverReissues() {
        let wall = ManualWallClock(50_000)
        var first = HybridLogicalClock(node: NodeID(1), wallClock: wall)
        let issued = (0..<10).map { _ in first.now() }
        wall.set(1_000)  // the machine's clock went back
        var second = HybridLogicalClock(node: NodeID(1), wallClock: wall, lastIssued: issued.last)
        #expect(second.now() > issued.last!)
    }

    @Test func receiveRefusesFarFutureAndKeepsState() throws {
        let wall = ManualWallClock(1_000_000)
        var clock = HybridLogicalClock(node: NodeID(1), wallClock: wall, maxDriftMillis: 60_000)
        _ = clock.now()
        let before = clock.last
        let far = HLCTimestamp(millis: 1_000_000 + 60_001, counter: 0, node: NodeID(2))
        #expect(throws: HLCError.self) { try clock.receive(far) }
        #expect(clock.last == before)
        let near = HLCTimestamp(millis: 1_000_000 + 60_000, counter: 9, node: NodeID(2))
        try clock.receive(near)
        #expect(clock.now() > near)
    }
}
