import NIOSSL

/// The one TLS policy of every listener and client (TCP, WebSocket, `wss://`): TLS 1.2
/// or later, and for TLS 1.2 only ECDHE key exchange with AEAD ciphers, so every
/// session has forward secrecy and no CBC mode (BEAST, LUCKY13). TLS 1.3's suites are
/// all AEAD with ECDHE and not configurable in BoringSSL.
enum TLSPolicy {
    static let cipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    /// `configuration` with this policy's version floor and suites.
    static func hardened(_ configuration: TLSConfiguration) -> TLSConfiguration {
        var c = configuration
        c.minimumTLSVersion = .tlsv12
        c.cipherSuites = cipherSuites
        return c
    }
}
