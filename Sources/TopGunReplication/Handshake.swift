import Crypto
import TopGunCore

/// The shared secret is never sent: each side proves it knows it with an HMAC-SHA256
/// over fresh nonces from both sides and both node ids (swift-crypto).
///
/// ```
/// client → HELLO   version, node, flags, client nonce
/// server → WELCOME version, node, head, server nonce, server proof
/// client → PROOF   client proof        (only once the server's proof checked out)
/// ```
/// A captured exchange replayed on a new connection fails: the server's nonce is new.
/// A server that does not know the secret cannot produce its proof, so a client never
/// sends its own to it (nor anything else).
enum Handshake {
    static let nonceBytes = 32
    static let proofBytes = 32

    /// Fresh random bytes for a nonce.
    static func nonce() -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    enum Role: String {
        case server = "topgun-server-proof"
        case client = "topgun-client-proof"
    }

    /// HMAC-SHA256(secret, role | client nonce | server nonce | client id | server id).
    static func proof(
        secret: [UInt8], role: Role, clientNonce: [UInt8], serverNonce: [UInt8], client: NodeID, server: NodeID
    ) -> [UInt8] {
        var message = Array(role.rawValue.utf8)
        message += clientNonce
        message += serverNonce
        message.appendBigEndian(client.rawValue)
        message.appendBigEndian(server.rawValue)
        let key = SymmetricKey(data: secret)
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: key))
    }

    /// Checks a proof in constant time.
    static func verify(
        _ proof: [UInt8], secret: [UInt8], role: Role, clientNonce: [UInt8], serverNonce: [UInt8], client: NodeID, server: NodeID
    ) -> Bool {
        constantTimeEquals(
            proof, self.proof(secret: secret, role: role, clientNonce: clientNonce, serverNonce: serverNonce, client: client, server: server))
    }
}
