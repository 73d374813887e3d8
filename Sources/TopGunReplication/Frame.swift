import Dispatch
import NIOCore
import Synchronization
import TopGunCore
import TopGunStore

/// One protocol message: `length u32 | type u8 | body`, length counting type + body.
public struct Frame: Sendable, Equatable {
    public struct Kind: RawRepresentable, Hashable, Sendable {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Client → server: protocol version, node id, token.
        public static let hello = Kind(rawValue: 1)
        /// Server → client: protocol version and the server's nonce.
        public static let welcome = Kind(rawValue: 2)
        /// Client → server: cursor and map/partition filter.
        public static let subscribe = Kind(rawValue: 3)
        /// Server → client: a segment of the server's op log (advances the cursor).
        public static let segment = Kind(rawValue: 4)
        /// Client → server: the op-log key applied so far, and the client's own op-log
        /// head (16 + 16 bytes; the head is absent when the client serves no log).
        public static let ack = Kind(rawValue: 5)
        /// Client → server: Merkle bucket digests (asks for a repair).
        public static let digests = Kind(rawValue: 6)
        /// Server → client: the cursor is behind the truncated log; send digests.
        public static let needDigests = Kind(rawValue: 7)
        /// Either way: an error message, then the connection closes.
        public static let error = Kind(rawValue: 8)
        /// Server → client: state operations repairing differing buckets (no cursor).
        public static let repair = Kind(rawValue: 9)
        /// Server → client: the repair for the last DIGESTS is complete; the records are
        /// those of the server's log through this op-log key.
        public static let resume = Kind(rawValue: 10)
        /// Either way, when nothing else was sent for a while: the link is alive.
        public static let heartbeat = Kind(rawValue: 11)
        /// Client → server: the client's proof that it knows the secret.
        public static let proof = Kind(rawValue: 12)
        /// Server → client: an operation the client pushed was refused (policy or
        /// origin), with the server's state of that record for the client to return to.
        public static let rejected = Kind(rawValue: 13)
        /// Server → client, after the client authenticated: the server's node id,
        /// op-log head, whether a repair comes first, and its proof.
        public static let admitted = Kind(rawValue: 14)
        public static let rewind = Kind(rawValue: 15)
        public static let notice = Kind(rawValue: 16)
    }

    public var kind: Kind
    public var body: [UInt8]

    public init(_ kind: Kind, _ body: [UInt8] = []) {
        self.kind = kind
        self.body = body
    }

    /// Protocol version spoken by this library.
    /// 2: acknowledgements carry the subscriber's log head; heartbeats.
    /// 3: two-way links: HELLO says whether the connecting node offers its log (the
    ///    accepting node then subscribes to it on the same connection); WELCOME carries
    ///    the accepting node's log head.
    /// 4: the secret is never sent: a mutual challenge–response (`Handshake`), PROOF.
    /// 5: HELLO may carry a JWT instead (then no PROOF follows); REJECTED.
    /// 6: WELCOME says whether a repair comes first; a segment's cursor end may follow
    ///    its last entry (empty segments move a filtered subscriber's cursor).
    /// 7: the client proves first; WELCOME carries only a nonce, and the server's id,
    ///    head and proof follow in ADMITTED once the client has authenticated.
    public static let protocolVersion: UInt16 = 7
    /// Largest frame accepted by default (segments are bounded well below it).
    public static let defaultMaxBytes = 32 << 20
}

/// Splits a byte stream into frames; a length of zero or above the limit is an error
/// and the connection is dropped before the body is buffered.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = Frame
    let maxBytes: Int
    /// On an accepted connection: the handshake's frames (HELLO with a token, PROOF —
    /// the first two) are small until the listener has authenticated the peer and
    /// opened the gate, so a connection that has not authenticated cannot make this
    /// node buffer a large one. (Later frames are never limited: a peer may send them
    /// before this side has finished checking.) Nil on a dialled connection.
    let gate: HandshakeGate?
    var decoded = 0
    static let handshakeMaxBytes = 64 << 10

    init(maxBytes: Int, gate: HandshakeGate? = nil) {
        self.maxBytes = maxBytes
        self.gate = gate
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        let limit = gate.map { decoded < 2 && !$0.isOpen ? min(maxBytes, Self.handshakeMaxBytes) : maxBytes } ?? maxBytes
        guard length >= 1, Int(length) <= limit else {
            throw ReplicationError(.frameTooLarge, "frame of \(length) bytes (limit \(limit))")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        let kind = buffer.readInteger(as: UInt8.self)!
        let body = buffer.readBytes(length: Int(length) - 1)!
        if kind != Frame.Kind.heartbeat.rawValue { decoded += 1 }
        context.fireChannelRead(wrapInboundOut(Frame(Frame.Kind(rawValue: kind), body)))
        return .continue
    }
}

/// When anything last arrived on a connection (heartbeats included), in ms of the
/// monotonic clock: a session that has heard nothing for a while is a dead connection
/// its peer has already replaced.
/// Closes the connection at the first error in the pipeline (a frame too large or
/// malformed, a WebSocket protocol error), on the event loop, instead of when the link's
/// task gets to it: a peer sending garbage is not read any further (a busy node read
/// some 6 MB of a flood per connection before its task closed it).
final class CloseOnError: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
        context.fireErrorCaught(error)
    }
}

final class ActivityStamp: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    private let last = Atomic<UInt64>(ActivityStamp.now())

    static func now() -> UInt64 { UInt64(DispatchTime.now().uptimeNanoseconds / 1_000_000) }

    var millisSinceHeard: UInt64 { Self.now() &- last.load(ordering: .relaxed) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        last.store(Self.now(), ordering: .relaxed)
        context.fireChannelRead(data)
    }
}

/// Opened by the listener once a peer has authenticated; until then the connection's
/// frames are limited to `FrameDecoder.handshakeMaxBytes`. Found in the pipeline as a
/// pass-through handler.
final class HandshakeGate: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    private let open = Atomic<Bool>(false)
    var isOpen: Bool { open.load(ordering: .acquiring) }
    func openGate() { open.store(true, ordering: .releasing) }
}

struct FrameEncoder: MessageToByteEncoder {
    typealias OutboundIn = Frame

    func encode(data: Frame, out: inout ByteBuffer) throws {
        data.write(into: &out)
    }
}

extension Frame {
    /// `length u32 | kind u8 | body`, the one layout of a frame on the wire.
    func write(into out: inout ByteBuffer) {
        out.writeInteger(UInt32(1 + body.count))
        out.writeInteger(kind.rawValue)
        out.writeBytes(body)
    }
}

/// Writes each frame into a buffer of exactly its size. (`MessageToByteHandler` reuses
/// one buffer, and while a write is pending allocates the next at the capacity of the
/// largest frame so far: each small frame queued behind a stalled reader — a heartbeat —
/// then held 64 KB or more.)
final class FrameWriter: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = Frame
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 5 + frame.body.count)
        frame.write(into: &buffer)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }
}

// MARK: Message bodies

struct Hello: Equatable {
    var version: UInt16
    var node: NodeID
    /// The connecting node offers its own log on this connection: the accepting node
    /// subscribes to it (two-way sync over the connection the client opened).
    var offersLog: Bool
    /// The client's fresh nonce for the challenge–response (see `Handshake`).
    var nonce: [UInt8]
    /// A JWT bearer token: the client authenticates as a user rather than proving the
    /// replicas' shared secret (flag bit 1, then `length u16 | token`).
    var bearer: String?
    /// The client's wall clock (ms since the epoch) when it sent HELLO: the server
    /// learns the offset between the two clocks (0: not told).
    var wallMillis: UInt64 = 0

    /// Longest bearer token accepted.
    static let maxBearerBytes = 8192

    var frame: Frame {
        var b: [UInt8] = []
        b.appendBigEndian(version)
        b.appendBigEndian(node.rawValue)
        b.append((offersLog ? 1 : 0) | (bearer != nil ? 2 : 0))
        b.append(contentsOf: nonce)
        b.appendBigEndian(wallMillis)
        if let bearer {
            b.appendBigEndian(UInt16(bearer.utf8.count))
            b.append(contentsOf: bearer.utf8)
        }
        return Frame(.hello, b)
    }

    init(
        version: UInt16, node: NodeID, offersLog: Bool = true, nonce: [UInt8] = Handshake.nonce(), bearer: String? = nil, wallMillis: UInt64 = 0
    ) {
        self.version = version
        self.node = node
        self.offersLog = offersLog
        self.nonce = nonce
        self.bearer = bearer
        self.wallMillis = wallMillis
    }

    init(_ frame: Frame) throws(ReplicationError) {
        guard frame.kind == .hello else { throw ReplicationError(.protocolViolation, "expected HELLO") }
        let result: Result<Hello, ReplicationError> = frame.body.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            do throws(ReplicationError) {
                let version = try r.be(UInt16.self)
                // Another version's HELLO is not parsed further: the answer is "unsupported
                // version", whatever its layout.
                guard version == Frame.protocolVersion else {
                    return .success(Hello(version: version, node: NodeID(0), offersLog: false, nonce: []))
                }
                let node = NodeID(try r.be(UInt64.self))
                let flags = try r.u8()
                let nonce = Array(try r.slice(Handshake.nonceBytes))
                let wall = try r.be(UInt64.self)
                var bearer: String?
                if flags & 2 != 0 {
                    let count = Int(try r.be(UInt16.self))
                    guard count > 0, count <= Hello.maxBearerBytes, let text = String(validating: try r.slice(count), as: UTF8.self) else {
                        throw ReplicationError(.malformed, "HELLO bearer token")
                    }
                    bearer = text
                }
                guard r.remaining == 0 else { throw ReplicationError(.malformed, "bytes after HELLO") }
                return .success(Hello(version: version, node: node, offersLog: flags & 1 != 0, nonce: nonce, bearer: bearer, wallMillis: wall))
            } catch { return .failure(error) }
        }
        self = try result.get()
    }
}

/// The server's answer once a client authenticated (ADMITTED): `node u64 | head 16 |
/// flags u8 | wall clock ms u64 | proof 32`. The proof is zeros for an app that presented a JWT (it
/// authenticates the server by TLS, not by the replicas' secret).
struct Admission: Sendable, Equatable {
    var node: NodeID
    /// The server's op-log head.
    var head: HLCTimestamp
    /// The server starts by asking for digests (a user's app whose grants may have
    /// changed); the client is not caught up before that repair.
    var repairFirst: Bool
    /// The server's wall clock (ms since the epoch) when it admitted the client.
    var wallMillis: UInt64
    var proof: [UInt8]

    var frame: Frame {
        var b: [UInt8] = []
        b.appendBigEndian(node.rawValue)
        b.appendStamp(head)
        b.append(repairFirst ? 1 : 0)
        b.appendBigEndian(wallMillis)
        b += proof
        return Frame(.admitted, b)
    }

    init(node: NodeID, head: HLCTimestamp, repairFirst: Bool, wallMillis: UInt64 = 0, proof: [UInt8]) {
        self.node = node
        self.head = head
        self.repairFirst = repairFirst
        self.wallMillis = wallMillis
        self.proof = proof
    }

    init(_ frame: Frame) throws(ReplicationError) {
        let result: Result<Admission, ReplicationError> = frame.body.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            do throws(ReplicationError) {
                let node = NodeID(try r.be(UInt64.self))
                let head = try r.stamp()
                let flags = try r.u8()
                let wall = try r.be(UInt64.self)
                let proof = Array(try r.slice(Handshake.proofBytes))
                guard r.remaining == 0, flags & ~1 == 0 else { throw ReplicationError(.malformed, "ADMITTED of \(raw.count) bytes") }
                return .success(Admission(node: node, head: head, repairFirst: flags & 1 != 0, wallMillis: wall, proof: proof))
            } catch { return .failure(error) }
        }
        self = try result.get()
    }
}

/// What a replica asks for: everything after `cursor`, restricted to `maps` and
/// `partitions` when they are non-empty (partial replication).
public struct Subscription: Sendable, Equatable {
    public var cursor: HLCTimestamp?
    public var maps: [String]
    public var partitions: [UInt16]

    public init(cursor: HLCTimestamp? = nil, maps: [String] = [], partitions: [UInt16] = []) {
        self.cursor = cursor
        self.maps = maps
        self.partitions = partitions
    }

    func accepts(_ op: ReplicatedOperation) -> Bool {
        (maps.isEmpty || maps.contains(op.map)) && (partitions.isEmpty || partitions.contains(Partitioner.partition(of: op.key)))
    }

    var frame: Frame {
        var b: [UInt8] = []
        b.append(cursor == nil ? 0 : 1)
        if let cursor { b.appendStamp(cursor) }
        b.appendBigEndian(UInt16(maps.count))
        for m in maps {
            b.appendBigEndian(UInt16(m.utf8.count))
            b.append(contentsOf: m.utf8)
        }
        b.appendBigEndian(UInt16(partitions.count))
        for p in partitions { b.appendBigEndian(p) }
        return Frame(.subscribe, b)
    }

    init(_ frame: Frame) throws(ReplicationError) {
        guard frame.kind == .subscribe else { throw ReplicationError(.protocolViolation, "expected SUBSCRIBE") }
        let result: Result<Subscription, ReplicationError> = frame.body.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            do throws(ReplicationError) {
                let cursor: HLCTimestamp? = try r.u8() == 1 ? try r.stamp() : nil
                var maps: [String] = []
                for _ in 0..<Int(try r.be(UInt16.self)) { maps.append(try r.string(Int(try r.be(UInt16.self)))) }
                var partitions: [UInt16] = []
                for _ in 0..<Int(try r.be(UInt16.self)) {
                    let p = try r.be(UInt16.self)
                    guard p < Partitioner.partitionCount else { throw ReplicationError(.malformed, "partition \(p)") }
                    partitions.append(p)
                }
                guard r.remaining == 0 else { throw ReplicationError(.malformed, "bytes after SUBSCRIBE") }
                return .success(Subscription(cursor: cursor, maps: maps, partitions: partitions))
            } catch { return .failure(error) }
        }
        self = try result.get()
    }
}

/// Bucket digests of some maps: `[map: [partition: buckets]]`.
struct Digests: Equatable {
    var maps: [String: [UInt16: [UInt64]]]

    var frame: Frame {
        var b: [UInt8] = []
        b.appendBigEndian(UInt16(maps.count))
        for (map, partitions) in maps.sorted(by: { $0.key < $1.key }) {
            b.appendBigEndian(UInt16(map.utf8.count))
            b.append(contentsOf: map.utf8)
            b.appendBigEndian(UInt16(partitions.count))
            for (p, buckets) in partitions.sorted(by: { $0.key < $1.key }) {
                b.appendBigEndian(p)
                for d in buckets { b.appendBigEndian(d) }
            }
        }
        return Frame(.digests, b)
    }

    init(maps: [String: [UInt16: [UInt64]]]) { self.maps = maps }

    init(_ frame: Frame) throws(ReplicationError) {
        let result: Result<Digests, ReplicationError> = frame.body.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            do throws(ReplicationError) {
                var maps: [String: [UInt16: [UInt64]]] = [:]
                for _ in 0..<Int(try r.be(UInt16.self)) {
                    let map = try r.string(Int(try r.be(UInt16.self)))
                    var partitions: [UInt16: [UInt64]] = [:]
                    for _ in 0..<Int(try r.be(UInt16.self)) {
                        let p = try r.be(UInt16.self)
                        var buckets: [UInt64] = []
                        for _ in 0..<MerkleBuckets.bucketCount { buckets.append(try r.be(UInt64.self)) }
                        partitions[p] = buckets
                    }
                    maps[map] = partitions
                }
                guard r.remaining == 0 else { throw ReplicationError(.malformed, "bytes after DIGESTS") }
                return .success(Digests(maps: maps))
            } catch { return .failure(error) }
        }
        self = try result.get()
    }
}

/// An acknowledgement: how far the subscriber applied the server's log, and where its
/// own log stood (nil when it serves none).
struct Acknowledgement: Equatable {
    var cursor: HLCTimestamp
    var head: HLCTimestamp?

    var frame: Frame {
        var b: [UInt8] = []
        b.appendStamp(cursor)
        if let head { b.appendStamp(head) }
        return Frame(.ack, b)
    }

    init(cursor: HLCTimestamp, head: HLCTimestamp?) {
        self.cursor = cursor
        self.head = head
    }

    init(_ frame: Frame) throws(ReplicationError) {
        guard frame.body.count == 16 || frame.body.count == 32 else { throw ReplicationError(.malformed, "ACK of \(frame.body.count) bytes") }
        cursor = frame.body.withUnsafeBytes { HLCTimestamp(loadingFrom: $0.baseAddress!) }
        head = frame.body.count == 32 ? frame.body.withUnsafeBytes { HLCTimestamp(loadingFrom: $0.baseAddress! + 16) } : nil
    }
}

extension Frame {
    static func stamp(_ kind: Kind, _ t: HLCTimestamp) -> Frame {
        var b: [UInt8] = []
        b.appendStamp(t)
        return Frame(kind, b)
    }

    func stamp() throws(ReplicationError) -> HLCTimestamp {
        guard body.count == 16 else { throw ReplicationError(.malformed, "expected a 16-byte HLC") }
        return body.withUnsafeBytes { HLCTimestamp(loadingFrom: $0.baseAddress!) }
    }
}

extension Frame {
    /// A frame whose body is a map list (see `mapList()`).
    static func mapList(_ kind: Kind, _ maps: [String]) -> Frame {
        var body: [UInt8] = []
        body.appendBigEndian(UInt16(maps.count))
        for m in maps {
            body.appendBigEndian(UInt16(m.utf8.count))
            body.append(contentsOf: m.utf8)
        }
        return Frame(kind, body)
    }

    /// A body holding `count u16` then `count` × (`length u16`, UTF-8 name).
    func mapList() throws(ReplicationError) -> [String] {
        let result: Result<[String], ReplicationError> = body.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            do throws(ReplicationError) {
                var maps: [String] = []
                for _ in 0..<Int(try r.be(UInt16.self)) { maps.append(try r.string(Int(try r.be(UInt16.self)))) }
                guard r.remaining == 0 else { throw ReplicationError(.malformed, "bytes after the map list") }
                return .success(maps)
            } catch { return .failure(error) }
        }
        return try result.get()
    }
}
