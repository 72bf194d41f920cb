import Foundation

/// A webhook signing secret: `whsec_` followed by base64 of 24 to 64 random bytes.
public struct WebhookSecret: Sendable, Equatable {
    public static let prefix = "whsec_"
    public static let keyBytesMin = 24
    public static let keyBytesMax = 64

    public let keyBytes: [UInt8]

    public init(keyBytes: [UInt8]) throws(WebhookSecretError) {
        guard keyBytes.count >= Self.keyBytesMin else { throw .tooShort(keyBytes.count) }
        guard keyBytes.count <= Self.keyBytesMax else { throw .tooLong(keyBytes.count) }
        self.keyBytes = keyBytes
    }

    public init(encoded: String) throws(WebhookSecretError) {
        let trimmed = encoded.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix(Self.prefix) else { throw .missingPrefix }
        guard let data = Data(base64Encoded: String(trimmed.dropFirst(Self.prefix.count))) else { throw .notBase64 }
        try self.init(keyBytes: Array(data))
    }

    public var encoded: String { Self.prefix + Data(keyBytes).base64EncodedString() }

    public static func generate(byteCount: Int = 32) -> WebhookSecret {
        // The byte count is ours, not a caller's input, so an invalid one is a programming error.
        try! WebhookSecret(keyBytes: Crypto.randomBytes(byteCount))
    }

    /// A short, non-reversible label for logs and listings; never the secret itself.
    public var fingerprint: String { String(Crypto.hex(Crypto.sha256(keyBytes)).prefix(12)) }
}

public enum WebhookSecretError: Error, Equatable, Sendable, CustomStringConvertible {
    case missingPrefix
    case notBase64
    case tooShort(Int)
    case tooLong(Int)

    public var description: String {
        switch self {
        case .missingPrefix: return "a webhook secret must start with whsec_"
        case .notBase64: return "a webhook secret must be whsec_ followed by base64"
        case .tooShort(let n): return "a webhook secret must decode to at least 24 bytes (got \(n))"
        case .tooLong(let n): return "a webhook secret must decode to at most 64 bytes (got \(n))"
        }
    }
}

/// Why a delivery was not accepted as authentic. The raw values are the stable `error` codes.
public enum WebhookRejection: String, Error, Sendable, Codable, CaseIterable {
    case missingHeaders = "missing_signature_headers"
    case malformedMessageID = "malformed_message_id"
    case malformedTimestamp = "malformed_timestamp"
    case timestampTooOld = "timestamp_too_old"
    case timestampTooNew = "timestamp_too_new"
    case malformedSignature = "malformed_signature"
    case signatureMismatch = "signature_mismatch"
}

public enum WebhookScheme: String, Sendable, Codable {
    case standardV1 = "standard_webhooks_v1"
    case legacyHex = "legacy_hex"
}

/// The signature-related headers of one delivery, exactly as received.
public struct WebhookHeaders: Sendable {
    public var id: String?
    public var timestamp: String?
    public var signature: String?
    public var legacySignature: String?

    public init(id: String? = nil, timestamp: String? = nil, signature: String? = nil, legacySignature: String? = nil) {
        self.id = id
        self.timestamp = timestamp
        self.signature = signature
        self.legacySignature = legacySignature
    }
}

/// Standard Webhooks v1 signing: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
public enum WebhookSigner {
    public static func signedBytes(id: String, timestampSeconds: Int64, body: [UInt8]) -> [UInt8] {
        var message = [UInt8]()
        message.reserveCapacity(id.utf8.count + 24 + body.count)
        message.append(contentsOf: id.utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: String(timestampSeconds).utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: body)
        return message
    }

    public static func signature(secret: WebhookSecret, id: String, timestampSeconds: Int64, body: [UInt8]) -> String {
        let mac = Crypto.hmacSHA256(key: secret.keyBytes, message: signedBytes(id: id, timestampSeconds: timestampSeconds, body: body))
        return "v1," + Data(mac).base64EncodedString()
    }

    /// The legacy scheme: lowercase hex HMAC-SHA256 over the body alone (no replay protection).
    public static func legacySignature(key: [UInt8], body: [UInt8]) -> String {
        Crypto.hex(Crypto.hmacSHA256(key: key, message: body))
    }
}

/// Verifies deliveries. Pure: the clock reading and the keys are passed in.
public struct WebhookVerifier: Sendable {
    public static let messageIDBytesMax = 256
    public static let signatureHeaderBytesMax = 4096
    public static let timestampDigitsMax = 12

    public let secrets: [WebhookSecret]
    public let toleranceSeconds: Int64
    /// When set, `X-Signature: hex(HMAC-SHA256(key, body))` is accepted too. It has no replay window.
    public let legacyKey: [UInt8]?

    public init(secrets: [WebhookSecret], toleranceSeconds: Int64 = 300, legacyKey: [UInt8]? = nil) {
        precondition(toleranceSeconds >= 0, "tolerance must not be negative")
        self.secrets = secrets
        self.toleranceSeconds = toleranceSeconds
        self.legacyKey = legacyKey
    }

    public func verify(_ headers: WebhookHeaders, body: [UInt8], nowSeconds: Int64) -> Result<WebhookScheme, WebhookRejection> {
        let hasStandard = headers.id != nil || headers.timestamp != nil || headers.signature != nil
        if !hasStandard, let legacyKey, let legacy = headers.legacySignature {
            return verifyLegacy(legacy, key: legacyKey, body: body)
        }
        guard let id = headers.id, let timestampText = headers.timestamp, let signatureHeader = headers.signature else {
            return .failure(.missingHeaders)
        }
        guard !id.isEmpty, id.utf8.count <= Self.messageIDBytesMax,
            id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f })
        else { return .failure(.malformedMessageID) }
        guard let timestamp = Self.parseTimestamp(timestampText) else { return .failure(.malformedTimestamp) }
        if timestamp < nowSeconds - toleranceSeconds { return .failure(.timestampTooOld) }
        if timestamp > nowSeconds + toleranceSeconds { return .failure(.timestampTooNew) }
        guard signatureHeader.utf8.count <= Self.signatureHeaderBytesMax else { return .failure(.malformedSignature) }

        var candidates: [[UInt8]] = []
        // Split as bytes: the header is ASCII when valid, and splitting by Character cost more than the MAC.
        for entry in signatureHeader.utf8.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true) {
            guard let comma = entry.firstIndex(of: UInt8(ascii: ",")) else { continue }
            // Other versions (v1a, ...) are skipped as the spec asks; only v1 is understood here.
            guard entry[..<comma].elementsEqual("v1".utf8) else { continue }
            if let mac = Data(base64Encoded: Data(entry[entry.index(after: comma)...])), mac.count == Crypto.sha256Bytes {
                candidates.append(Array(mac))
            }
        }
        guard !candidates.isEmpty else { return .failure(.malformedSignature) }

        let message = WebhookSigner.signedBytes(id: id, timestampSeconds: timestamp, body: body)
        var matched = false
        // Every secret is tried against every candidate so timing reveals nothing about which matched.
        for secret in secrets {
            let expected = Crypto.hmacSHA256(key: secret.keyBytes, message: message)
            for candidate in candidates where Crypto.constantTimeEqual(expected, candidate) {
                matched = true
            }
        }
        return matched ? .success(.standardV1) : .failure(.signatureMismatch)
    }

    private func verifyLegacy(_ header: String, key: [UInt8], body: [UInt8]) -> Result<WebhookScheme, WebhookRejection> {
        var text = header.trimmingCharacters(in: .whitespaces)
        if text.hasPrefix("sha256=") { text.removeFirst("sha256=".count) }
        guard let provided = Crypto.unhex(text), provided.count == Crypto.sha256Bytes else {
            return .failure(.malformedSignature)
        }
        let expected = Crypto.hmacSHA256(key: key, message: body)
        return Crypto.constantTimeEqual(expected, provided) ? .success(.legacyHex) : .failure(.signatureMismatch)
    }

    /// Integer Unix seconds only: digits, no sign, no fraction, no exponent.
    public static func parseTimestamp(_ text: String) -> Int64? {
        let bytes = text.utf8
        guard !bytes.isEmpty, bytes.count <= timestampDigitsMax,
            bytes.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int64(text)
    }
}
