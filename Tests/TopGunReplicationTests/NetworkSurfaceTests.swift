import Crypto
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import TopGunCore
import TopGunStore
import TopGunTestSupport

@testable import TopGunReplication

/// Peers that speak the wire protocol on purpose to break a promise: crafted counter
/// ops, DIGESTS floods, simultaneous device claims, handshakes that fish for a proof.
@Suite(.timeLimit(.minutes(2)))
struct HostileWireTests {
    /// A fast generator for test data (not for anything that must be unpredictable).
    struct Xorshift {
        var state: UInt64
        init(seed: UInt64) { state = seed | 1 }
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    /// Milliseconds since the epoch now, for stamps a server takes as current.
    static var wallMillis: UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    /// Before the client has proved the secret, the server tells it nothing but a
    /// nonce: no node id, no head, no HMAC of known inputs to guess the secret from
    /// offline. A wrong proof gets ERROR and no ADMITTED.
    @Test func anUnauthenticatedClientLearnsNothing() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            _ = try store.apply([Mutation.set(map: "m", key: "k", value: 1, ttlMillis: nil)])
            let server = try await RunningNode(store)
            let client = try await FrameClient(port: server.port)
            let hello = Hello(version: Frame.protocolVersion, node: NodeID(9), offersLog: false)
            try await client.send(hello.frame)
            let welcome = try #require(try await client.next())
            #expect(welcome.kind == .welcome)
            #expect(welcome.body.count == 2 + Handshake.nonceBytes, "version and nonce only")
            #expect(server.node.statistics.connectionsOpen == 1)
            // A guess: the proof of a wrong secret.
            guard case .welcome(_, let nonce) = try Message(welcome) else { throw CancellationError() }
            try await client.send(
                Message.proof(
                    Handshake.proof(secret: Array(otherSecret.utf8), role: .client, clientNonce: hello.nonce, serverNonce: nonce, client: NodeID(9), server: nil)
                ).frame)
            var kinds: [Frame.Kind] = []
            while let frame = try? await client.next() { kinds.append(frame.kind) }
            #expect(kinds == [.error], "\(kinds)")
            #expect(server.node.statistics.handshakesRefused == 1)
            try await client.close()
            // Presenting the server's own id without the secret is refused as a wrong
            // secret: the probe does not learn that the id is the server's.
            let probe = try await FrameClient(port: server.port)
            let refused = try #require(try await probe.hello(node: store.nodeID, token: otherSecret))
            #expect(refused.kind == .error)
            #expect(String(decoding: refused.body, as: UTF8.self).contains("wrong secret"))
            try await probe.close()
            #expect(try await eventually { server.node.statistics.connectionsOpen == 0 })
            await server.stop()
        }
    }

    /// A user's app pushes a counter op whose own slot wraps the sum: refused
    /// (REJECTED, with the server's state to return to), the counter unchanged.
    @Test func aCraftedCounterOpFromAnAppIsRejected() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            _ = try store.apply([Mutation.increment(map: "c", key: "k", by: 5)])
            let server = try await RunningNode(store, verifier: try await PermissionTests.verifier())
            let client = try await FrameClient(port: server.port)
            let device = NodeID(77)
            let admitted = try #require(try await client.hello(node: device, jwt: try await PermissionTests.token("mallory"), offersLog: true))
            #expect(admitted.kind == .admitted)
            let subscribe = try #require(try await client.next())
            #expect(subscribe.kind == .subscribe)
            let stamp = HLCTimestamp(millis: Self.wallMillis, counter: 0, node: device)
            // A negative total of 2⁶⁴ − 37 for its own slot: 5 − (2⁶⁴ − 37) wraps to 42.
            let op = ReplicatedOperation(map: "c", key: "k", timestamp: stamp, payload: .counter(PNCounter(negative: [device: UInt64.max - 36])))
            try await client.send(Message.segment(Segment(origin: device, entries: [LoggedOperation(sequence: stamp, operation: op)])).frame)
            var rejection: WriteRejection?
            while let frame = try await client.next() {
                let message = try Message(frame)
                if case .rejected(let r) = message { rejection = r }
                if case .ack = message { break }
            }
            let refused = try #require(rejection)
            #expect(refused.reason.contains("Int64"), "\(refused.reason)")
            #expect(try store.state(map: "c", key: "k") == .counter(PNCounter(positive: [store.nodeID: 5])))
            try await client.close()
            await server.stop()
        }
    }

    /// Two replicas whose counters would sum past Int64.max: each refuses the other's
    /// op, logs and counts it, and neither wraps.
    @Test func replicasRefuseCounterChangesThatLeaveInt64() async throws {
        try await withTemporaryDirectory { root in
            let a = try openStore(root + "/a", node: 1)
            let b = try openStore(root + "/b", node: 2)
            _ = try a.apply([Mutation.increment(map: "c", key: "k", by: .max)])
            _ = try b.apply([Mutation.increment(map: "c", key: "k", by: 1)])
            let server = try await RunningNode(a)
            let puller = try await RunningNode(b, listen: false, peers: [server.port])
            #expect(try await eventually { server.node.statistics.opsRefusedInvalid > 0 && puller.node.statistics.opsRefusedInvalid > 0 })
            func value(_ s: Store) throws -> Int64? { if case .counter(let c)? = try s.state(map: "c", key: "k") { c.value } else { nil } }
            #expect(try value(a) == .max && value(b) == 1)
            #expect(try a.check().isConsistent && b.check().isConsistent)
            await puller.stop()
            await server.stop()
        }
    }

    /// 40 devices of one user say HELLO at once with fresh ids: exactly the limit is
    /// bound, the rest are refused (count and claim are one transaction).
    @Test func simultaneousDeviceClaimsStopAtTheLimit() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            let server = try await RunningNode(store, verifier: try await PermissionTests.verifier(), maxDevices: 32)
            let jwt = try await PermissionTests.token("alice")
            let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<40 {
                    group.addTask {
                        let client = try await FrameClient(port: server.port)
                        let answer = try await client.hello(node: NodeID(UInt64(1_000 + i)), jwt: jwt)
                        try await client.close()
                        return answer?.kind == .admitted
                    }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(admitted == 32)
            #expect(try store.nodeCount(ofUser: "alice") == 32)
            await server.stop()
        }
    }

    /// A reader floods DIGESTS (each asks for the whole map) and reads nothing: the
    /// server sends one repair at a time, blocked on the connection, and serves all the
    /// DIGESTS that arrived meanwhile with one more, instead of queueing one repair
    /// per frame in memory.
    @Test func aDigestsFloodIsServedOneRepairAtATime() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            // Letters at random: LZ4 finds nothing to shorten, so the repair is ~30 MB.
            var rng = Xorshift(seed: 7)
            func text() -> Value {
                .string(String(decoding: (0..<5_000).map { _ in UInt8(ascii: "a") + UInt8(rng.next() % 26) }, as: UTF8.self))
            }
            for batch in 0..<6 {
                _ = try store.apply((0..<1_000).map { Mutation.set(map: "m", key: "k\(batch)-\($0)", value: text(), ttlMillis: nil) })
            }
            // Small segments: the client's few buffered frames hold little of the repair.
            let server = try await RunningNode(store, segmentSize: 10)
            // A small receive buffer: the repair stalls on the connection.
            let client = try await FrameClient(port: server.port, receiveBuffer: 4_096)
            #expect(try await client.hello(node: NodeID(9))?.kind == .admitted)
            let zero = Digests(maps: ["m": Dictionary(uniqueKeysWithValues: (0..<UInt16(Partitioner.partitionCount)).map { ($0, [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)) })])
            for _ in 0..<200 { try await client.send(Message.digests(zero).frame) }
            #expect(try await eventually { server.node.statistics.repairsRequested == 200 })
            #expect(server.node.statistics.repairsServed == 0, "the first repair waits for the reader: \(server.node.statistics)")
            // Now read: exactly two repairs arrive (the stalled one, and one for the 199
            // merged DIGESTS).
            var resumes = 0
            var records = 0
            while resumes < 2, let frame = try await client.next() {
                switch try Message(frame) {
                case .repair(let segment): records += segment.entries.count
                case .resume: resumes += 1
                default: break
                }
            }
            #expect(records == 12_000, "the whole map, twice")
            #expect(try await eventually { server.node.statistics.repairsServed == 2 })
            try await client.close()
            await server.stop()
        }
    }
}

extension HostileWireTests {
    /// A repair is sent in small frames: a hundred readers that stop reading each hold
    /// one chunk being encoded and one queued, not a quarter of the frame limit (8 MB of
    /// records per reader held 2.6 GB for 100 readers of a 30 MB map).
    @Test func repairsAreSentInSmallFrames() async throws {
        try await withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            var rng = Xorshift(seed: 11)
            _ = try store.apply(
                (0..<40).map { i in
                    let text = String(decoding: (0..<100_000).map { _ in UInt8(ascii: "a") + UInt8(rng.next() % 26) }, as: UTF8.self)
                    return Mutation.set(map: "m", key: "k\(i)", value: .string(text), ttlMillis: nil)
                })
            let server = try await RunningNode(store)
            let client = try await FrameClient(port: server.port)
            #expect(try await client.hello(node: NodeID(9))?.kind == .admitted)
            let zero = Digests(maps: ["m": Dictionary(uniqueKeysWithValues: (0..<UInt16(Partitioner.partitionCount)).map { ($0, [UInt64](repeating: 0, count: MerkleBuckets.bucketCount)) })])
            try await client.send(Message.digests(zero).frame)
            var largest = 0
            var records = 0
            while let frame = try await client.next() {
                if case .repair(let segment) = try Message(frame) {
                    records += segment.entries.count
                    largest = max(largest, frame.body.count)
                }
                if frame.kind == .resume { break }
            }
            #expect(records == 40)
            #expect(largest <= 200 << 10, "largest REPAIR frame: \(largest) bytes")
            try await client.close()
            await server.stop()
        }
    }
}

/// What a node refuses to run with: short secrets, plain links beyond loopback.
struct NodeConfigurationTests {
    @Test func secretsShorterThan32BytesAreRefused() throws {
        try withTemporaryDirectory { root in
            let store = try openStore(root + "/a", node: 1)
            let error = #expect(throws: ReplicationError.self) {
                _ = try ReplicaNode(store: store, configuration: .init(listen: nil, token: Array(repeating: 0x61, count: 31)))
            }
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.message.contains("/dev/urandom") == true)
            _ = try ReplicaNode(store: store, configuration: .init(listen: nil, token: Array(repeating: 0x61, count: 32)))
        }
    }

    @Test func plainLinksBeyondLoopbackNeedTLSOrConsent() throws {
        typealias Address = ReplicaNode.PeerAddress
        let secret = Array(testSecret.utf8)
        let refused: [ReplicaNode.Configuration] = [
            .init(listen: Address(host: "0.0.0.0", port: 0), token: secret),
            .init(listen: nil, token: secret, http: Address(host: "::", port: 0)),
            .init(listen: nil, peers: [Address(host: "192.0.2.7", port: 7000)], token: secret),
            .init(listen: nil, peers: [Address(url: "ws://sync.example.com/sync")!], token: secret),
        ]
        for configuration in refused {
            let error = #expect(throws: ReplicationError.self) { try configuration.validate() }
            #expect(error?.code == .invalidConfiguration && error?.message.contains("--insecure") == true)
            var allowed = configuration
            allowed.allowsPlaintext = true
            try allowed.validate()
        }
        // Loopback, and TLS beyond it, need no consent.
        try ReplicaNode.Configuration(listen: Address(host: "127.0.0.2", port: 0), token: secret, http: Address(host: "::1", port: 0)).validate()
        try ReplicaNode.Configuration(listen: nil, peers: [Address(url: "wss://sync.example.com/sync")!], token: secret).validate()
        try ReplicaNode.Configuration(
            listen: Address(host: "0.0.0.0", port: 0), token: secret, tls: .init(certificate: "c.pem", privateKey: "k.pem")
        ).validate()
        #expect(isLoopback("localhost") && isLoopback("127.255.0.1") && isLoopback("::1") && isLoopback("[::1]"))
        #expect(!isLoopback("0.0.0.0") && !isLoopback("128.0.0.1") && !isLoopback("::") && !isLoopback("example.com"))
    }

    @Test func anAppRefusesAPlainLinkToAServerBeyondLoopback() throws {
        try withTemporaryDirectory { root in
            let db = try Database(path: root + "/app")
            let error = #expect(throws: ReplicationError.self) { _ = try db.sync(with: "ws://sync.example.com/sync", jwt: "a.b.c") }
            #expect(error?.code == .invalidConfiguration)
        }
    }

    /// ERROR carries a code, and the receiver acts on the code: a message that only
    /// mentions "duplicate node id" is not taken for that error (it was matched by
    /// substring).
    @Test func errorCodesCrossTheWireAsCodes() throws {
        let error = ReplicationError(.unauthorized, "user carol: duplicate node id tried")
        guard case .error(let back) = try Message(Message.error(error).frame) else { throw CancellationError() }
        #expect(back == error)
        for body in [Array("duplicate node id: x".utf8), [0], [0, 65], [1], []] {
            guard case .error(let raw) = try Message(Frame(.error, body)) else { throw CancellationError() }
            #expect(raw.code == .protocolViolation, "\(body)")
        }
    }

    /// The old comparison called these equal (its length check kept 8 bits).
    @Test func constantTimeEqualsComparesLengthsWhole() {
        #expect(!constantTimeEquals([], [UInt8](repeating: 0, count: 256)))
        #expect(!constantTimeEquals([1], [UInt8](repeating: 0, count: 257)))
        #expect(constantTimeEquals(Array(testSecret.utf8), Array(testSecret.utf8)))
    }

    /// Only TLS 1.2+, ECDHE and AEAD suites are offered.
    @Test func theTLSPolicyHasNoCBCAndNoStaticRSA() {
        let suites = TLSPolicy.cipherSuites.split(separator: ":")
        #expect(!suites.isEmpty && suites.allSatisfy { $0.hasPrefix("ECDHE-") && ($0.contains("GCM") || $0.contains("CHACHA20")) })
        #expect(TLSPolicy.hardened(.makeClientConfiguration()).minimumTLSVersion == .tlsv12)
    }
}

/// Listeners against clients that offer old TLS or weak suites.
@Suite(.timeLimit(.minutes(2)))
struct TLSListenerTests {
    /// A TLS connection to `port` offering `configure`'s settings; true when the node
    /// answered HELLO with WELCOME (the handshake succeeded).
    static func welcomed(port: Int, certificate: String, _ configure: (inout TLSConfiguration) -> Void) async throws -> Bool {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(certificate)
        tls.certificateVerification = .noHostnameVerification
        configure(&tls)
        let context = try NIOSSLContext(configuration: tls)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxBytes: Frame.defaultMaxBytes)))
                try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                return try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
            }
        }
        let welcomed = try await channel.executeThenClose { inbound, outbound in
            do {
                try await outbound.write(Hello(version: Frame.protocolVersion, node: NodeID(9), offersLog: false).frame)
                for try await frame in inbound where frame.kind != .heartbeat { return frame.kind == .welcome }
                return false
            } catch {
                return false
            }
        }
        try await group.shutdownGracefully()
        return welcomed
    }

    @Test func onlyTLS12AndAEADSuitesAreAccepted() async throws {
        try await withTemporaryDirectory { root in
            let (certificate, key) = try makeCertificate(in: root, host: "localhost")
            let server = try await RunningNode(try openStore(root + "/a", node: 1), tls: .init(certificate: certificate, privateKey: key))
            #expect(try await Self.welcomed(port: server.port, certificate: certificate) { _ in })
            #expect(
                try await Self.welcomed(port: server.port, certificate: certificate) {
                    $0.maximumTLSVersion = .tlsv12
                    $0.cipherSuites = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"
                })
            #expect(
                try await !Self.welcomed(port: server.port, certificate: certificate) {
                    $0.minimumTLSVersion = .tlsv1
                    $0.maximumTLSVersion = .tlsv11
                }, "TLS 1.1 is refused")
            #expect(
                try await !Self.welcomed(port: server.port, certificate: certificate) {
                    $0.maximumTLSVersion = .tlsv12
                    $0.cipherSuites = "ECDHE-RSA-AES128-SHA:AES128-SHA:AES256-SHA"
                }, "CBC suites are refused")
            await server.stop()
        }
    }
}

/// Client JWTs: a claim named twice, subjects that reach into another's keys, and
/// reasons that name the real cause.
struct TokenVerifierTests {
    static func signHS256(header: String, payload: String, secret: String = PermissionTests.secret) -> String {
        func b64(_ bytes: some Sequence<UInt8>) -> String {
            Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let signingInput = b64(Array(header.utf8)) + "." + b64(Array(payload.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return signingInput + "." + b64(mac)
    }

    static var exp: Int { Int(Date().timeIntervalSince1970) + 3_600 }

    @Test(arguments: [
        #"{"sub":"admin","sub":"bob","exp":EXP}"#,
        #"{"sub":"bob","exp":EXP,"roles":["a"],"roles":["admin"]}"#,
        #"{"sub":"bob","s\u0075b":"admin","exp":EXP}"#,
        #"{"sub":"bob","exp":EXP,"x":{"k":1,"k":2}}"#,
    ])
    func aClaimNamedTwiceIsRefused(_ payload: String) async throws {
        let verifier = try await PermissionTests.verifier()
        let token = Self.signHS256(header: #"{"alg":"HS256","typ":"JWT"}"#, payload: payload.replacingOccurrences(of: "EXP", with: "\(Self.exp)"))
        let error = await #expect(throws: ReplicationError.self) { _ = try await verifier.principal(for: token) }
        #expect(error?.code == .badToken && error?.message.contains("twice") == true, "\(String(describing: error))")
    }

    @Test func aHeaderNamedTwiceIsRefused() async throws {
        let verifier = try await PermissionTests.verifier()
        let token = Self.signHS256(header: #"{"alg":"none","alg":"HS256"}"#, payload: #"{"sub":"bob","exp":\#(Self.exp)}"#)
        let error = await #expect(throws: ReplicationError.self) { _ = try await verifier.principal(for: token) }
        #expect(error?.message.contains("twice") == true)
        // The same token with one alg is fine.
        let good = Self.signHS256(header: #"{"alg":"HS256"}"#, payload: #"{"sub":"bob","exp":\#(Self.exp)}"#)
        #expect(try await verifier.principal(for: good).subject == "bob")
    }

    @Test(arguments: ["alice:x", "alice/x", "", "a\u{7}b"])
    func subjectsThatReachAnothersKeysAreRefused(_ subject: String) async throws {
        let verifier = try await PermissionTests.verifier()
        let token = try await PermissionTests.token(subject)
        let error = await #expect(throws: ReplicationError.self) { _ = try await verifier.principal(for: token) }
        #expect(error?.code == .badToken)
    }

    /// A policy whose `{sub}` is followed by a character a subject may hold would let
    /// `alicex` into `alice`'s keys: refused at load.
    @Test func aPolicyWithSubFollowedByAnotherCharacterIsRefused() throws {
        let bad = #"{"rules": [{"who": "*", "maps": "notes", "keys": "{sub}*", "allow": ["read"]}]}"#
        let error = #expect(throws: ReplicationError.self) { _ = try Policy(json: Array(bad.utf8)) }
        #expect(error?.code == .badPolicy && error?.message.contains("{sub}") == true)
        for good in ["{sub}:*", "{sub}/*", "users/{sub}", "{sub}"] {
            _ = try Policy(json: Array(#"{"rules": [{"who": "*", "maps": "notes", "keys": "\#(good)", "allow": ["read"]}]}"#.utf8))
        }
    }

    /// An RS256 token signed by a wrong key is a bad signature, whatever other kinds
    /// of key are configured; an algorithm no key verifies says so.
    @Test func refusalsNameTheRealCause() async throws {
        try await withTemporaryDirectory { root in
            func openssl(_ args: [String]) throws { #expect(try runTool("/usr/bin/openssl", args).status == 0) }
            try openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", root + "/ec.pem"])
            try openssl(["ec", "-in", root + "/ec.pem", "-pubout", "-out", root + "/ec.pub"])
            for name in ["rsa", "rsa2"] {
                try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", root + "/\(name).pem"])
            }
            try openssl(["pkey", "-in", root + "/rsa.pem", "-pubout", "-out", root + "/rsa.pub"])
            func read(_ name: String) throws -> String { try String(contentsOfFile: root + "/" + name, encoding: .utf8) }
            let verifier = try await TokenVerifier(hmacSecret: nil, publicKeysPEM: [try read("ec.pub"), try read("rsa.pub")])
            let claims = PermissionTests.Claims(sub: .init(value: "bob"), exp: .init(value: Date().addingTimeInterval(3_600)))
            let wrongKey = try await JWTKeyCollection().add(rsa: try Insecure.RSA.PrivateKey(pem: try read("rsa2.pem")), digestAlgorithm: .sha256)
                .sign(claims)
            let error = await #expect(throws: ReplicationError.self) { _ = try await verifier.principal(for: wrongKey) }
            #expect(error?.message.contains("bad signature") == true, "\(String(describing: error))")
            let hs = try await PermissionTests.token("bob")
            let unaccepted = await #expect(throws: ReplicationError.self) { _ = try await verifier.principal(for: hs) }
            #expect(unaccepted?.message.contains("algorithm") == true, "\(String(describing: unaccepted))")
        }
    }
}

/// Refused handshakes are logged at a bounded rate, with counts.
struct RefusalLogTests {
    final class Lines: LogHandler, @unchecked Sendable {
        // Written from the test's thread only (the log is synchronous).
        var lines: [(String, Logger.Metadata)] = []
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            lines.append(("\(message)", metadata ?? [:]))
        }
    }

    @Test func aFloodOfRefusalsWritesALineAnIntervalWithACount() {
        let handler = Lines()
        let log = RefusalLog(logger: Logger(label: "test") { _ in handler }, interval: .seconds(10))
        let expired = ReplicationError(.badToken, "token expired")
        for i in 0..<2_000 { log.record(expired, now: UInt64(i) * 1_000_000) }  // 2 s
        log.record(ReplicationError(.unauthorized, "wrong secret"), now: 2_000_000_000)
        #expect(handler.lines.count == 2, "one line per reason within the interval")
        log.record(expired, now: 11_000_000_000)
        #expect(handler.lines.count == 3)
        #expect(handler.lines.last?.1["refused_since_last_line"] == "1999")
    }
}
