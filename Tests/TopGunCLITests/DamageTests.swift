import Foundation
import LMDB
import Testing
import TopGunCore
import TopGunTestSupport

@testable import TopGunStore

/// Faults met by the commands: said where they are met, never left out silently.
@Suite(.timeLimit(.minutes(3)))
struct DamageTests {
    /// A record that fails its digest fails `export` with its name (no file written);
    /// `--skip-damaged` writes the rest and names what it left out.
    @Test func exportNamesADamagedRecordInsteadOfLeavingItOut() throws {
        try withTemporaryDirectory { dir in
            do {
                let store = try Store(path: dir + "/db", options: .init(durability: .noSync))
                _ = try store.apply([Mutation.set(map: "m", key: "bad", value: "v", ttlMillis: nil)])
                _ = try store.apply([Mutation.set(map: "m", key: "good", value: "w", ttlMillis: nil)])
                try Damage.breakRecord(store, "m", "bad")
            }
            let failed = try runTopGun(["export", "--data", dir + "/db", dir + "/out.tgs"])
            #expect(failed.status == 1 && failed.err.contains("m/bad"), "\(failed.err)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/out.tgs"))
            let skipped = try runTopGun(["export", "--data", dir + "/db", "--skip-damaged", dir + "/out.tgs"])
            #expect(skipped.status == 0, "\(skipped.err)")
            #expect(skipped.err.contains("skipped damaged record m/bad") && skipped.err.contains("1 damaged records skipped"), "\(skipped.err)")
        }
    }

    /// A flipped bit in a log entry's origin stamp made the entry pass for superseded:
    /// `export` exited 0 with the record missing. It fails naming the record, and
    /// `check --heal` logs it again.
    @Test func exportNamesARecordWhoseLogEntryWasLost() throws {
        try withTemporaryDirectory { dir in
            do {
                let store = try Store(path: dir + "/db", options: .init(durability: .noSync))
                _ = try store.apply([Mutation.set(map: "m", key: "lost", value: "v", ttlMillis: nil)])
                _ = try store.apply([Mutation.set(map: "m", key: "kept", value: "w", ttlMillis: nil)])
                try Damage.flipValue(store, .oplog, key: try Damage.entries(store, .oplog)[0].0, at: 9, mask: 0x10)
            }
            let failed = try runTopGun(["export", "--data", dir + "/db", dir + "/out.tgs"])
            #expect(failed.status == 1 && failed.err.contains("m/lost"), "\(failed.err)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/out.tgs"))
            let healed = try runTopGun(["check", "--heal", "--data", dir + "/db"])
            #expect(healed.status == 0 && healed.out.contains("1 records logged again (m/lost)"), "\(healed.out) \(healed.err)")
            let exported = try runTopGun(["export", "--data", dir + "/db", dir + "/out.tgs"])
            #expect(exported.status == 0 && exported.err.contains("exported 2 ops"), "\(exported.err)")
        }
    }

    /// A damaged record's Merkle digest still matched the healthy peer's, so `repair`
    /// fetched nothing and the record stayed damaged: it is removed first and comes back
    /// from the peer.
    @Test func repairRestoresADamagedRecordFromThePeer() throws {
        try withTemporaryDirectory { dir in
            try "\(testSecret)\n".write(toFile: dir + "/token", atomically: true, encoding: .utf8)
            for i in 0..<10 { #expect(try runTopGun(["put", "--data", dir + "/a", "m", "k\(i)", "\(i)"]).status == 0) }
            #expect(try runTopGun(["export", "--data", dir + "/a", dir + "/a.tgs"]).status == 0)
            #expect(try runTopGun(["import", "--data", dir + "/b", dir + "/a.tgs"]).status == 0)
            do {
                let store = try Store(path: dir + "/b", options: .init(durability: .noSync))
                try Damage.breakRecord(store, "m", "k3")
            }
            #expect(try runTopGun(["check", "--data", dir + "/b"]).status != 0)
            let server = try ServeProcess(data: dir + "/a", listen: reservePorts(1)[0], peers: [], token: dir + "/token", extra: [])
            defer { server.stop() }
            let port = server.port
            let repair = try runTopGun(["repair", "--data", dir + "/b", "--from", "127.0.0.1:\(port)", "--token-file", dir + "/token"])
            #expect(repair.status == 0, "\(repair.err)")
            #expect(repair.err.contains("m/k3"), "\(repair.err)")
            #expect(try runTopGun(["check", "--data", dir + "/b"]).status == 0)
            #expect(try runTopGun(["get", "--data", dir + "/b", "m", "k3"]).out.contains("3"))
            let inspect = try runTopGun(["inspect", "--data", dir + "/b"])
            #expect(inspect.out.contains("1 damaged records removed, 1 restored"), "\(inspect.out)")
        }
    }

    /// An import that fills the disk leaves nothing of its file behind, as it says
    /// (it committed segment by segment: 600 of 1,500 records stayed). The disk is a
    /// real 2 MiB tmpfs in a private mount namespace.
    @Test func anImportThatFillsTheDiskAppliesNothing() throws {
        let binary = try #require(topgunBinary)
        try withTemporaryDirectory { dir in
            do {
                let source = try Store(path: dir + "/source", options: .init(durability: .noSync))
                let text = Value.string(String(repeating: "0123456789", count: 200))
                for batch in 0..<3 {
                    _ = try source.apply((0..<500).map { Mutation.set(map: "m", key: "k\(batch)-\($0)", value: text, ttlMillis: nil) })
                }
            }
            let export = try runTopGun(["export", "--data", dir + "/source", "--segment-size", "100", dir + "/all.tgs"])
            #expect(export.status == 0, "\(export.err)")
            try FileManager.default.createDirectory(atPath: dir + "/small", withIntermediateDirectories: true)
            // One seed record first (it must survive), then the import that cannot fit;
            // what the database holds afterwards is counted inside the same namespace.
            let script = """
                set -u
                mount -t tmpfs -o size=2m tmpfs '\(dir)/small' || exit 90
                '\(binary)' put --data '\(dir)/small/db' m seed '"kept"' || exit 91
                '\(binary)' import --data '\(dir)/small/db' '\(dir)/all.tgs' 2> '\(dir)/import.err'
                echo "import=$?"
                '\(binary)' scan --data '\(dir)/small/db' m | wc -l
                '\(binary)' check --data '\(dir)/small/db' > /dev/null 2>&1; echo "check=$?"
                """
            let (status, out) = try runTool("/usr/bin/unshare", ["-rm", "/bin/sh", "-c", script])
            #expect(status == 0, "mount namespace: \(out)")
            let lines = out.split(separator: "\n").map(String.init)
            let message = (try? String(contentsOfFile: dir + "/import.err", encoding: .utf8)) ?? ""
            #expect(lines.first == "import=1", "\(lines) \(message)")
            #expect(message.contains("nothing of") && message.contains("was imported"), "\(message)")
            #expect(lines.dropFirst().first?.trimmingCharacters(in: .whitespaces) == "1", "only the seed record: \(lines)")
            #expect(lines.last == "check=0", "\(lines)")
        }
    }
}
