import Testing
import TopGunCore
import TopGunQuery
import TopGunStore
import TopGunTestSupport

@Suite(.timeLimit(.minutes(2)))
struct TypedQueryTests {
    struct Item: Codable, Sendable, Equatable {
        var name: String
        var price: Int
    }

    @Test func rowsAndDeltasComeBackTyped() async throws {
        try await withTemporaryDatabase { db in
            let items = db.map("items", of: Item.self)
            try await items.set("a", Item(name: "apple", price: 3))
            try await items.set("b", Item(name: "bread", price: 12))
            let cheap = try items.query().where("price" < 10).run()
            #expect(cheap.rows.map(\.value) == [Item(name: "apple", price: 3)])
            let page = try await items.query().orderBy("price", descending: true).limit(1).runInBackground()
            #expect(page.rows.map(\.key) == ["b"])
            #expect(page.nextCursor != nil)

            let live = try items.query().where("price" < 10).live()
            try await items.set("c", Item(name: "cherry", price: 5))
            try await items.set("a", Item(name: "apple", price: 4))
            try await items.set("b", Item(name: "bread", price: 8))
            // A value of another shape in the same map leaves the typed result.
            _ = try await db.perform([.set(map: "items", key: "c", value: ["price": 1], ttlMillis: nil)])
            var seen: [TypedLiveDelta<Item>] = []
            for await delta in live.deltas {
                seen.append(delta)
                if seen.count == 4 { break }
            }
            #expect(seen.map(Self.summary) == ["enter c cherry 5", "update a apple 4", "enter b bread 8", "leave c"])
            let error = #expect(throws: StoreError.self) { try items.query().run() }
            #expect(error?.code == .invalidValue)
        }
    }

    static func summary(_ delta: TypedLiveDelta<Item>) -> String {
        switch delta {
        case .enter(let row): "enter \(row.key) \(row.value.name) \(row.value.price)"
        case .update(let row): "update \(row.key) \(row.value.name) \(row.value.price)"
        case .leave(let key): "leave \(key)"
        }
    }
}
