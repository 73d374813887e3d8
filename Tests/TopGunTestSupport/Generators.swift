import PropertyBased
import TopGunCore

/// Seeded generators of Core values for property tests.
public enum CoreGen {
    /// Small node ids so that concurrent writers collide often.
    public static func node(using rng: inout some RandomNumberGenerator) -> NodeID {
        NodeID(UInt64.random(in: 1...4, using: &rng))
    }

    /// Timestamps from a narrow range so ties and near-ties are common.
    public static func timestamp(using rng: inout some RandomNumberGenerator) -> HLCTimestamp {
        HLCTimestamp(
            millis: UInt64.random(in: 1_000...1_004, using: &rng), counter: UInt16.random(in: 0...2, using: &rng),
            node: node(using: &rng))
    }

    /// A random value up to `depth` levels deep.
    public static func value(depth: Int = 3, using rng: inout some RandomNumberGenerator) -> Value {
        let kinds = depth > 0 ? 9 : 7
        switch Int.random(in: 0..<kinds, using: &rng) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &rng))
        case 2: return .int(Int64.random(in: -3...3, using: &rng))
        case 3:
            let magnitude = [Int64(127), 128, 255, 256, 65_535, 65_536, Int64(UInt32.max), Int64(UInt32.max) + 1, .max]
            let m = magnitude.randomElement(using: &rng)!
            return .int(Bool.random(using: &rng) ? m : -m - Int64.random(in: 0...1, using: &rng))
        case 4: return .double([0.5, -1.25, 1e300, .infinity, -0.0, 3.0].randomElement(using: &rng)!)
        case 5:
            let length = [0, 1, 31, 32, 255, 256, 70_000].randomElement(using: &rng)!
            let alphabet: [Character] = ["a", "é", "😀", "ключ", "z"].flatMap { $0 }
            return .string(String((0..<min(length, 300)).map { _ in alphabet.randomElement(using: &rng)! }))
        case 6: return .bytes((0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        case 7:
            return .array((0..<Int.random(in: 0...17, using: &rng)).map { _ in value(depth: depth - 1, using: &rng) })
        default:
            var fields: [String: Value] = [:]
            for _ in 0..<Int.random(in: 0...17, using: &rng) {
                fields["k\(Int.random(in: 0...40, using: &rng))"] = value(depth: depth - 1, using: &rng)
            }
            return .map(fields)
        }
    }

    public static func lwwRecord(using rng: inout some RandomNumberGenerator) -> LWWRecord {
        let value: Value? = Int.random(in: 0..<4, using: &rng) == 0 ? nil : .int(Int64.random(in: 0...2, using: &rng))
        let ttl: UInt64? = Bool.random(using: &rng) ? nil : UInt64.random(in: 1...3, using: &rng)
        return LWWRecord(value: value, timestamp: timestamp(using: &rng), ttlMillis: ttl)
    }

    /// An OR-Set built from a short random history of adds and removes.
    public static func orSet(using rng: inout some RandomNumberGenerator) -> ORSet {
        var set = ORSet()
        for _ in 0..<Int.random(in: 0...6, using: &rng) {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0, 1:
                set.add(.int(Int64.random(in: 0...2, using: &rng)), tag: timestamp(using: &rng))
            case 2:
                set.remove(.int(Int64.random(in: 0...2, using: &rng)))
            default:
                set.apply(
                    tag: timestamp(using: &rng),
                    entry: .init(value: .int(Int64.random(in: 0...2, using: &rng)), timestamp: timestamp(using: &rng)))
            }
        }
        return set
    }

    public static func pnCounter(using rng: inout some RandomNumberGenerator) -> PNCounter {
        var c = PNCounter()
        for _ in 0..<Int.random(in: 0...6, using: &rng) {
            c.add(Int64.random(in: -5...5, using: &rng), by: node(using: &rng))
        }
        return c
    }
}

/// PropertyBased generators over `CoreGen`.
extension Gen where Value == TopGunCore.Value {
    public static var document: Generator<TopGunCore.Value, Shrink.None<TopGunCore.Value>> {
        Generator { rng in var g = SplitMix64(seed: rng.next()); return CoreGen.value(using: &g) }
    }
}

extension Gen where Value == LWWRecord {
    public static var lwwRecord: Generator<LWWRecord, Shrink.None<LWWRecord>> {
        Generator { rng in var g = SplitMix64(seed: rng.next()); return CoreGen.lwwRecord(using: &g) }
    }
}

extension Gen where Value == ORSet {
    public static var orSet: Generator<ORSet, Shrink.None<ORSet>> { Generator { rng in var g = SplitMix64(seed: rng.next()); return CoreGen.orSet(using: &g) } }
}

extension Gen where Value == PNCounter {
    public static var pnCounter: Generator<PNCounter, Shrink.None<PNCounter>> {
        Generator { rng in var g = SplitMix64(seed: rng.next()); return CoreGen.pnCounter(using: &g) }
    }
}

extension Gen where Value == [UInt8] {
    /// Random bytes, biased towards MessagePack type bytes.
    public static var messagePackNoise: Generator<[UInt8], Shrink.None<[UInt8]>> {
        Generator { source in
            var rng = SplitMix64(seed: source.next())
            return (0..<Int.random(in: 0...64, using: &rng)).map { _ in
                Bool.random(using: &rng)
                    ? [0xc0, 0xc4, 0xc5, 0xc6, 0xca, 0xcb, 0xcf, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0x9f, 0x8f, 0xff]
                        .randomElement(using: &rng)!
                    : UInt8.random(in: 0...255, using: &rng)
            }
        }
    }
}

/// A small, fast, seedable generator (Steele et al., SplitMix64) for reproducible tests.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

extension ORSet {
    /// `self` merged with `other`, as a value.
    public func merging(_ other: ORSet) -> ORSet {
        var m = self
        m.merge(other)
        return m
    }
}

extension PNCounter {
    /// `self` merged with `other`, as a value.
    public func merging(_ other: PNCounter) -> PNCounter {
        var m = self
        m.merge(other)
        return m
    }
}
