import Testing
import TopGunQuery
import TopGunStore
import TopGunTestSupport

/// The README's quick start, kept compiling and true.
@Suite(.timeLimit(.minutes(2)))
struct QuickStartTests {
    struct User: Codable, Sendable, Equatable {
        var name: String
        var age: Int
    }

    @Test func readmeQuickStart() async throws {
        try await withTemporaryDirectory { dir in
            let db = try Database(path: dir + "/data", options: .init(durability: .durable))
            try db.createIndex(map: "users", path: "age", kind: .range)   // before the first write
            db.register(.maximum(), for: "scores")
            let users = db.map("users", of: User.self)
            try await users.set("u1", User(name: "Ann", age: 31))
            try await users.set("session", User(name: "tmp", age: 0), ttl: .seconds(60))
            let ann = try users.get("u1")
            #expect(ann == User(name: "Ann", age: 31))
            try await users.update("u1") { user in
                var user = user
                user?.age += 1
                return user
            }
            #expect(try users.get("u1")?.age == 32)
            try await db.counter("likes").increment("post-1")
            try await db.orMap("tags").add("post-1", "swift")

            let adults = try db.query("users").where("age" >= 18 && Field("name").hasPrefix("A")).orderBy("age").limit(20).run()
            #expect(adults.rows.map(\.key) == ["u1"])
            #expect(adults.explanation.description.contains("index"))
            #expect(try db.query("users").where("id" == "u1").explain().description
                == "key lookup of 1 key(s); partitions touched 1 of 271, records examined 1, returned 1")

            let typed = try users.query().where("age" >= 18).orderBy("age").run()
            #expect(typed.rows.map(\.value) == [User(name: "Ann", age: 32)])
            let typedLive = try users.query().where("age" >= 18).live()
            #expect(typedLive.initial.map(\.key) == ["u1"])

            let page = try await db.query("users").runInBackground()
            #expect(page.rows.count == 2)
            try db.backup(to: dir + "/backup-dir")
            #expect(try Database(path: dir + "/backup-dir").map("users", of: User.self).get("u1") == User(name: "Ann", age: 32))

            let live = try db.query("users").where("age" >= 18).live()
            #expect(live.initial.map(\.key) == ["u1"])
            try await users.delete("u1")
            for await delta in live {
                #expect(delta == .leave(key: "u1"))
                break
            }
            for await delta in typedLive.deltas {
                #expect(delta == .leave(key: "u1"))
                break
            }
        }
    }
}
