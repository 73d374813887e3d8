import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The built `topgun` executable next to the test bundle (or in `.build/debug`), nil
/// when it was not built (`swift build` first).
public let topgunBinary: String? = [
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("topgun").path,
    repositoryRoot + "/.build/debug/topgun",
].first { FileManager.default.isExecutableFile(atPath: $0) }

/// Thrown when the tests need the `topgun` executable and it was not built.
public struct MissingBinary: Error, CustomStringConvertible {
    public var description: String { "build the topgun executable first (swift build)" }
}

/// What a finished `topgun` process left behind.
public struct ProcessResult: Sendable {
    public var status: Int32
    /// True when it died by a signal.
    public var signalled: Bool
    public var out: String
    public var err: String
}

/// Runs `topgun args` to completion. With `tool` (e.g. `["/bin/sh", "-c"]`) the command
/// runs through it, its standard output redirected to `output` when given.
@discardableResult
public func runTopGun(_ args: [String], through tool: [String] = [], redirectingTo output: String? = nil) throws -> ProcessResult {
    guard let binary = topgunBinary else { throw MissingBinary() }
    let p = Process()
    let out = Pipe()
    let err = Pipe()
    if tool.isEmpty {
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
    } else {
        p.executableURL = URL(fileURLWithPath: tool[0])
        let command = ([binary] + args).map { "'\($0)'" }.joined(separator: " ") + (output.map { " > \($0)" } ?? "")
        p.arguments = Array(tool.dropFirst()) + [command] + (output == nil ? ["/dev/null"] : [])
    }
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Both pipes are drained concurrently so neither can fill up and stall the child.
    let errData = Mutex(Data())
    let errDone = DispatchSemaphore(value: 0)
    Thread {
        let data = err.fileHandleForReading.readDataToEndOfFile()
        errData.withLock { $0 = data }
        errDone.signal()
    }.start()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    errDone.wait()
    p.waitUntilExit()
    return ProcessResult(
        status: p.terminationStatus, signalled: p.terminationReason == .uncaughtSignal,
        out: String(decoding: o, as: UTF8.self), err: String(decoding: errData.withLock { $0 }, as: UTF8.self))
}

/// TCP ports for test listeners: below the kernel's ephemeral range (so no outgoing
/// connection of a reconnecting node can be handed one meanwhile), distinct within this
/// process, and free when handed out.
public func reservePorts(_ n: Int) -> [Int] {
    (0..<n).map { _ in
        while true {
            let port = nextPort.withLock { next in
                defer { next = next >= 32_000 ? 20_000 : next + 1 }
                return next
            }
            if portIsFree(port) { return port }
        }
    }
}

private let nextPort = Mutex(20_000 + Int(getpid() % 1_000) * 12)

private func portIsFree(_ port: Int) -> Bool {
    onLoopbackSocket(port) { bind($0, $1, $2) }
}

/// A running `topgun serve`; the initialiser returns once it listens.
public final class ServeProcess: @unchecked Sendable {
    // @unchecked: the Process is only started, signalled and waited for.
    public let process = Process()
    /// The port it listens on.
    public private(set) var port = 0

    /// `listenFlag` "--listen" (TCP, the default) puts `listen` there itself; with
    /// another flag (such as "--http") `extra` names the addresses.
    public init(
        data: String, listen: Int, peers: [Int], token: String, extra: [String] = ["--anti-entropy", "2"], listenFlag: String = "--listen",
        stderr: String? = nil
    ) throws {
        guard let binary = topgunBinary else { throw MissingBinary() }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments =
            ["serve", "--data", data, "--token-file", token] + (listenFlag == "--listen" ? ["--listen", "127.0.0.1:\(listen)"] : []) + extra
            + peers.flatMap { ["--peer", "127.0.0.1:\($0)"] }
        let out = Pipe()
        process.standardOutput = out
        if let stderr { FileManager.default.createFile(atPath: stderr, contents: nil) }
        process.standardError = FileHandle(forWritingAtPath: stderr ?? "/dev/null")
        try process.run()
        // The node prints its port once listening.
        var text = ""
        while !text.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        port = Int(text.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        guard port != 0 else {
            process.waitUntilExit()
            throw ServeFailed(status: process.terminationStatus)
        }
    }

    /// Kills it with SIGKILL and waits.
    public func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Sends it SIGHUP (reload the policy file).
    public func hangUp() { kill(process.processIdentifier, SIGHUP) }

    /// Stops it with SIGTERM and waits.
    public func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

/// `topgun serve` exited before it listened.
public struct ServeFailed: Error, CustomStringConvertible {
    public var status: Int32
    public var description: String { "topgun serve exited with status \(status) before listening" }
}
