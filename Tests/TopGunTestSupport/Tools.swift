import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs an external tool to completion and returns its standard output.
@discardableResult
public func runTool(_ path: String, _ arguments: [String]) throws -> (status: Int32, out: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}

/// `GET url` with curl; the body ("" when the request failed).
public func httpGet(_ url: String) throws -> String {
    try runTool("/usr/bin/curl", ["-s", url]).out
}

/// A self-signed certificate for `host` (common name and DNS name) with its key, as
/// `dir/cert.pem` and `dir/key.pem`.
public func makeCertificate(in dir: String, host: String) throws -> (certificate: String, key: String) {
    let (status, _) = try runTool("/usr/bin/openssl", [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(host)", "-addext", "subjectAltName=DNS:\(host)",
        "-days", "1", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
    ])
    guard status == 0 else { throw ToolFailed(tool: "openssl", status: status) }
    return (dir + "/cert.pem", dir + "/key.pem")
}

public struct ToolFailed: Error {
    public var tool: String
    public var status: Int32
}

/// Calls `body` (`bind` or `connect`) on a fresh TCP socket with 127.0.0.1:`port`;
/// true when it returned 0. The socket is closed afterwards.
func onLoopbackSocket(_ port: Int, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
public func acceptsConnections(_ port: Int) -> Bool {
    onLoopbackSocket(port) { connect($0, $1, $2) }
}
