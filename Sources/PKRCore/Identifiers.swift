import Foundation

/// Identifiers minted by the gateway and its stubs. Random enough never to collide.
public enum Identifiers {
    /// "TX-" + 32 hex characters (128 random bits).
    public static func providerTxID() -> String { "TX-" + Crypto.hex(Crypto.randomBytes(16)) }
    /// "0x" + 64 hex characters, like an Ethereum transaction hash.
    public static func chainTxHash() -> String { "0x" + Crypto.hex(Crypto.randomBytes(32)) }
    /// A Standard Webhooks message id.
    public static func webhookMessageID() -> String { "msg_" + Crypto.hex(Crypto.randomBytes(16)) }
    public static func uuid() -> String { UUID().uuidString.lowercased() }
    /// A CSRF token of 64 alphanumeric characters, as Django issues them.
    public static func csrfToken() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
        return String(decoding: Crypto.randomBytes(64).map { alphabet[Int($0) % alphabet.count] }, as: UTF8.self)
    }
}

/// Validates an `Idempotency-Key` header: 1 to 255 printable ASCII characters.
public enum IdempotencyKey {
    public static let bytesMax = 255

    public static func validate(_ key: String) throws(GatewayError) -> String {
        let bytes = key.utf8
        guard !bytes.isEmpty, bytes.count <= bytesMax, bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else {
            throw .invalidIdempotencyKey
        }
        return key
    }

    /// A fingerprint of the request's meaning, so that "200000000" and 200000000 are the same request.
    public static func fingerprint(_ fields: [String]) -> String {
        Crypto.sha256Hex(fields.joined(separator: "\u{1f}"))
    }
}
