import Crypto
import TopGunCore

/// The shared secret is never sent: each side proves it knows it with an HMAC-SHA256
/// over fresh nonces from both sides and the node ids (swift-crypto).
///
/// ```
/// client → HELLO    version, node, flags, client nonce [, JWT]
/// server → WELCOME  version, server nonce                  (nothing else before authentication)
/// client → PROOF    client proof                           (secret only; an app's JWT was in HELLO)
/// server → ADMITTED node, op-log head, repair-first, server proof
/// ```
/// The client proves first, so a client that does not know the secret gets no HMAC of
/// known inputs to guess the secret from offline: the server answers it with ERROR.
/// A captured exchange replayed on a new connection fails: the server's nonce is new.
/// A client checks the server's proof before it sends anything else, so a fake server
/// gets nothing but the client's proof: an impersonator (someone on the path, or a
/// server the client was pointed at) could guess the secret from that offline, which
/// TLS prevents and `minimumSecretBytes` of random bytes makes hopeless.
enum Handshake {
    static let nonceBytes = 32
    static let proofBytes = 32
    /// The shortest shared secret a node accepts: 256 bits, as many as the HMAC key
    /// holds (`head -c 32 /dev/urandom | base64` makes one).
    static let minimumSecretBytes = 32

    /// Fresh random bytes for a nonce.
    static func nonce() -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    enum Role: String {
        case server = "topgun-server-proof-v7"
        case client = "topgun-client-proof-v7"
    }

    /// HMAC-SHA256(secret, role | client nonce | server nonce | client id [| server id]):
    /// the client's proof precedes the server's id, the server's proof binds it.
    static func proof(secret: [UInt8], role: Role, clientNonce: [UInt8], serverNonce: [UInt8], client: NodeID, server: NodeID?) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message(role, clientNonce, serverNonce, client, server), using: SymmetricKey(data: secret)))
    }

    /// Checks a proof in constant time (swift-crypto's HMAC validation).
    static func verify(
        _ proof: [UInt8], secret: [UInt8], role: Role, clientNonce: [UInt8], serverNonce: [UInt8], client: NodeID, server: NodeID?
    ) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(
            proof, authenticating: message(role, clientNonce, serverNonce, client, server), using: SymmetricKey(data: secret))
    }

    private static func message(_ role: Role, _ clientNonce: [UInt8], _ serverNonce: [UInt8], _ client: NodeID, _ server: NodeID?) -> [UInt8] {
        var message = Array(role.rawValue.utf8)
        message += clientNonce
        message += serverNonce
        message.appendBigEndian(client.rawValue)
        if let server { message.appendBigEndian(server.rawValue) }
        return message
    }
}

/// Compares secrets in time independent of their contents, whatever their lengths
/// (swift-crypto compares the digests in constant time).
func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    SHA256.hash(data: a) == SHA256.hash(data: b)
}
