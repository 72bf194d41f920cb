import Foundation

/// Identifiers minted by the gateway and its stubs. Random enough never to collide.
public enum Identifiers {
    /// "TX-" + 32 hex characters: 48 bits of Unix milliseconds, then 80 random bits, as many providers' references
    /// grow with time. The gateway keeps provider ids under unique indexes (a payout's twice), and ids made close
    /// in time sort together, so those indexes grow at their right edge instead of dirtying a random page per
    /// transaction. The gateway accepts any id shape; BENCHMARKS.md gives the cost of random ones.
    public static func providerTxID(unixMillis: Int64) -> String { "TX-" + Crypto.hex(timePrefixed(byteCount: 16, unixMillis: unixMillis)) }
    /// "0x" + 64 hex characters, like an Ethereum transaction hash: 48 bits of Unix milliseconds, then 208 random
    /// bits. A real chain's hashes are random, but a real chain's receipts are not rows in the gateway's database.
    /// The stub's are, under a unique index on the hash, and hashes made close in time sort together, so that
    /// index grows at its right edge instead of dirtying a random page per receipt (a third of a mint commit's
    /// pages when the hash was random).
    public static func chainTxHash(unixMillis: Int64) -> String { "0x" + Crypto.hex(timePrefixed(byteCount: 32, unixMillis: unixMillis)) }
    /// "po_" + 32 hex characters, time-prefixed like provider transaction ids: a provider's payout id.
    public static func payoutID(unixMillis: Int64) -> String { "po_" + Crypto.hex(timePrefixed(byteCount: 16, unixMillis: unixMillis)) }
    /// A Standard Webhooks message id.
    public static func webhookMessageID() -> String { "msg_" + Crypto.hex(Crypto.randomIdentifierBytes(16)) }
    public static func uuid() -> String { UUID().uuidString.lowercased() }
    /// A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Ids made close in time sort
    /// together, so a table keyed by them grows at the right edge of its index instead of dirtying a random
    /// page per insert.
    public static func timeOrderedUUID(unixMillis: Int64) -> String {
        var bytes = timePrefixed(byteCount: 16, unixMillis: unixMillis)
        bytes[6] = 0x70 | (bytes[6] & 0x0f)
        bytes[8] = 0x80 | (bytes[8] & 0x3f)
        let hex = Array(Crypto.hex(bytes).utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, digit) in hex.enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { text.append(UInt8(ascii: "-")) }
            text.append(digit)
        }
        return String(decoding: text, as: UTF8.self)
    }
    /// Random bytes whose first six hold the Unix milliseconds, most significant first.
    private static func timePrefixed(byteCount: Int, unixMillis: Int64) -> [UInt8] {
        // A clock outside 1970...10889 (only a test clock) still gets a valid id.
        let unixMillis = min(max(unixMillis, 0), (1 << 48) - 1)
        var bytes = Crypto.randomIdentifierBytes(byteCount)
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: unixMillis >> (8 * (5 - index))) }
        return bytes
    }
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
