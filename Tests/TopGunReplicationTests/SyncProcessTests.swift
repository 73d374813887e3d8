import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

/// `topgun sync` against real `topgun serve` processes, over TCP, WebSocket, and
/// WebSocket through nginx as the reverse proxy a deployment puts in front.
@Suite(.timeLimit(.minutes(3)))
struct SyncProcessTests {
    static func tokenFile(_ root: String, _ secret: String = testSecret) throws -> String {
        let path = root + "/token-\(secret)"
        try "\(secret)\n".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func value(_ dir: String, _ key: String) throws -> Value? {
        let store = try Store(path: dir, options: .init(readOnly: true))
        guard case .lww(let record)? = try store.state(map: "notes", key: key) else { return nil }
        return record.value
    }

    static func put(_ dir: String, _ key: String, _ value: String) throws {
        let result = try runTopGun(["put", "--data", dir, "notes", key, "\"\(value)\""])
        #expect(result.status == 0, "\(result.err)")
    }

    static func sync(_ dir: String, _ url: String, token: String) throws -> ProcessResult {
        try runTopGun(["sync", "--data", dir, "--server", url, "--token-file", token, "--once", "--timeout", "20"])
    }

    @Test(arguments: ["tcp", "ws"])
    func syncOnceExitsZeroOnlyWhenBothSidesHoldEachOthersWrites(_ scheme: String) async throws {
        _ = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = try Self.tokenFile(root)
            let port = reservePorts(1)[0]
            let flag = scheme == "tcp" ? "--listen" : "--http"
            let url = scheme == "tcp" ? "tcp://127.0.0.1:\(port)" : "ws://127.0.0.1:\(port)/sync"
            try Self.put(root + "/server", "from-server", "s1")
            let server = try ServeProcess(
                data: root + "/server", listen: port, peers: [], token: token, extra: flag == "--listen" ? [] : [flag, "127.0.0.1:\(port)"],
                listenFlag: flag)
            defer { server.stop() }
            try Self.put(root + "/phone", "from-phone", "p1")
            let first = try Self.sync(root + "/phone", url, token: token)
            #expect(first.status == 0, "\(first.err)")
            #expect(first.out.contains("pulled 1 ops, pushed 1 log entries"), "\(first.out)")
            #expect(try Self.value(root + "/phone", "from-server") == "s1")
            #expect(try Self.value(root + "/server", "from-phone") == "p1")
            // A second app gets the first app's write through the server.
            let second = try Self.sync(root + "/laptop", url, token: token)
            #expect(second.status == 0, "\(second.err)")
            #expect(try Self.value(root + "/laptop", "from-phone") == "p1")
            // Nothing new: still exits 0 at once, moving nothing it already moved.
            let again = try Self.sync(root + "/phone", url, token: token)
            #expect(again.status == 0 && again.out.contains("pulled 0 ops"), "\(again.out) \(again.err)")

            let refused = try Self.sync(root + "/phone", url, token: try Self.tokenFile(root, otherSecret))
            #expect(refused.status != 0 && refused.err.contains("unauthorized"), "\(refused.err)")
            #expect(refused.err.split(separator: "\n").count == 1, "one line: \(refused.err)")
            let closedPort = reservePorts(1)[0]
            let unreachable = try Self.sync(root + "/phone", scheme == "tcp" ? "tcp://127.0.0.1:\(closedPort)" : "ws://127.0.0.1:\(closedPort)/sync", token: token)
            #expect(unreachable.status != 0 && !unreachable.err.isEmpty)
        }
    }

    /// An app that only ever syncs with `--once` runs no node between syncs: the sync
    /// sheds the log entries that later writes of the same records superseded.
    @Test func syncOnceCompactsTheAppsLog() async throws {
        _ = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = try Self.tokenFile(root)
            let port = reservePorts(1)[0]
            let server = try ServeProcess(data: root + "/server", listen: port, peers: [], token: token, extra: [])
            defer { server.stop() }
            for i in 0..<5 { try Self.put(root + "/phone", "k", "v\(i)") }
            #expect(try Store(path: root + "/phone", options: .init(readOnly: true)).opLogCount() == 5)
            let synced = try Self.sync(root + "/phone", "tcp://127.0.0.1:\(port)", token: token)
            #expect(synced.status == 0, "\(synced.err)")
            #expect(try Self.value(root + "/server", "k") == "v4")
            #expect(try Store(path: root + "/phone", options: .init(readOnly: true)).opLogCount() == 1)
        }
    }

    /// `topgun sync` running while other processes write the app's files, killed with
    /// SIGKILL at random moments and restarted: every write reaches the server, and
    /// `--once` afterwards finds both sides caught up.
    @Test func continuousSyncSurvivesKillNine() async throws {
        let binary = try #require(topgunBinary, "build the topgun executable first (swift build)")
        try await withTemporaryDirectory { root in
            let token = try Self.tokenFile(root)
            let port = reservePorts(1)[0]
            let url = "ws://127.0.0.1:\(port)/sync"
            let server = try ServeProcess(data: root + "/server", listen: port, peers: [], token: token, extra: ["--http", "127.0.0.1:\(port)"], listenFlag: "--http")
            defer { server.stop() }
            var rng = SystemRandomNumberGenerator()
            var written = 0
            for round in 0..<5 {
                let sync = Process()
                sync.executableURL = URL(fileURLWithPath: binary)
                sync.arguments = ["sync", "--data", root + "/app", "--server", url, "--token-file", token]
                sync.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
                sync.standardError = FileHandle(forWritingAtPath: "/dev/null")
                try sync.run()
                for _ in 0..<Int.random(in: 3...8, using: &rng) {
                    try Self.put(root + "/app", "k\(written)", "r\(round)")
                    written += 1
                }
                if round == 0 {
                    // A running `topgun sync` pushes writes other processes make.
                    let last = written - 1
                    #expect(try await eventually { try Self.value(root + "/server", "k\(last)") != nil })
                }
                // Killed at a random moment: mid-push, mid-handshake or idle.
                usleep(UInt32.random(in: 0...300_000, using: &rng))
                kill(sync.processIdentifier, SIGKILL)
                sync.waitUntilExit()
            }
            let final = try Self.sync(root + "/app", url, token: token)
            #expect(final.status == 0, "\(final.err)")
            for i in 0..<written {
                #expect(try Self.value(root + "/server", "k\(i)") != nil, "k\(i) reached the server")
            }
            let check = try runTopGun(["check", "--data", root + "/app"])
            #expect(check.status == 0, "\(check.out) \(check.err)")
        }
    }

    /// nginx in front of `topgun serve --http`, as a WebSocket reverse proxy: apps sync
    /// both ways through it, also after the server behind it restarts.
    @Test func appsSyncThroughNginx() async throws {
        _ = try #require(topgunBinary, "build the topgun executable first (swift build)")
        let nginx = try #require(["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }, "install nginx")
        try await withTemporaryDirectory { root in
            let token = try Self.tokenFile(root)
            let ports = reservePorts(2)
            let (backend, front) = (ports[0], ports[1])
            let proxy = try NginxProcess(binary: nginx, root: root + "/nginx", listen: front, upstream: backend)
            defer { proxy.stop() }
            let url = "ws://127.0.0.1:\(front)/sync"
            var server = try ServeProcess(data: root + "/server", listen: backend, peers: [], token: token, extra: ["--http", "127.0.0.1:\(backend)"], listenFlag: "--http")
            try Self.put(root + "/phone", "from-phone", "p1")
            try Self.put(root + "/server", "from-server", "s1")
            let first = try Self.sync(root + "/phone", url, token: token)
            #expect(first.status == 0, "\(first.out) \(first.err)")
            let second = try Self.sync(root + "/laptop", url, token: token)
            #expect(second.status == 0, "\(second.err)")
            #expect(try Self.value(root + "/laptop", "from-phone") == "p1" && Self.value(root + "/laptop", "from-server") == "s1")
            // The server behind the proxy restarts; the apps write meanwhile.
            server.stop()
            try Self.put(root + "/laptop", "while-restarting", "l1")
            server = try ServeProcess(data: root + "/server", listen: backend, peers: [], token: token, extra: ["--http", "127.0.0.1:\(backend)"], listenFlag: "--http")
            defer { server.stop() }
            #expect(try Self.sync(root + "/laptop", url, token: token).status == 0)
            #expect(try Self.sync(root + "/phone", url, token: token).status == 0)
            #expect(try Self.value(root + "/phone", "while-restarting") == "l1")
            #expect(try Self.value(root + "/server", "while-restarting") == "l1")
            // Plain routes go through the proxy too.
            let health = try httpGet("http://127.0.0.1:\(front)/healthz")
            #expect(health == "ok\n")
        }
    }
}

/// nginx as a WebSocket reverse proxy on `listen`, forwarding to `upstream`, in the
/// foreground of this test.
final class NginxProcess {
    let process = Process()

    init(binary: String, root: String, listen: Int, upstream: Int) throws {
        try FileManager.default.createDirectory(atPath: root + "/logs", withIntermediateDirectories: true)
        let config = """
            daemon off;
            master_process off;
            pid \(root)/nginx.pid;
            error_log \(root)/logs/error.log warn;
            events { worker_connections 256; }
            http {
                access_log off;
                client_body_temp_path \(root)/body;
                proxy_temp_path \(root)/proxy;
                fastcgi_temp_path \(root)/fastcgi;
                uwsgi_temp_path \(root)/uwsgi;
                scgi_temp_path \(root)/scgi;
                map $http_upgrade $connection_upgrade { default upgrade; '' close; }
                server {
                    listen 127.0.0.1:\(listen);
                    location / {
                        proxy_pass http://127.0.0.1:\(upstream);
                        proxy_http_version 1.1;
                        proxy_set_header Upgrade $http_upgrade;
                        proxy_set_header Connection $connection_upgrade;
                        proxy_set_header Host $host;
                        proxy_read_timeout 3600s;
                        proxy_buffering off;
                    }
                }
            }
            """
        try config.write(toFile: root + "/nginx.conf", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-p", root, "-c", root + "/nginx.conf", "-e", root + "/logs/error.log"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // Ready when it accepts connections.
        let deadline = Date().addingTimeInterval(10)
        while !acceptsConnections(listen) {
            guard Date() < deadline, process.isRunning else { throw NginxFailed(log: (try? String(contentsOfFile: root + "/logs/error.log", encoding: .utf8)) ?? "") }
            usleep(20_000)
        }
    }

    /// SIGKILL: a child of the test process may inherit a mask that blocks SIGTERM.
    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

struct NginxFailed: Error, CustomStringConvertible {
    var log: String
    var description: String { "nginx did not start: \(log)" }
}
