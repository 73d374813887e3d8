/// An error of the replication layer: bad segments, bad frames, refused peers.
public struct ReplicationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong. New codes can be added without breaking `switch`.
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let badMagic = Code(rawValue: "bad magic")
        public static let unsupportedVersion = Code(rawValue: "unsupported version")
        public static let checksumMismatch = Code(rawValue: "checksum mismatch")
        public static let lengthMismatch = Code(rawValue: "length mismatch")
        public static let decompressionFailed = Code(rawValue: "decompression failed")
        public static let malformed = Code(rawValue: "malformed")
        public static let frameTooLarge = Code(rawValue: "frame too large")
        public static let unauthorized = Code(rawValue: "unauthorized")
        public static let protocolViolation = Code(rawValue: "protocol violation")
        public static let wrongOrigin = Code(rawValue: "wrong origin")
        /// Nothing arrived on a connection within the idle timeout (a dead or frozen link).
        public static let timeout = Code(rawValue: "timeout")
        /// Two nodes present one node id (a copied data directory).
        public static let duplicateNodeID = Code(rawValue: "duplicate node id")
        /// A policy file that cannot be read or does not parse.
        public static let badPolicy = Code(rawValue: "bad policy")
        /// A JWT was refused: malformed, badly signed, expired, not yet valid, or for
        /// another issuer or audience.
        public static let badToken = Code(rawValue: "bad token")
        /// A node configuration it refuses to run with (a short secret, plain links
        /// beyond loopback).
        public static let invalidConfiguration = Code(rawValue: "invalid configuration")
        /// The peer failed for a reason of its own (its storage, say), not this side's.
        public static let internalError = Code(rawValue: "internal error")
        /// Operations refused because their stamps are ahead of the receiver's clock by
        /// more than its drift bound (sent as a NOTICE: the link goes on).
        public static let clockDrift = Code(rawValue: "clock drift")
        /// Damaged records were removed and no peer could restore them.
        public static let damagedData = Code(rawValue: "damaged data")
        /// The session's credential expired.
        public static let expired = Code(rawValue: "expired")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
