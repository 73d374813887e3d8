import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// `topgun serve --policy --jwt-secret-file` with `topgun sync --token-file JWT`: real
/// processes, the README's worked example.
@Suite(.timeLimit(.minutes(3)))
struct PolicyProcessTests {
    static func write(_ text: String, _ path: String) throws -> String {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func usersSyncWithinThePolicyAndAReloadTakesEffect() async throws {
        _ = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let secret = try Self.write("\(testSecret)\n", root + "/secret")
            let jwtKey = try Self.write(PermissionTests.secret + "\n", root + "/jwt.key")
            let policy = try Self.write(PermissionTests.policyJSON, root + "/policy.json")
            let alice = try Self.write(try await PermissionTests.token("alice"), root + "/alice.jwt")
            let bob = try Self.write(try await PermissionTests.token("bob"), root + "/bob.jwt")
            let expired = try Self.write(try await PermissionTests.token("alice", expiresIn: -10), root + "/expired.jwt")
            let log = root + "/serve.log"
            let port = reservePorts(1)[0]
            try SyncProcessTests.put(root + "/server", "from-server", "s1")
            #expect(try runTopGun(["put", "--data", root + "/server", "public", "p1", "\"hello\""]).status == 0)
            let server = try ServeProcess(
                data: root + "/server", listen: port, peers: [], token: secret,
                extra: ["--policy", policy, "--jwt-secret-file", jwtKey], stderr: log)
            defer { server.stop() }
            let url = "tcp://127.0.0.1:\(port)"

            // Alice writes her own note and defaces the read-only public map offline.
            #expect(try runTopGun(["put", "--data", root + "/alice", "public", "p1", "\"defaced\""]).status == 0)
            try SyncProcessTests.put(root + "/alice", "alice:1", "a1")
            let synced = try SyncProcessTests.sync(root + "/alice", url, token: alice)
            #expect(synced.status == 0, "\(synced.err)")
            #expect(synced.out.contains("refused by the server, reverted here: public/p1: not permitted"), "\(synced.out)")
            #expect(try SyncProcessTests.value(root + "/server", "alice:1") == "a1")
            let publicValue = { (dir: String) throws -> Value? in
                let store = try Store(path: dir, options: .init(readOnly: true))
                guard case .lww(let r)? = try store.state(map: "public", key: "p1") else { return nil }
                return r.value
            }
            #expect(try publicValue(root + "/server") == "hello")
            #expect(try publicValue(root + "/alice") == "hello", "the refused write is undone on the app")
            #expect(try SyncProcessTests.value(root + "/alice", "from-server") == nil, "notes/from-server is no one's {sub}: key")
            // The server's inspect names alice's device and counts her refused write.
            let inspect = try runTopGun(["inspect", "--data", root + "/server"])
            let aliceLine = inspect.out.split(separator: "\n").first { $0.contains("user:alice") }
            #expect(aliceLine?.contains("\"writes_rejected\":1") == true, "\(inspect.out)")

            // Bob reads public data and his own notes only.
            #expect(try SyncProcessTests.sync(root + "/bob", url, token: bob).status == 0)
            #expect(try publicValue(root + "/bob") == "hello")
            #expect(try SyncProcessTests.value(root + "/bob", "alice:1") == nil)

            // An expired token: refused, one clear line on each side.
            let refused = try SyncProcessTests.sync(root + "/alice", url, token: expired)
            #expect(refused.status != 0 && refused.err.contains("token expired"), "\(refused.err)")
            #expect(try await eventually { try String(contentsOfFile: log, encoding: .utf8).contains("token expired") })
            let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").filter { $0.contains("token expired") }
            #expect(lines.count == 1, "\(lines)")

            // The policy changes: everyone may read every note. SIGHUP reloads it.
            _ = try Self.write(
                PermissionTests.policyJSON.replacingOccurrences(
                    of: #"{"who": "user:admin""#, with: #"{"who": "*", "maps": "notes", "allow": ["read"]}, {"who": "user:admin""#),
                policy)
            server.hangUp()
            #expect(try await eventually { try String(contentsOfFile: log, encoding: .utf8).contains("policy reloaded") })
            #expect(try SyncProcessTests.sync(root + "/bob", url, token: bob).status == 0)
            #expect(try SyncProcessTests.value(root + "/bob", "alice:1") == "a1")
            // A policy file that does not parse leaves the old one in force.
            _ = try Self.write("{ not json", policy)
            server.hangUp()
            #expect(try await eventually { try String(contentsOfFile: log, encoding: .utf8).contains("the old policy stays") })
            #expect(try SyncProcessTests.sync(root + "/bob", url, token: bob).status == 0)
        }
    }
}
