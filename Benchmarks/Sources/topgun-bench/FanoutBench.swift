import CBaselines
import Foundation
import Logging
import NIOPosix
import Synchronization
import TopGunCore
import TopGunReplication
import TopGunStore

/// Fan-out: one `topgun serve --http` process and N app databases in this process, each
/// syncing with it over its own loopback WebSocket (one shared pair of event-loop
/// threads). Apps picked at random write 200 times a second in total; reports how long
/// until every app holds each write (p50/p99), the server's CPU seconds and peak RSS,
/// and its CPU while all N are connected and idle.
struct FanoutBench {
    let config: Config
    let clients: Int

    static var binary: String? {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        return [ProcessInfo.processInfo.environment["TOPGUN_BINARY"], root + "/.build/release/topgun", root + "/.build/debug/topgun"]
            .compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// When each write was made and when each app had it.
    final class Arrivals: Sendable {
        struct Write {
            var at: Double
            var seen = 0
            var last = 0.0
        }
        let writes = Mutex<[Int: Write]>([:])

        func wrote(_ i: Int) { writes.withLock { $0[i] = Write(at: tg_now()) } }

        func arrived(_ i: Int) {
            let now = tg_now()
            writes.withLock {
                $0[i]?.seen += 1
                $0[i]?.last = now
            }
        }
    }

    func run() async throws {
        guard let binary = Self.binary else {
            print("topgun-bench --fanout: build the server first: swift build -c release (or set TOPGUN_BINARY)")
            return
        }
        let root = NSTemporaryDirectory() + "topgun-fanout-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try "fanout-benchmark-secret-of-32-bytes+\n".write(toFile: root + "/token", atomically: true, encoding: .utf8)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: binary)
        server.arguments = [
            "serve", "--data", root + "/server", "--http", "127.0.0.1:0", "--token-file", root + "/token", "--durability", "no-sync",
            "--anti-entropy", "0", "--idle-timeout", "30",
        ]
        let out = Pipe()
        server.standardOutput = out
        server.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try server.run()
        defer {
            server.terminate()
            server.waitUntilExit()
        }
        var line = ""
        while !line.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += String(decoding: chunk, as: UTF8.self)
        }
        guard let port = Int(line.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") else {
            print("topgun-bench --fanout: the server did not start")
            return
        }
        let pid = server.processIdentifier
        print("fanout: \(clients) apps, one topgun serve (pid \(pid)) on ws://127.0.0.1:\(port)/sync, \(config.seconds) s of writes at 200/s")

        var logger = Logger(label: "fanout")
        logger.logLevel = .error
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let token = Array("fanout-benchmark-secret-of-32-bytes+".utf8)
        let arrivals = Arrivals()
        var apps: [Database] = []
        var sessions: [SyncSession] = []
        var watchers: [Task<Void, Never>] = []
        let connectStart = tg_now()
        for i in 0..<clients {
            let db = try Database(path: "\(root)/app-\(i)", options: .init(durability: .noSync, mapSize: 16 << 20))
            let changes = db.changes()
            watchers.append(Task {
                for await change in changes where change.map == "fanout" {
                    if let n = Int(change.key.dropFirst(2)) { arrivals.arrived(n) }
                }
            })
            apps.append(db)
            sessions.append(try db.sync(with: "ws://127.0.0.1:\(port)/sync", token: token, logger: logger, eventLoopGroup: group))
        }
        for session in sessions { try await session.waitUntilIdle() }
        let connected = tg_now() - connectStart
        print(String(format: "  connected and caught up: %d apps in %.1f s", clients, connected))

        // Idle: everyone connected, nobody writing.
        let idleSeconds = config.quick ? 5.0 : 10.0
        let cpuBeforeIdle = Self.cpuSeconds(pid)
        try await Task.sleep(for: .milliseconds(Int(idleSeconds * 1_000)))
        let idleCPU = (Self.cpuSeconds(pid) - cpuBeforeIdle) / idleSeconds
        print(String(format: "  idle: server CPU %.4f s per second (%.2f %% of a core), %.4f per 1,000 connected apps", idleCPU, idleCPU * 100, idleCPU * 1_000 / Double(clients)))

        // Writes at 200/s from random apps.
        let writes = Int(config.seconds * 200)
        var rng = SplitMix64(seed: config.seed)
        let cpuBeforeWrites = Self.cpuSeconds(pid)
        let start = tg_now()
        for i in 0..<writes {
            let due = start + Double(i) / 200
            let wait = due - tg_now()
            if wait > 0 { try await Task.sleep(for: .milliseconds(Int(wait * 1_000))) }
            let app = apps[Int.random(in: 0..<clients, using: &rng)]
            arrivals.wrote(i)
            try await app.map("fanout", of: Int.self).set("w-\(i)", i)
        }
        let writing = tg_now() - start
        print(String(format: "  wrote %d in %.1f s: %.0f writes/s (the apps share this process's cores with the server)", writes, writing, Double(writes) / writing))
        // Every app, the writer included, sees each write once in its change feed.
        let deadline = tg_now() + 120
        while tg_now() < deadline {
            let done = arrivals.writes.withLock { $0.values.allSatisfy { $0.seen >= clients } }
            if done { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let cpuWrites = Self.cpuSeconds(pid) - cpuBeforeWrites
        let elapsed = tg_now() - start
        let all = arrivals.writes.withLock { $0 }
        let complete = all.values.filter { $0.seen >= clients }
        let latencies = complete.map { $0.last - $0.at }.sorted()
        func percentile(_ p: Double) -> Double { latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        print(String(format: "  %d writes, %d reached all %d apps; time until every app held a write: p50 %.0f ms, p99 %.0f ms, max %.0f ms",
            writes, complete.count, clients, percentile(0.5) * 1_000, percentile(0.99) * 1_000, (latencies.last ?? .nan) * 1_000))
        print(String(format: "  server: %.2f CPU s over %.1f s of writes and delivery (%.0f %% of a core), peak RSS %d MB",
            cpuWrites, elapsed, cpuWrites / elapsed * 100, Self.peakRSSKilobytes(pid) / 1_024))
        for session in sessions { await session.stop() }
        for watcher in watchers { watcher.cancel() }
        for db in apps { db.close() }
        try await group.shutdownGracefully()
    }

    /// User + system CPU seconds of process `pid` (from /proc).
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Peak resident set size of process `pid` in KiB (`VmHWM`).
    static func peakRSSKilobytes(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
        return line.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
    }
}
