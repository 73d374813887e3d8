import Foundation
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// The HTTP listener against RFC 6455 and HTTP/1.1, spoken byte by byte over TCP.
@Suite(.timeLimit(.minutes(2)))
struct WebSocketConformanceTests {
    static let upgrade = Array(
        "GET /sync HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .utf8)

    /// A client frame: masked unless `masked` is false.
    static func frame(_ opcode: UInt8, _ payload: [UInt8] = [], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true, length: UInt64? = nil)
        -> [UInt8]
    {
        var out: [UInt8] = [(fin ? 0x80 : 0) | rsv << 4 | opcode]
        let n = length ?? UInt64(payload.count)
        let mask: UInt8 = masked ? 0x80 : 0
        if n < 126 {
            out.append(mask | UInt8(n))
        } else if n < 65_536 {
            out.append(mask | 126)
            out.appendBigEndian(UInt16(n))
        } else {
            out.append(mask | 127)
            out.appendBigEndian(n)
        }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        if masked { out += key }
        out += payload.enumerated().map { masked ? $0.element ^ key[$0.offset % 4] : $0.element }
        return out
    }

    /// The server's frames after its HTTP response: (opcode, payload).
    static func serverFrames(_ bytes: [UInt8]) -> (response: String, frames: [(UInt8, [UInt8])]) {
        guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: Array("\r\n\r\n".utf8)) }) else {
            return (String(decoding: bytes, as: UTF8.self), [])
        }
        var frames: [(UInt8, [UInt8])] = []
        var i = end + 4
        while i + 2 <= bytes.count {
            let opcode = bytes[i] & 0x0F
            var n = Int(bytes[i + 1] & 0x7F)
            var header = 2
            if n == 126, i + 4 <= bytes.count {
                n = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
                header = 4
            } else if n == 127, i + 10 <= bytes.count {
                n = bytes[(i + 2)..<(i + 10)].reduce(0) { $0 << 8 | Int($1) }
                header = 10
            }
            guard i + header + n <= bytes.count else { break }
            frames.append((opcode, Array(bytes[(i + header)..<(i + header + n)])))
            i += header + n
        }
        return (String(decoding: bytes[..<end], as: UTF8.self), frames)
    }

    static func withHTTPNode(_ body: (Int) async throws -> Void) async throws {
        try await withTemporaryDirectory { root in
            let server = try await RunningNode(try openStore(root + "/a", node: 1), listen: false, http: 0)
            try await body(try await server.node.listeningHTTP())
            await server.stop()
        }
    }

    static func closeCode(_ payload: [UInt8]) -> UInt16? { payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil }

    /// Each broken frame ends the connection with a Close carrying the code RFC 6455
    /// asks for; a Close is answered with a Close echoing its code.
    @Test(arguments: [
        ("a Close", [frame(0x8, [0x03, 0xE8])], UInt16(1000)),
        ("reserved bit 1", [frame(0x2, [1, 2], rsv: 0b100)], 1002),
        ("reserved bit 3", [frame(0x2, [1, 2], rsv: 0b001)], 1002),
        ("an unmasked frame", [frame(0x2, [1, 2], masked: false)], 1002),
        ("a lone continuation", [frame(0x0, [1, 2])], 1002),
        ("a data frame inside a fragmented message", [frame(0x2, [1], fin: false), frame(0x2, [2])], 1002),
        ("a reserved opcode", [frame(0x3, [1])], 1002),
        ("a Close of one byte", [frame(0x8, [0x03])], 1002),
        ("a Close with code 999", [frame(0x8, [0x03, 0xE7])], 1002),
        ("a Close with code 1005", [frame(0x8, [0x03, 0xED])], 1002),
        ("a Close whose reason is not UTF-8", [frame(0x8, [0x03, 0xE8, 0xFF, 0xFE])], 1007),
        ("a text message", [frame(0x1, Array("hi".utf8))], 1003),
        ("a fragmented ping", [frame(0x9, [1], fin: false)], 1002),
        ("a 32 MiB frame before authentication", [frame(0x2, [], length: 32 << 20)], 1009),
    ])
    func brokenFramesEndTheConnectionWithTheRightCode(_ what: String, _ frames: [[UInt8]], _ code: UInt16) async throws {
        try await Self.withHTTPNode { port in
            let session = try await rawSession(port: port, send: [Self.upgrade] + frames)
            let (response, received) = Self.serverFrames(session.bytes)
            #expect(response.hasPrefix("HTTP/1.1 101"), "\(what): \(response)")
            #expect(session.closed, "\(what): the server closed the connection")
            let close = received.last { $0.0 == 0x8 }
            #expect(close.flatMap { Self.closeCode($0.1) } == code, "\(what): \(received.map(\.0))")
        }
    }

    /// A ping is answered with a pong carrying its payload, even between the
    /// fragments of a message; an empty Close gets an empty Close.
    @Test func pingsArePongedAndAnEmptyCloseIsAnswered() async throws {
        try await Self.withHTTPNode { port in
            let session = try await rawSession(
                port: port, send: [Self.upgrade, Self.frame(0x2, [0, 0], fin: false), Self.frame(0x9, Array("abc".utf8)), Self.frame(0x8)])
            let (_, received) = Self.serverFrames(session.bytes)
            #expect(received.contains { $0.0 == 0xA && $0.1 == Array("abc".utf8) })
            #expect(received.last.map { $0.0 == 0x8 && $0.1.isEmpty } == true, "\(received.map(\.0))")
            #expect(session.closed)
        }
    }

    /// Only a GET whose Connection header names Upgrade is upgraded.
    @Test(arguments: [
        "POST /sync HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
        "PUT /sync HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
        "GET /sync HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ])
    func onlyAGETWithConnectionUpgradeIsUpgraded(_ request: String) async throws {
        try await Self.withHTTPNode { port in
            let session = try await rawSession(port: port, send: [Array(request.utf8)], timeout: .seconds(10))
            let response = String(decoding: session.bytes, as: UTF8.self)
            #expect(response.hasPrefix("HTTP/1.1 4"), "\(response)")
            #expect(!response.contains(" 101 "))
        }
    }

    /// Keep-alive: three pipelined requests get three answers, in order, on one
    /// connection, which closes after the one that asks for it.
    @Test func pipelinedRequestsAreAllAnswered() async throws {
        try await Self.withHTTPNode { port in
            let requests =
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let session = try await rawSession(port: port, send: [Array(requests.utf8)], timeout: .seconds(10))
            let text = String(decoding: session.bytes, as: UTF8.self)
            let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { "HTTP/1.1 " + ($0.components(separatedBy: "\r\n").first ?? "") }
            #expect(statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"], "\(text)")
            #expect(session.closed)
        }
    }

    /// With a routes token, `/metrics` answers only a request that carries it;
    /// `/healthz` stays open.
    @Test func routesCanRequireABearerToken() async throws {
        try await withTemporaryDirectory { root in
            let node = try ReplicaNode(
                store: try openStore(root + "/a", node: 1),
                configuration: .init(
                    listen: nil, token: Array(testSecret.utf8), http: .init(host: "127.0.0.1", port: 0),
                    httpRoutes: ["/metrics": { ("text/plain", "m 1\n") }], httpRoutesToken: Array("metrics-token-123456".utf8)))
            let task = Task { try await node.run() }
            let port = try await node.listeningHTTP()
            func get(_ headers: String) async throws -> String {
                let request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\(headers)Connection: close\r\n\r\n"
                return String(decoding: try await rawSession(port: port, send: [Array(request.utf8)]).bytes, as: UTF8.self)
            }
            #expect(try await get("").hasPrefix("HTTP/1.1 401"))
            #expect(try await get("Authorization: Bearer wrong-token-12345\r\n").hasPrefix("HTTP/1.1 401"))
            let good = try await get("Authorization: Bearer metrics-token-123456\r\n")
            #expect(good.hasPrefix("HTTP/1.1 200") && good.hasSuffix("m 1\n"))
            let health = String(
                decoding: try await rawSession(port: port, send: [Array("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)]).bytes,
                as: UTF8.self)
            #expect(health.hasPrefix("HTTP/1.1 200"))
            task.cancel()
            _ = await task.result
        }
    }

    /// Sync over WebSocket still works end to end with fragmented messages: a record
    /// larger than one fragment crosses.
    @Test func messagesLargerThanAFragmentCross() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let big = Value.string(String(repeating: "x", count: 200_000))
            _ = try a.apply([Mutation.set(map: "m", key: "big", value: big, ttlMillis: nil)])
            let server = try await RunningNode(a, listen: false, http: 0)
            let port = try await server.node.listeningHTTP()
            let b = try openStore(root + "/b", node: 2)
            let puller = try await RunningNode(b, listen: false, addresses: [.init(url: "ws://127.0.0.1:\(port)/sync")!])
            #expect(try await eventually { if case .lww(let r)? = try b.state(map: "m", key: "big") { r.value == big } else { false } })
            await puller.stop()
            await server.stop()
        }
    }
}
