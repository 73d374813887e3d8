import Foundation
import JWTKit

/// Verifies client JWTs (vapor/jwt-kit): HS256 with a shared secret, ES256 and RS256
/// with PEM public keys. `exp` and `sub` are required; `nbf`, `iss` and `aud` are
/// checked when present in the token or required by the configuration. The principal
/// is `sub` plus the `roles` array claim.
public struct TokenVerifier: Sendable {
    /// One collection per key, with the algorithm it verifies: a token is checked
    /// against each key of its header's `alg` until one signature verifies (keys are
    /// rarely given `kid`s by simple issuers).
    private let keys: [(algorithm: String, collection: JWTKeyCollection)]
    public let issuer: String?
    public let audience: String?

    /// - Parameters:
    ///   - hmacSecret: the HS256 key (a secret file's text, surrounding whitespace
    ///     trimmed by the caller).
    ///   - publicKeysPEM: ES256 (P-256) or RS256 public keys in PEM.
    /// - Throws: `ReplicationError(.badToken)` for a PEM that is neither.
    public init(hmacSecret: String?, publicKeysPEM: [String], issuer: String? = nil, audience: String? = nil) async throws(ReplicationError) {
        var keys: [(algorithm: String, collection: JWTKeyCollection)] = []
        if let hmacSecret {
            // RFC 7518 §3.2: an HS256 key is at least as long as the hash (jwt-kit
            // stops the process on a shorter one).
            guard hmacSecret.utf8.count >= 32 else {
                throw ReplicationError(.badToken, "the JWT secret is \(hmacSecret.utf8.count) bytes; HS256 needs at least 32")
            }
            keys.append(("HS256", await JWTKeyCollection().add(hmac: HMACKey(from: hmacSecret), digestAlgorithm: .sha256)))
        }
        for pem in publicKeysPEM {
            if let key = try? ES256PublicKey(pem: pem) {
                keys.append(("ES256", await JWTKeyCollection().add(ecdsa: key)))
            } else if let key = try? Insecure.RSA.PublicKey(pem: pem) {
                keys.append(("RS256", await JWTKeyCollection().add(rsa: key, digestAlgorithm: .sha256)))
            } else {
                throw ReplicationError(.badToken, "a JWT public key is neither a P-256 (ES256) nor an RSA (RS256) public key in PEM")
            }
        }
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
    }

    /// The claims read from a token.
    struct Claims: JWTPayload {
        var sub: SubjectClaim?
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var roles: [String]?

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// Why a token was refused: one clear reason.
    enum Refusal: String, Error {
        case malformed = "malformed token"
        case duplicateClaim = "malformed token: a claim or header name occurs twice"
        case unacceptedAlgorithm = "algorithm not accepted (the header's alg has no configured key)"
        case badSubject = "sub cannot name a user (empty, a control character, or a : or / that separates a user's keys)"
        case badSignature = "bad signature (no configured key verifies it)"
        case expired = "token expired"
        case notYetValid = "token not yet valid (nbf)"
        case noExpiry = "token has no exp claim"
        case noSubject = "token has no sub claim"
        case wrongIssuer = "wrong issuer"
        case wrongAudience = "wrong audience"
    }

    /// The principal a token names, at wall time `now`.
    ///
    /// - Throws: `ReplicationError(.badToken)` with the reason.
    public func principal(for token: String, now: Date = Date()) async throws(ReplicationError) -> Principal {
        // Header and claims are read strictly before any decoder sees them: a name
        // given twice is refused (decoders disagree on which value wins).
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let header = Self.base64URL(parts[0]), let payload = Self.base64URL(parts[1]) else { throw refuse(.malformed) }
        for part in [header, payload] {
            if let why = StrictJSON.refusal(part) { throw refuse(why.hasPrefix("duplicate") ? .duplicateClaim : .malformed) }
        }
        guard let fields = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any], let alg = fields["alg"] as? String else {
            throw refuse(.malformed)
        }
        let candidates = keys.filter { $0.algorithm == alg }
        guard !candidates.isEmpty else { throw refuse(.unacceptedAlgorithm) }
        var claims: Claims?
        var malformed = false
        for (_, collection) in candidates {
            do {
                claims = try await collection.verify(token, as: Claims.self)
                break
            } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
                continue
            } catch {
                malformed = true
            }
        }
        guard let claims else { throw refuse(malformed ? .malformed : .badSignature) }
        guard let exp = claims.exp else { throw refuse(.noExpiry) }
        guard now < exp.value else { throw refuse(.expired) }
        if let nbf = claims.nbf, now < nbf.value { throw refuse(.notYetValid) }
        if let issuer, claims.iss?.value != issuer { throw refuse(.wrongIssuer) }
        if let audience, !(claims.aud?.value.contains(audience) ?? false) { throw refuse(.wrongAudience) }
        guard let sub = claims.sub?.value, !sub.isEmpty else { throw refuse(.noSubject) }
        guard Principal.refusal(ofSubject: sub) == nil else { throw refuse(.badSubject) }
        return Principal(
            subject: sub, roles: (claims.roles ?? []).filter { $0 != "replica" },
            // Clamped: a signed token may carry any number (year 2286 is far enough).
            expiresAtMillis: UInt64(min(max(0, exp.value.timeIntervalSince1970), 1e10) * 1000))
    }

    /// The bytes of a base64url segment without padding (RFC 7515 §2), nil when it is
    /// not one.
    static func base64URL(_ text: Substring) -> [UInt8]? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 < 0x80 && ($0 == 0x2D || $0 == 0x5F || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0)) })
        else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.utf8.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard).map { Array($0) }
    }

    private func refuse(_ refusal: Refusal) -> ReplicationError { ReplicationError(.badToken, refusal.rawValue) }
}
