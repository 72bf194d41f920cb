import Foundation
import Testing

@testable import PKRCore

/// One entry of Vectors/webhook-vectors.json; every expected signature there was computed with Python's hmac.
struct WebhookVector: Decodable, Sendable, CustomTestStringConvertible {
    var name: String
    var secrets: [String]
    var legacySecret: String?
    var id: String?
    var timestamp: String?
    var now: Int64
    var toleranceS: Int64
    var body: String?
    var bodyBase64: String?
    var signature: String?
    var legacySignature: String?
    var expect: String
    var reason: String?
    var scheme: String?

    var testDescription: String { name }

    var bodyBytes: [UInt8] {
        get throws {
            if let body { return Array(body.utf8) }
            let encoded = try #require(bodyBase64)
            return Array(try #require(Data(base64Encoded: encoded)))
        }
    }

    var headers: WebhookHeaders {
        WebhookHeaders(id: id, timestamp: timestamp, signature: signature, legacySignature: legacySignature)
    }

    func verifier() throws -> WebhookVerifier {
        WebhookVerifier(
            secrets: try secrets.map { try WebhookSecret(encoded: $0) }, toleranceSeconds: toleranceS,
            legacyKey: legacySecret.map { Array($0.utf8) })
    }

    static func loadAll() throws -> [WebhookVector] {
        let url = try #require(
            Bundle.module.url(
                forResource: "webhook-vectors", withExtension: "json",
                subdirectory: "Vectors"))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode([WebhookVector].self, from: Data(contentsOf: url))
    }
}

/// Loaded once for the parameterized test; a missing or broken file yields no cases, which `fileCoversTheBrief` catches.
private let vectors = (try? WebhookVector.loadAll()) ?? []

@Suite struct WebhookVectorTests {
    @Test func fileCoversTheBrief() throws {
        let all = try WebhookVector.loadAll()
        #expect(all.count >= 40)
        #expect(Set(all.map(\.name)).count == all.count, "names are unique")
        for vector in all {
            #expect((vector.body == nil) != (vector.bodyBase64 == nil), "\(vector.name): exactly one body form")
            #expect(vector.expect == "valid" ? vector.scheme != nil : vector.reason != nil, "\(vector.name)")
        }
        let reasons = Set(all.compactMap(\.reason))
        #expect(reasons == Set(WebhookRejection.allCases.map(\.rawValue)), "every rejection reason is exercised")
        #expect(all.contains { $0.expect == "valid" && $0.bodyBase64 != nil && $0.scheme == "standard_webhooks_v1" })
        #expect(all.contains { $0.expect == "valid" && $0.scheme == "legacy_hex" })
        #expect(all.contains { $0.expect == "valid" && $0.secrets.count > 1 })
    }

    @Test func referenceVectorIsPresent() throws {
        let reference = try #require(vectors.first { $0.id == "msg_p5jXN8AQM9LWM0D4loKWxJek" && $0.expect == "valid" })
        #expect(reference.secrets == ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        #expect(reference.signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        #expect(
            try reference.verifier().verify(reference.headers, body: reference.bodyBytes, nowSeconds: reference.now)
                == .success(.standardV1))
    }

    @Test(arguments: vectors)
    func verifierMatchesVector(_ vector: WebhookVector) throws {
        let result = try vector.verifier().verify(vector.headers, body: vector.bodyBytes, nowSeconds: vector.now)
        switch (vector.expect, result) {
        case ("valid", .success(let scheme)):
            #expect(scheme.rawValue == vector.scheme)
        case ("reject", .failure(let rejection)):
            #expect(rejection.rawValue == vector.reason)
        default:
            Issue.record("expected \(vector.expect) (\(vector.reason ?? vector.scheme ?? "")), got \(result)")
        }
    }

    @Test(arguments: vectors.filter { $0.expect == "valid" && $0.scheme == "standard_webhooks_v1" })
    func signerReproducesValidSignature(_ vector: WebhookVector) throws {
        let timestamp = try #require(vector.timestamp.flatMap { Int64($0) })
        let produced = try vector.secrets.map {
            WebhookSigner.signature(
                secret: try WebhookSecret(encoded: $0), id: try #require(vector.id),
                timestampSeconds: timestamp, body: try vector.bodyBytes)
        }
        let sent = (vector.signature ?? "").split(separator: " ").map(String.init)
        // With rotation the header may carry several entries and the signer may be any active secret.
        #expect(!Set(produced).isDisjoint(with: sent), "no configured secret reproduces \(sent)")
        if vector.secrets.count == 1, sent.count == 1 {
            #expect(produced == sent)
        }
    }

    @Test(arguments: vectors.filter { $0.expect == "valid" && $0.scheme == "legacy_hex" })
    func legacySignerReproducesValidSignature(_ vector: WebhookVector) throws {
        let key = Array(try #require(vector.legacySecret).utf8)
        var sent = try #require(vector.legacySignature)
        if sent.hasPrefix("sha256=") { sent.removeFirst("sha256=".count) }
        #expect(WebhookSigner.legacySignature(key: key, body: try vector.bodyBytes) == sent.lowercased())
    }
}

@Suite struct WebhookSecretTests {
    @Test func decodesAndReencodes() throws {
        let secret = try WebhookSecret(encoded: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        #expect(secret.keyBytes.count == 24)
        #expect(secret.encoded == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        #expect(try WebhookSecret(encoded: "  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ") == secret)
        #expect(secret.fingerprint.count == 12)
        #expect(!secret.encoded.contains(secret.fingerprint))
    }

    @Test(
        arguments: [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", .missingPrefix),
            ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", .missingPrefix),
            ("whsec_not base64!", .notBase64),
            ("whsec_" + Data(count: 23).base64EncodedString(), .tooShort(23)),
            ("whsec_" + Data(count: 65).base64EncodedString(), .tooLong(65)),
            ("whsec_", .tooShort(0)),
        ] as [(String, WebhookSecretError)])
    func rejectsBadSecrets(text: String, error: WebhookSecretError) {
        #expect(throws: error) { try WebhookSecret(encoded: text) }
    }

    @Test func acceptsBoundaryLengthsAndGenerates() throws {
        #expect(try WebhookSecret(keyBytes: Array(repeating: 1, count: 24)).keyBytes.count == 24)
        #expect(try WebhookSecret(keyBytes: Array(repeating: 1, count: 64)).keyBytes.count == 64)
        let generated = WebhookSecret.generate()
        #expect(generated.keyBytes.count == 32)
        #expect(try WebhookSecret(encoded: generated.encoded) == generated)
        #expect(generated != WebhookSecret.generate())
    }
}

@Suite struct WebhookSignerVerifierTests {
    @Test func signedBytesAreIdDotTimestampDotBody() {
        let bytes = WebhookSigner.signedBytes(id: "msg_1", timestampSeconds: 1_614_265_330, body: [0xff, 0x00])
        #expect(bytes == Array("msg_1.1614265330.".utf8) + [0xff, 0x00])
    }

    @Test func signThenVerifyRoundTrips() throws {
        let secret = WebhookSecret.generate(byteCount: 40)
        let verifier = WebhookVerifier(secrets: [WebhookSecret.generate(), secret])
        for _ in 0..<50 {
            let body = Crypto.randomBytes(Int.random(in: 0...512))
            let id = Identifiers.webhookMessageID()
            let timestamp = Int64.random(in: 1_000_000_000...2_000_000_000)
            let headers = WebhookHeaders(
                id: id, timestamp: String(timestamp),
                signature: WebhookSigner.signature(
                    secret: secret, id: id,
                    timestampSeconds: timestamp, body: body))
            #expect(verifier.verify(headers, body: body, nowSeconds: timestamp + 299) == .success(.standardV1))
            #expect(verifier.verify(headers, body: body + [0], nowSeconds: timestamp) == .failure(.signatureMismatch))
        }
    }

    @Test func noSecretsMeansNothingVerifies() throws {
        let secret = WebhookSecret.generate()
        let headers = WebhookHeaders(
            id: "msg_1", timestamp: "100",
            signature: WebhookSigner.signature(secret: secret, id: "msg_1", timestampSeconds: 100, body: []))
        #expect(WebhookVerifier(secrets: []).verify(headers, body: [], nowSeconds: 100) == .failure(.signatureMismatch))
    }

    @Test func zeroToleranceAcceptsOnlyTheExactSecond() {
        let secret = WebhookSecret.generate()
        let verifier = WebhookVerifier(secrets: [secret], toleranceSeconds: 0)
        let headers = WebhookHeaders(
            id: "msg_1", timestamp: "1000",
            signature: WebhookSigner.signature(secret: secret, id: "msg_1", timestampSeconds: 1000, body: []))
        #expect(verifier.verify(headers, body: [], nowSeconds: 1000) == .success(.standardV1))
        #expect(verifier.verify(headers, body: [], nowSeconds: 1001) == .failure(.timestampTooOld))
        #expect(verifier.verify(headers, body: [], nowSeconds: 999) == .failure(.timestampTooNew))
    }

    @Test func oversizedHeadersAreMalformed() {
        let secret = WebhookSecret.generate()
        let verifier = WebhookVerifier(secrets: [secret])
        let good = WebhookSigner.signature(secret: secret, id: "msg_1", timestampSeconds: 1000, body: [])
        let longID = String(repeating: "m", count: 257)
        #expect(
            verifier.verify(WebhookHeaders(id: longID, timestamp: "1000", signature: good), body: [], nowSeconds: 1000)
                == .failure(.malformedMessageID))
        let padded = String(repeating: "v1a,x ", count: 700) + good
        #expect(
            verifier.verify(WebhookHeaders(id: "msg_1", timestamp: "1000", signature: padded), body: [], nowSeconds: 1000)
                == .failure(.malformedSignature))
    }

    @Test func parseTimestampAcceptsOnlyDigits() {
        #expect(WebhookVerifier.parseTimestamp("1614265330") == 1_614_265_330)
        #expect(WebhookVerifier.parseTimestamp("0") == 0)
        #expect(WebhookVerifier.parseTimestamp("999999999999") == 999_999_999_999)
        for text in ["", "abc", "-5", "+5", "1.5", "1e9", " 1", "1 ", "1234567890123", "١٢٣"] {
            #expect(WebhookVerifier.parseTimestamp(text) == nil, "\(text)")
        }
    }
}
