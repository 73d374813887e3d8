import TopGunCore

/// Every message of the replication protocol: one decoder (`init(_:)`) and one
/// encoder (`frame`). Sessions switch over it exhaustively, so a new message has to be
/// handled (or explicitly refused) everywhere one can arrive.
enum Message: Sendable {
    /// Client → server: protocol version, node id, token.
    case hello(Hello)
    /// Server → client: protocol version and the server's nonce; nothing else is told
    /// before the client has authenticated.
    case welcome(version: UInt16, nonce: [UInt8])
    /// Client → server: the client's proof that it knows the secret.
    case proof([UInt8])
    /// Server → client, once the client authenticated: who the server is, and its proof.
    case admitted(Admission)
    // After the handshake either side may subscribe to the other's log; "subscriber"
    // and "publisher" below are roles on one link, not client and server.
    /// Subscriber → publisher: cursor and map/partition filter.
    case subscribe(Subscription)
    /// Publisher → subscriber: a segment of the publisher's op log (advances the cursor).
    case segment(Segment)
    /// Subscriber → publisher: how far the publisher's log was applied, and the
    /// subscriber's own head when the publisher pulls it over the same link.
    case ack(Acknowledgement)
    /// Subscriber → publisher: Merkle bucket digests (asks for a repair).
    case digests(Digests)
    /// Publisher → subscriber: the cursor is behind the truncated log; send digests of
    /// these maps (all when empty).
    case needDigests(maps: [String])
    /// Either way: a coded error (`code length u8 | code | message`, UTF-8), then the
    /// connection closes. The receiver acts on the code, never on the text.
    case error(ReplicationError)
    /// Publisher → subscriber: state operations repairing differing buckets (no cursor).
    case repair(Segment)
    /// Publisher → subscriber: the repair is complete; it covers the log through here.
    case resume(HLCTimestamp)
    /// Either way, when nothing else was sent for a while: the link is alive.
    case heartbeat
    /// Subscriber → publisher: an op the publisher pushed was refused (policy, origin).
    case rejected(WriteRejection)
    /// Publisher → subscriber: your cursor is past this log's head (the log was
    /// restored from a backup, or damage put an entry's key in the future): set it to
    /// this head. A repair by digests follows, for what the cursor skipped.
    case rewind(HLCTimestamp)
    /// Either way: a coded warning the link goes on after (an ERROR ends it). The
    /// receiver logs it and shows it in its status: its writes are refused for its clock.
    case notice(ReplicationError)

    /// Decodes a frame.
    ///
    /// - Throws: `ReplicationError(.malformed)` for a body that does not parse or a
    ///   segment whose checksum fails; `.protocolViolation` for an unknown type.
    init(_ frame: Frame) throws(ReplicationError) {
        switch frame.kind {
        case .hello: self = .hello(try Hello(frame))
        case .welcome: self = try Self.welcome(frame.body)
        case .proof:
            guard frame.body.count == Handshake.proofBytes else { throw ReplicationError(.malformed, "PROOF of \(frame.body.count) bytes") }
            self = .proof(frame.body)
        case .admitted: self = .admitted(try Admission(frame))
        case .subscribe: self = .subscribe(try Subscription(frame))
        case .segment: self = .segment(try Segment(decoding: frame.body))
        case .ack: self = .ack(try Acknowledgement(frame))
        case .digests: self = .digests(try Digests(frame))
        case .needDigests: self = .needDigests(maps: try frame.mapList())
        case .error: self = .error(Self.error(frame.body))
        case .repair: self = .repair(try Segment(decoding: frame.body))
        case .resume: self = .resume(try frame.stamp())
        case .heartbeat: self = .heartbeat
        case .rejected: self = .rejected(try WriteRejection(frame))
        case .rewind: self = .rewind(try frame.stamp())
        case .notice: self = .notice(Self.error(frame.body))
        default: throw ReplicationError(.protocolViolation, "unknown message type \(frame.kind.rawValue)")
        }
    }

    /// The frame carrying this message.
    var frame: Frame {
        switch self {
        case .hello(let hello): hello.frame
        case .welcome(let version, let nonce): Frame(.welcome, [UInt8](bigEndian: version) + nonce)
        case .proof(let proof): Frame(.proof, proof)
        case .admitted(let admission): admission.frame
        case .subscribe(let subscription): subscription.frame
        case .segment(let segment): Frame(.segment, segment.encoded())
        case .ack(let ack): ack.frame
        case .digests(let digests): digests.frame
        case .needDigests(let maps): Frame.mapList(.needDigests, maps)
        case .error(let error): Frame(.error, Self.coded(error))
        case .notice(let error): Frame(.notice, Self.coded(error))
        case .rewind(let head): Frame.stamp(.rewind, head)
        case .repair(let segment): Frame(.repair, segment.encoded())
        case .resume(let head): Frame.stamp(.resume, head)
        case .heartbeat: Frame(.heartbeat)
        case .rejected(let rejection): rejection.frame(origin: NodeID(0))
        }
    }

    /// The message's name, for errors and logs.
    var name: String {
        switch self {
        case .hello: "HELLO"
        case .welcome: "WELCOME"
        case .proof: "PROOF"
        case .admitted: "ADMITTED"
        case .subscribe: "SUBSCRIBE"
        case .segment: "SEGMENT"
        case .ack: "ACK"
        case .digests: "DIGESTS"
        case .needDigests: "NEED-DIGESTS"
        case .error: "ERROR"
        case .repair: "REPAIR"
        case .resume: "RESUME"
        case .heartbeat: "HEARTBEAT"
        case .rejected: "REJECTED"
        case .rewind: "REWIND"
        case .notice: "NOTICE"
        }
    }

    private static func welcome(_ body: [UInt8]) throws(ReplicationError) -> Message {
        guard body.count >= 2 else { throw ReplicationError(.malformed, "WELCOME of \(body.count) bytes") }
        let version = body.withUnsafeBytes { $0.loadBigEndian(as: UInt16.self) }
        // Another version's WELCOME: report the version, whatever its layout.
        guard version == Frame.protocolVersion else { return .welcome(version: version, nonce: []) }
        guard body.count == 2 + Handshake.nonceBytes else { throw ReplicationError(.malformed, "WELCOME of \(body.count) bytes") }
        return .welcome(version: version, nonce: Array(body[2...]))
    }

    /// The error an ERROR body carries; a body that is not one is a protocol violation
    /// quoting its text.
    /// `code length u8 | code | message`, the body of ERROR and NOTICE.
    private static func coded(_ error: ReplicationError) -> [UInt8] {
        let code = Array(error.code.rawValue.utf8.prefix(255))
        return [UInt8(code.count)] + code + Array(error.message.utf8)
    }

    private static func error(_ body: [UInt8]) -> ReplicationError {
        guard let n = body.first.map(Int.init), n > 0, body.count > n, let code = String(validating: body[1..<(1 + n)], as: UTF8.self) else {
            return ReplicationError(.protocolViolation, "peer error: \(String(decoding: body, as: UTF8.self))")
        }
        return ReplicationError(ReplicationError.Code(rawValue: code), String(decoding: body[(1 + n)...], as: UTF8.self))
    }

    /// A protocol violation: `self` is not expected from a peer in `role`.
    func unexpected(from role: String) -> ReplicationError {
        ReplicationError(.protocolViolation, "unexpected \(name) from \(role)")
    }
}
