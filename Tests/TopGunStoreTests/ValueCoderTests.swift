import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@Suite(.timeLimit(.minutes(2)))
struct ValueCoderTests {
    enum Shape: Codable, Equatable {
        case circle(radius: Double)
        case polygon([Int])
        case empty
    }

    struct Document: Codable, Equatable {
        var id: UInt32
        var title: String?
        var tags: [String]
        var scores: [Int: Double]
        var nested: [[Int8?]]
        var shape: Shape
        var big: Int64
        var flag: Bool
        var ratio: Float
    }

    static let sample = Document(
        id: 7, title: nil, tags: ["a", "b"], scores: [1: 0.5, -3: 2], nested: [[1, nil, -128], []],
        shape: .circle(radius: 2.5), big: .min, flag: true, ratio: 0.25)

    @Test func structsEnumsOptionalsAndDictionariesRoundTrip() throws {
        let value = try ValueEncoder().encode(Self.sample)
        #expect(value[path: "big"] == .int(.min))
        #expect(value[path: "id"] == 7)
        #expect(value[path: "title"] == nil)  // encodeIfPresent leaves it out
        #expect(value[path: "scores.-3"] == 2.0)
        #expect(try ValueDecoder().decode(Document.self, from: value) == Self.sample)
        for shape in [Shape.polygon([1, 2]), .empty] {
            #expect(try ValueDecoder().decode(Shape.self, from: ValueEncoder().encode(shape)) == shape)
        }
    }

    /// Regression: through JSON an infinite double turned the whole document into null.
    @Test func nonFiniteDoublesStayDoubles() throws {
        let value = try Value(encoding: [Double.infinity, -.infinity, 1])
        #expect(value == [.double(.infinity), .double(-.infinity), 1.0])
        #expect(try value.decode(as: [Double].self) == [.infinity, -.infinity, 1])
    }

    @Test func datesAndDataFollowTheirStrategies() throws {
        let date = Date(timeIntervalSince1970: 1_700_000_000.123)
        #expect(try ValueEncoder().encode(date) == .int(1_700_000_000_123))
        #expect(try ValueDecoder().decode(Date.self, from: .int(1_700_000_000_123)) == date)
        var encoder = ValueEncoder()
        var decoder = ValueDecoder()
        encoder.dateStrategy = .iso8601
        decoder.dateStrategy = .iso8601
        #expect(try encoder.encode(date) == .string("2023-11-14T22:13:20.123Z"))
        #expect(try decoder.decode(Date.self, from: encoder.encode(date)).timeIntervalSince1970 == 1_700_000_000.123)
        encoder.dateStrategy = .secondsSince1970
        #expect(try encoder.encode(date) == .double(1_700_000_000.123))
        #expect(try ValueEncoder().encode(Data([1, 2, 255])) == .bytes([1, 2, 255]))
        encoder.dataStrategy = .base64
        decoder.dataStrategy = .base64
        #expect(try encoder.encode(Data([1, 2, 255])) == "AQL/")
        #expect(try decoder.decode(Data.self, from: "AQL/") == Data([1, 2, 255]))
    }

    @Test func whatAValueCannotHoldIsATypedError() throws {
        let tooBig = #expect(throws: StoreError.self) { try ValueEncoder().encode(UInt64.max) }
        #expect(tooBig?.code == .invalidValue)
        let missing = #expect(throws: StoreError.self) { try ValueDecoder().decode(Document.self, from: ["id": 1]) }
        #expect(missing?.code == .invalidValue)
        let narrow = #expect(throws: StoreError.self) { try ValueDecoder().decode([UInt8].self, from: [1, 300]) }
        #expect(narrow?.message.contains("1") == true)
        let wrong = #expect(throws: StoreError.self) { try ValueDecoder().decode(Document.self, from: ["id": "seven"]) }
        #expect(wrong?.message.contains("id") == true)
    }

    @Test func typedMapsUseTheirCoders() async throws {
        try await withTemporaryDirectory { dir in
            struct Event: Codable, Equatable { var at: Date; var payload: Data }
            let db = try Database(path: dir)
            let event = Event(at: Date(timeIntervalSince1970: 1_000), payload: Data([0, 1]))
            try await db.map("events", of: Event.self).set("e", event)
            #expect(try db.store.state(map: "events", key: "e").flatMap { state -> Value? in
                if case .lww(let r) = state { return r.value } else { return nil }
            } == ["at": .int(1_000_000), "payload": .bytes([0, 1])])
            #expect(try db.map("events", of: Event.self).get("e") == event)
            var encoder = ValueEncoder()
            var decoder = ValueDecoder()
            (encoder.dateStrategy, decoder.dateStrategy) = (.iso8601, .iso8601)
            let iso = db.map("iso", of: Event.self, encoder: encoder, decoder: decoder)
            try await iso.set("e", event)
            #expect(try iso.get("e") == event)
            #expect(try db.store.state(map: "iso", key: "e").flatMap { state -> Value? in
                if case .lww(let r) = state { return r.value?[path: "at"] } else { return nil }
            } == "1970-01-01T00:16:40.000Z")
        }
    }
}
