import Foundation
import Testing
import TopGunTestSupport

/// Runs the built `topgun` binary as a subprocess.
enum CLI {
    static var binary: String? { topgunBinary }

    @discardableResult
    static func run(_ args: [String], through tool: [String] = [], redirectingTo output: String? = nil) throws -> ProcessResult {
        try runTopGun(args, through: tool, redirectingTo: output)
    }
}

struct CLITests {
    @Test func dataCommandsRoundTrip() throws {
        try withTemporaryDirectory { dir in
            let d = ["--data", dir + "/db"]
            #expect(try CLI.run(["put"] + d + ["users", "u1", #"{"name":"Ann","age":31}"#]).status == 0)
            #expect(try CLI.run(["put"] + d + ["users", "u2", #"{"name":"Bo","age":17}"#]).status == 0)
            #expect(try CLI.run(["get"] + d + ["users", "u1"]).out == "{\"age\":31,\"name\":\"Ann\"}\n")
            #expect(try CLI.run(["delete"] + d + ["users", "u2"]).status == 0)
            let missing = try CLI.run(["get"] + d + ["users", "u2"])
            #expect(missing.status == 1 && missing.out.isEmpty)
            #expect(try CLI.run(["incr"] + d + ["likes", "p", "--by", "5"]).out == "5\n")
            #expect(try CLI.run(["incr"] + d + ["likes", "p", "--by=-2"]).out == "3\n")
            #expect(try CLI.run(["add"] + d + ["tags", "p", #""swift""#]).status == 0)
            #expect(try CLI.run(["add"] + d + ["tags", "p", #""db""#]).status == 0)
            #expect(try CLI.run(["remove"] + d + ["tags", "p", #""db""#]).status == 0)
            #expect(try CLI.run(["get"] + d + ["tags", "p"]).out == "[\"swift\"]\n")
            let query = try CLI.run(["query"] + d + ["users", #"{"op":"gte","path":"age","value":18}"#, "--format", "json"])
            #expect(query.out == "{\"key\":\"u1\",\"value\":{\"age\":31,\"name\":\"Ann\"}}\n")
            let explain = try CLI.run(["query"] + d + ["users", #"{"op":"eq","path":"id","value":"u1"}"#, "--explain"])
            #expect(explain.out.contains("partitions touched 1 of 271"))
            #expect(try CLI.run(["scan"] + d + ["users"]).out.contains("u1"))
            #expect(try CLI.run(["index"] + d + ["users", "age"]).status == 0)
            #expect(try CLI.run(["query"] + d + ["users", #"{"op":"lt","path":"age","value":99}"#, "--explain"]).out.contains("index scan of users.age"))
            let inspect = try CLI.run(["inspect"] + d + ["--json"])
            #expect(inspect.status == 0 && inspect.out.contains("\"users\"") && inspect.out.contains("\"oplog\""))
            #expect(try CLI.run(["check"] + d).out.contains("ok"))
            // Export, import elsewhere, same answers.
            #expect(try CLI.run(["export"] + d + [dir + "/log.tgs"]).status == 0)
            #expect(try CLI.run(["import", "--data", dir + "/copy", dir + "/log.tgs"]).status == 0)
            #expect(try CLI.run(["get", "--data", dir + "/copy", "users", "u1"]).out == "{\"age\":31,\"name\":\"Ann\"}\n")
            #expect(try CLI.run(["get", "--data", dir + "/copy", "likes", "p"]).out == "3\n")
        }
    }

    @Test func badInputIsOneClearLineAndNonZero() throws {
        try withTemporaryDirectory { dir in
            let d = ["--data", dir + "/db"]
            try CLI.run(["put"] + d + ["users", "u1", "1"])
            let cases: [([String], String)] = [
                (["put"] + d + ["users", "u1", "{not json"], "malformed JSON"),
                (["query"] + d + ["users", "{"], "malformed predicate JSON"),
                (["query"] + d + ["nope", #"{"op":"exists","path":"a"}"#], "unknown map nope"),
                (["get", "--data", "/etc/hostname", "users", "u1"], "not a directory"),
                (["import"] + d + [dir + "/missing.tgs"], "cannot read"),
            ]
            for (args, message) in cases {
                let r = try CLI.run(args)
                #expect(r.status != 0, "\(args)")
                #expect(r.err.contains(message), "\(args): \(r.err)")
                #expect(r.err.split(separator: "\n").count == 1, "one line: \(r.err)")
            }
            // A corrupted segment file is refused whole.
            try CLI.run(["export"] + d + [dir + "/log.tgs"])
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/log.tgs")))
            bytes[bytes.count - 10] ^= 0xFF
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/bad.tgs"))
            let r = try CLI.run(["import", "--data", dir + "/other", dir + "/bad.tgs"])
            #expect(r.status != 0 && r.err.contains("nothing was imported"))
            #expect(try CLI.run(["get", "--data", dir + "/other", "users", "u1"]).status == 1)
        }
    }

    @Test func everyCommandHasHelpWithAnExample() throws {
        for command in ["put", "get", "delete", "incr", "add", "remove", "query", "scan", "watch", "export", "import", "index", "inspect", "check", "serve", "demo"] {
            let r = try CLI.run([command, "--help"])
            #expect(r.status == 0 && r.out.contains("Example"), "\(command)")
        }
        #expect(try CLI.run(["--version"]).out.hasPrefix("0."))
    }

    @Test func progressIsABarOnATerminalAndLinesOtherwise() throws {
        try withTemporaryDirectory { dir in
            let d = ["--data", dir + "/db"]
            for i in 0..<50 { try CLI.run(["put"] + d + ["m", "k\(i)", #"{"v":\#(i)}"#]) }
            let plain = try CLI.run(["index"] + d + ["m", "v"])
            #expect(!plain.err.contains("\r") && plain.err.contains("100%"))
            // `script` runs the command on a pseudo-terminal.
            guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { return }
            let tty = try CLI.run(["index"] + d + ["m", "w"], through: ["/usr/bin/script", "-qec"])
            #expect(tty.out.contains("\r") && tty.out.contains("[#"), "\(tty.out.debugDescription)")
        }
    }
}

@Suite(.timeLimit(.minutes(2)))
struct ServeMetricsTests {
    /// The exposition-format rules promtool's linter checks that matter here: every
    /// family has HELP and TYPE, counters end in `_total`, no milliseconds, no NaN.
    static func lintProblems(_ text: String) -> [String] {
        var problems: [String] = []
        var help = Set<String>()
        var type = Set<String>()
        var families = Set<String>()
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.hasPrefix("# HELP "), words.count > 3 { help.insert(String(words[2])) }
            if line.hasPrefix("# TYPE "), words.count == 4 {
                type.insert(String(words[2]))
                if words[3] == "counter" && !words[2].hasSuffix("_total") { problems.append("counter \(words[2]) without _total") }
            }
            guard !line.hasPrefix("#"), let name = words.first?.split(separator: "{").first else { continue }
            var family = String(name)
            for suffix in ["_bucket", "_sum", "_count"] where family.hasSuffix(suffix) && !type.contains(family) { family.removeLast(suffix.count) }
            families.insert(family)
            if family.hasSuffix("_ms") || family.contains("_ms_") || family.contains("millis") { problems.append("\(family): not a base unit") }
            if words.last.map({ $0.lowercased().contains("nan") }) == true { problems.append("\(line): no value") }
        }
        for family in families.subtracting(help) { problems.append("\(family) has no HELP") }
        for family in families.subtracting(type) { problems.append("\(family) has no TYPE") }
        return problems
    }

    /// promtool, where the machine has it (`.ci/run` unpacks it from Debian's
    /// prometheus package into `TOPGUN_PROMTOOL`).
    static var promtool: String? {
        [ProcessInfo.processInfo.environment["TOPGUN_PROMTOOL"], "/usr/bin/promtool"].compactMap { $0 }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test func serveExposesPrometheusMetricsAndStopsOnSIGTERM() async throws {
        let binary = try #require(CLI.binary)
        try await withTemporaryDirectory { dir in
            try "\(testSecret)\n".write(toFile: dir + "/token", atomically: true, encoding: .utf8)
            try "metrics-bearer-token-0123456789\n".write(toFile: dir + "/metrics-token", atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = [
                "serve", "--data", dir + "/db", "--listen", "127.0.0.1:0", "--token-file", dir + "/token", "--metrics", "127.0.0.1:0",
                "--metrics-token-file", dir + "/metrics-token",
            ]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            var text = ""
            while text.components(separatedBy: "\n").count < 3 {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
            }
            let metricsLine = try #require(text.split(separator: "\n").first { $0.hasPrefix("metrics on port") })
            let port = try #require(Int(metricsLine.split(separator: " ").last!))
            let url = "http://127.0.0.1:\(port)/metrics"
            // Without the token: 401; /healthz stays open.
            #expect(try runTool("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", url]).out == "401")
            #expect(try httpGet("http://127.0.0.1:\(port)/healthz") == "ok\n")
            // A write, so the op log has an entry to count.
            let a = try runTopGun(["put", "--data", dir + "/db", "m", "k", "1"])
            #expect(a.status == 0)
            // The gauges are sampled every second: wait for a sample with the counters.
            var metrics = ""
            _ = try await eventually {
                metrics = try runTool("/usr/bin/curl", ["-s", "-H", "Authorization: Bearer metrics-bearer-token-0123456789", url]).out
                return metrics.contains("topgun_oplog_entries 1") && metrics.contains("topgun_batch_duration_seconds_bucket")
            }
            #expect(metrics.contains("topgun_merge_ops_total") && metrics.contains("topgun_batch_duration_seconds_bucket"))
            #expect(metrics.contains("topgun_oplog_entries"))
            #expect(Self.lintProblems(metrics).isEmpty, "\(Self.lintProblems(metrics))")
            if let promtool = Self.promtool {
                try metrics.write(toFile: dir + "/metrics.txt", atomically: true, encoding: .utf8)
                let check = Process()
                check.executableURL = URL(fileURLWithPath: "/bin/sh")
                check.arguments = ["-c", "'\(promtool)' check metrics < '\(dir)/metrics.txt' 2>&1"]
                let pipe = Pipe()
                check.standardOutput = pipe
                try check.run()
                let said = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                check.waitUntilExit()
                #expect(check.terminationStatus == 0 && said.isEmpty, "promtool: \(said)")
            }
            p.terminate()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "graceful shutdown exits 0")
        }
    }

    /// A secret under 32 bytes, and plain HTTP beyond loopback without `--insecure`,
    /// stop `serve` with a message saying what to do.
    @Test func serveRefusesAShortSecretAndPlainTextBeyondLoopback() throws {
        try withTemporaryDirectory { dir in
            try "short\n".write(toFile: dir + "/short", atomically: true, encoding: .utf8)
            try "\(testSecret)\n".write(toFile: dir + "/token", atomically: true, encoding: .utf8)
            let short = try runTopGun(["serve", "--data", dir + "/a", "--listen", "127.0.0.1:0", "--token-file", dir + "/short"])
            #expect(short.status != 0 && short.err.contains("at least 32"), "\(short.err)")
            // Bytes that are not UTF-8 count as bytes: 11 bytes of 0xFF were decoded to
            // 11 replacement characters (33 bytes), and matched any 11 invalid bytes.
            try Data(repeating: 0xFF, count: 11).write(to: URL(fileURLWithPath: dir + "/binary"))
            let binary = try runTopGun(["serve", "--data", dir + "/a", "--listen", "127.0.0.1:0", "--token-file", dir + "/binary"])
            #expect(binary.status != 0 && binary.err.contains("at least 32"), "\(binary.err)")
            let plain = try runTopGun(["serve", "--data", dir + "/a", "--http", "0.0.0.0:0", "--token-file", dir + "/token"])
            #expect(plain.status != 0 && plain.err.contains("--insecure"), "\(plain.err)")
        }
    }
}

struct IdentityCommandTests {
    /// A copied directory takes a fresh id; a peer is forgotten; `inspect` shows what GC
    /// waits for.
    @Test func resetIDForgetPeerAndInspect() throws {
        try withTemporaryDirectory { dir in
            let a = ["--data", dir + "/a"]
            #expect(try CLI.run(["put"] + a + ["users", "u1", "1"]).status == 0)
            let before = try CLI.run(["inspect"] + a + ["--json"]).out
            try FileManager.default.copyItem(atPath: dir + "/a", toPath: dir + "/b")
            let reset = try CLI.run(["reset-id", "--data", dir + "/b"])
            #expect(reset.status == 0 && reset.out.contains("->"))
            let ids = reset.out.split(separator: " ").filter { $0.count == 16 || $0.hasSuffix("\n") }.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(ids.count == 2 && ids[0] != ids[1])
            #expect(before.contains(ids[0]), "the copy had the original's id")
            #expect(try CLI.run(["inspect", "--data", dir + "/b", "--json"]).out.contains(ids[1]))
            #expect(try CLI.run(["get", "--data", dir + "/b", "users", "u1"]).out == "1\n", "data is kept")

            let unknown = try CLI.run(["forget-peer"] + a + ["00000000000000ab"])
            #expect(unknown.status != 0 && unknown.err.contains("no peer"))
            let bad = try CLI.run(["forget-peer"] + a + ["not-hex"])
            #expect(bad.status != 0 && bad.err.contains("bad node id"))
        }
    }
}

struct CLIIntegrityTests {
    /// Writes the store could not read back are refused with one line; nothing changes.
    @Test func refusedWritesChangeNothing() throws {
        try withTemporaryDirectory { dir in
            let d = ["--data", dir + "/db"]
            #expect(try CLI.run(["put"] + d + ["users", "ok", "1"]).status == 0)
            let deep = String(repeating: "[", count: 66) + String(repeating: "]", count: 66)
            let refused = try CLI.run(["put"] + d + ["users", "evil", deep])
            #expect(refused.status == 1 && refused.err.contains("nesting too deep"), "\(refused.err)")
            #expect(try CLI.run(["put"] + d + ["users", "big", "18446744073709551615"]).err.contains("outside the Int64 range"))
            #expect(try CLI.run(["put"] + d + ["users", "--", "min", "-9223372036854775808"]).status == 0)
            #expect(try CLI.run(["get"] + d + ["users", "min"]).out == "-9223372036854775808\n")
            #expect(try CLI.run(["scan"] + d + ["users"]).status == 0)
            #expect(try CLI.run(["export"] + d + [dir + "/all.tgs"]).status == 0)
            #expect(try CLI.run(["check"] + d).out.contains("ok"))

            #expect(try CLI.run(["incr"] + d + ["likes", "p"]).status == 0)
            let deleteCounter = try CLI.run(["delete"] + d + ["likes", "p"])
            #expect(deleteCounter.status == 1 && deleteCounter.err.contains("cannot be deleted"))
            let removeLWW = try CLI.run(["remove"] + d + ["users", "ok", "1"])
            #expect(removeLWW.status == 1 && removeLWW.err.contains("kind mismatch"), "\(removeLWW.err)")
            #expect(try CLI.run(["add"] + d + ["tags", "p", #""a""#]).status == 0)
            #expect(try CLI.run(["delete"] + d + ["tags", "p"]).status == 0)
            #expect(try CLI.run(["get"] + d + ["tags", "p"]).out == "[]\n")
        }
    }

    @Test func argumentsThatAreNotUTF8AreRefused() throws {
        let binary = try #require(CLI.binary)
        try withTemporaryDirectory { dir in
            // A key with a stray 0xFF byte, passed through the shell untouched.
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "'\(binary)' put --data '\(dir)/db' users \"$(printf 'a\\377b')\" 1"]
            let err = Pipe()
            p.standardError = err
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 1 && text.contains("not valid UTF-8"), "\(text)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/db"), "nothing was created")
        }
    }
}

struct CLIOperationsTests {
    /// Report lines (stdout) and progress lines (stderr) keep the order they were
    /// written in when both go to one file.
    @Test func demoOutputKeepsItsOrderInAFile() throws {
        try withTemporaryDirectory { dir in
            let run = try CLI.run(["demo"], through: ["/bin/sh", "-c"], redirectingTo: dir + "/demo.txt 2>&1")
            #expect(run.status == 0)
            let lines = try String(contentsOfFile: dir + "/demo.txt", encoding: .utf8).split(separator: "\n").map(String.init)
            #expect(lines.first?.hasPrefix("TopGun ") == true, "\(lines.prefix(3))")
            let header = try #require(lines.firstIndex { $0.hasPrefix("6. Merge throughput") })
            let progress = try #require(lines.firstIndex { $0.contains("merging:") })
            #expect(header < progress)
            #expect(lines.contains("Replicas converged."))
        }
    }

    @Test func readCommandsNeverCreateADatabase() throws {
        try withTemporaryDirectory { dir in
            for command in [["get", "users", "u"], ["scan", "users"], ["inspect"], ["check"], ["export", dir + "/out.tgs"]] {
                let r = try CLI.run([command[0], "--data", dir + "/typo"] + command.dropFirst())
                #expect(r.status == 1 && r.err.contains("no database at"), "\(command): \(r.err)")
            }
            #expect(!FileManager.default.fileExists(atPath: dir + "/typo"))
            #expect(!FileManager.default.fileExists(atPath: dir + "/out.tgs"))
        }
    }

    @Test func outputThatCannotBeWrittenIsAnError() throws {
        try withTemporaryDirectory { dir in
            let d = ["--data", dir + "/db"]
            try CLI.run(["put"] + d + ["users", "u", "1"])
            // A FIFO (or a symlink, a device) at the output path is not replaced.
            #expect(mkfifo(dir + "/fifo", 0o644) == 0)
            let fifo = try CLI.run(["export"] + d + [dir + "/fifo"])
            #expect(fifo.status == 1 && fifo.err.contains("not a regular file"))
            // Standard output on a full device.
            let full = try CLI.run(["scan"] + d + ["users"], through: ["/bin/sh", "-c"], redirectingTo: "/dev/full")
            #expect(full.status == 1 && full.err.contains("cannot write standard output"), "\(full.err)")
        }
    }

    @Test func backupAndRestore() throws {
        try withTemporaryDirectory { dir in
            let d = ["--data", dir + "/a"]
            try CLI.run(["put"] + d + ["users", "u", "1"])
            let backup = try CLI.run(["backup"] + d + [dir + "/copy"])
            #expect(backup.status == 0 && backup.out.contains("1 records verified"), "\(backup.err)")
            let again = try CLI.run(["backup"] + d + [dir + "/copy"])
            #expect(again.status == 1 && again.err.contains("already holds a database"))
            let restore = try CLI.run(["restore", dir + "/copy", "--data", dir + "/b"])
            #expect(restore.status == 0, "\(restore.err)")
            #expect(try CLI.run(["get", "--data", dir + "/b", "users", "u"]).out == "1\n")
            let a = try CLI.run(["inspect"] + d).out.split(separator: "\n").first
            let b = try CLI.run(["inspect", "--data", dir + "/b"]).out.split(separator: "\n").first
            #expect(a != nil && a != b, "the restored copy has its own node id")
        }
    }
}
