import Foundation
import PKRCore

/// A seeded fuzzer for the code that reads hostile bytes first: the webhook verifier, the payload parser and the
/// money parser. Every input is derived from `(seed, target, iteration)` alone, so any one of them can be replayed.
/// Besides "does not crash", each target checks a property an attacker would love to break.
public struct Fuzzer {
    public enum Target: String, CaseIterable, Sendable {
        case verifier, parser, money
    }

    public struct Violation: Error, CustomStringConvertible {
        public var target: Target
        public var iteration: Int
        public var message: String
        public var input: String

        public var description: String { "\(target.rawValue) #\(iteration): \(message)\n  input: \(input)" }
    }

    public struct Report: Sendable {
        public var target: Target
        public var inputs = 0
        public var accepted = 0
        /// How many inputs ended in each outcome (an error code, or "accepted").
        public var outcomes: [String: Int] = [:]
    }

    public let seed: UInt64
    static let nowSeconds: Int64 = 1_795_000_000
    static let secret = try! WebhookSecret(keyBytes: Array(0..<32).map { UInt8($0 * 7 & 0xff) })
    static let otherSecret = try! WebhookSecret(keyBytes: Array(repeating: 0x42, count: 32))
    static let legacyKey: [UInt8] = Array("legacy-fuzz-key".utf8)
    static let verifier = WebhookVerifier(secrets: [otherSecret, secret], toleranceSeconds: 300, legacyKey: legacyKey)

    public init(seed: UInt64) { self.seed = seed }

    /// Runs `iterations` inputs (or only `only`) against `target`.
    public func run(_ target: Target, iterations: Int, only: Int? = nil) throws(Violation) -> Report {
        var report = Report(target: target)
        let range = only.map { $0...$0 } ?? 0...(iterations - 1)
        for iteration in range {
            var random = FuzzRandom(seed: seed, target: target, iteration: iteration)
            let outcome: String
            switch target {
            case .verifier: outcome = try verifierCase(&random, iteration)
            case .parser: outcome = try parserCase(&random, iteration)
            case .money: outcome = try moneyCase(&random, iteration)
            }
            report.inputs += 1
            if outcome == "accepted" { report.accepted += 1 }
            report.outcomes[outcome, default: 0] += 1
        }
        return report
    }

    // MARK: - Verifier

    /// A valid delivery, then hostile edits to its headers or body. Property: whatever is accepted carries exactly
    /// the id, timestamp and body that the key signed. (The timestamp is signed as a number, as in the reference
    /// libraries, so "0017…" and "17…" are the same signed message.)
    private func verifierCase(_ random: inout FuzzRandom, _ iteration: Int) throws(Violation) -> String {
        let body = Self.validBody(&random)
        let id = "msg_" + Crypto.hex(random.bytes(8))
        let timestamp = Self.nowSeconds + Int64(random.int(600)) - 300
        let signature = WebhookSigner.signature(secret: Self.secret, id: id, timestampSeconds: timestamp, body: body)
        var headers = WebhookHeaders(id: id, timestamp: String(timestamp), signature: signature)
        var mutated = body
        let legacy = random.int(10) == 0
        if legacy {
            headers = WebhookHeaders(legacySignature: WebhookSigner.legacySignature(key: Self.legacyKey, body: body))
        }
        let edits = random.int(3)
        for _ in 0..<edits {
            switch random.int(legacy ? 2 : 6) {
            case 0: mutated = random.mutate(mutated, dictionary: Self.jsonTokens)
            case 1:
                if legacy {
                    headers.legacySignature = random.mutateText(headers.legacySignature ?? "", dictionary: Self.headerTokens)
                } else {
                    headers.signature = random.mutateText(headers.signature ?? "", dictionary: Self.headerTokens)
                }
            case 2: headers.id = random.int(8) == 0 ? nil : random.mutateText(headers.id ?? "", dictionary: Self.headerTokens)
            case 3:
                headers.timestamp = random.int(8) == 0 ? nil : random.mutateText(headers.timestamp ?? "", dictionary: Self.headerTokens)
            case 4:
                // Extra candidates, some valid under the wrong key or for another message.
                let other = WebhookSigner.signature(secret: Self.otherSecret, id: id + "x", timestampSeconds: timestamp, body: body)
                headers.signature = [headers.signature ?? "", other, "v1a," + Crypto.hex(random.bytes(8))].shuffled(using: &random)
                    .joined(separator: String(repeating: " ", count: 1 + random.int(3)))
            default: headers.signature = random.int(2) == 0 ? nil : ""
            }
        }
        let result = Self.verifier.verify(headers, body: mutated, nowSeconds: Self.nowSeconds)
        switch result {
        case .failure(let rejection):
            return rejection.rawValue
        case .success(let scheme):
            let intact =
                legacy
                ? mutated == body && headers.id == nil && headers.timestamp == nil && headers.signature == nil
                : headers.id == id && headers.timestamp.flatMap(WebhookVerifier.parseTimestamp) == timestamp && mutated == body
            guard intact else {
                throw Violation(
                    target: .verifier, iteration: iteration, message: "accepted (\(scheme)) a delivery whose signed content changed",
                    input:
                        "id=\(headers.id.debugDescription) ts=\(headers.timestamp.debugDescription) sig=\(headers.signature.debugDescription) legacy=\(headers.legacySignature.debugDescription) body=\(Self.escape(mutated))"
                )
            }
            return "accepted"
        }
    }

    // MARK: - Payload parser

    /// Valid payloads edited byte by byte, and generated near-JSON. Property: a parsed transaction is well-formed,
    /// survives encode → parse unchanged, and every refusal is a typed client error.
    private func parserCase(_ random: inout FuzzRandom, _ iteration: Int) throws(Violation) -> String {
        var body: [UInt8]
        switch random.int(50) {
        case 0: body = Self.nested(&random)
        case 1...3: body = random.bytes(random.int(64))
        case 4...24: body = Self.structured(&random)
        default: body = random.mutate(Self.validBody(&random), dictionary: Self.jsonTokens)
        }
        if random.int(4) == 0 { body = random.mutate(body, dictionary: Self.jsonTokens) }
        let tx: ProviderTransaction
        do {
            tx = try WebhookEvent.parse(body)
        } catch {
            return error.code
        }
        func fail(_ message: String) -> Violation {
            Violation(target: .parser, iteration: iteration, message: message, input: Self.escape(body))
        }
        guard tx.amountPaisa > 0, tx.amountPaisa <= Int64.max / Money.unitsPerPaisa else { throw fail("parsed amount \(tx.amountPaisa)") }
        guard WebhookEvent.isIdentifier(tx.providerTxID, bytesMax: WebhookEvent.providerTxIDBytesMax),
            WebhookEvent.isIdentifier(tx.account, bytesMax: WebhookEvent.accountBytesMax)
        else {
            throw fail("parsed identifiers that the rules refuse")
        }
        let encoded = WebhookEvent.encode(tx)
        let again: ProviderTransaction
        do { again = try WebhookEvent.parse(encoded) } catch { throw fail("its own encoding does not parse: \(error.code)") }
        guard again.differingFields(from: tx).isEmpty, again.status == tx.status, again.occurredAtMicros == tx.occurredAtMicros,
            again.memo == tx.memo, again.reference == tx.reference, WebhookEvent.encode(again) == encoded
        else {
            throw fail("encode → parse changed the transaction")
        }
        return "accepted"
    }

    // MARK: - Money

    /// Amount text as people and attackers write it. Property: a parsed amount formats back to the canonical
    /// spelling of the input, and units parse only from plain digit strings.
    private func moneyCase(_ random: inout FuzzRandom, _ iteration: Int) throws(Violation) -> String {
        let alphabet = Array("0123456789.-+eE ,_\u{00A0}\u{0661}x".unicodeScalars)
        var text = ""
        for _ in 0..<random.int(24) {
            text.unicodeScalars.append(
                random.int(3) == 0
                    ? alphabet[random.int(alphabet.count)]
                    : alphabet[random.int(10)])
        }
        if random.int(5) == 0 { text = String(random.int(2) == 0 ? Int64.max : Int64.max / Money.unitsPerPaisa) + text }
        func fail(_ message: String) -> Violation {
            Violation(target: .money, iteration: iteration, message: message, input: text.debugDescription)
        }
        let canonical = Self.canonicalPKR(text)
        switch Result(catching: { () throws(MoneyError) in try Money.parsePaisa(text) }) {
        case .success(let paisa):
            guard let canonical, Money.formatPaisa(paisa) == canonical else {
                throw fail("parsed \(paisa) paisa; formats as \(Money.formatPaisa(paisa)), expected \(canonical ?? "a refusal")")
            }
        case .failure(let error):
            // Refused text must be malformed, or a well-formed amount outside what the gateway can hold.
            if let canonical, canonical != "0.00", error != .outOfRange {
                throw fail("refused well-formed amount \(canonical) as \(error)")
            }
        }
        switch Result(catching: { () throws(MoneyError) in try Money.parseUnits(text) }) {
        case .success(let units):
            let digits = text.drop { $0 == "0" }
            guard text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), String(units) == String(digits) else {
                throw fail("parsed \(units) units from non-canonical text")
            }
            return "accepted"
        case .failure(let error):
            return "\(error)"
        }
    }

    /// "0012.5" → "12.50"; nil for anything that is not digits with an optional one- or two-digit fraction.
    static func canonicalPKR(_ text: String) -> String? {
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty, whole.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
            return nil
        }
        var fraction = parts.count == 2 ? String(parts[1]) : "00"
        guard (1...2).contains(fraction.count), fraction.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        if fraction.count == 1 { fraction += "0" }
        let trimmed = whole.drop { $0 == "0" }
        return (trimmed.isEmpty ? "0" : String(trimmed)) + "." + fraction
    }

    // MARK: - Inputs

    static let jsonTokens: [[UInt8]] = [
        "\"amount_pkr\":", "\"provider_tx_id\":", "\"status\":", "\"settled\"", "\"pending\"", "\"failed\"", "\"credit\"",
        "\"debit\"", "\"wallet.credit\"", "null", "true", "false", "1e308", "-0", "99999999999999999999", "0.001", "\"-1.00\"",
        "\"\\u0000\"", "\"\\ud800\"", "\"\\\"", "[", "]", "{", "}", ":", ",", "\"metadata\":{\"reference\":",
        "\"2026-02-30T25:61:61Z\"", "\"9999-12-31T23:59:59.999999Z\"", "\"0000-01-01T00:00:00Z\"", "+14:00", "\u{FEFF}",
        "\"" + String(repeating: "A", count: 300) + "\"", "\u{10FFFF}", "\u{00}", "\"922337203685477.58\"",
        "\"92233720368547.58\"", "\"\"", "\"account\":\"WALLET-001\"", "\"account\":\"../../etc\"",
    ].map { Array($0.utf8) }

    static let headerTokens: [[UInt8]] = [
        "v1,", "v2,", "v1a,", " ", ",", "=", "==", "+", "/", "-", "0", "00", "9999999999999", "-1", "1e3", "\u{00}", "\r\n",
        "sha256=", "\u{00E9}", String(repeating: "A", count: 5000),
    ].map { Array($0.utf8) }

    static func validBody(_ random: inout FuzzRandom) -> [UInt8] {
        let direction: TransactionDirection = random.int(2) == 0 ? .credit : .debit
        let status: TransactionStatus = [.settled, .pending, .failed][random.int(3)]
        let tx = ProviderTransaction(
            providerTxID: "TX-" + Crypto.hex(random.bytes(8)), account: "WALLET-00\(random.int(3))", direction: direction,
            amountPaisa: Int64(1 + random.int(1_000_000_000)), status: status,
            occurredAtMicros: nowSeconds * Timestamp.microsPerSecond + Int64(random.int(1_000_000)),
            memo: random.int(4) == 0 ? "naïve ☃ \"quoted\"" : "fuzz", reference: direction == .debit ? "job-\(random.int(100))" : nil)
        return WebhookEvent.encode(tx)
    }

    static let fieldNames = [
        "type", "provider_tx_id", "account", "direction", "amount_pkr", "status", "occurred_at", "memo",
        "metadata", "extra",
    ]
    static let fieldValues = [
        "\"wallet.credit\"", "\"wallet.debit\"", "\"TX-1\"", "\"WALLET-001\"", "\"credit\"", "\"debit\"", "\"settled\"",
        "\"pending\"", "\"failed\"", "\"1000.00\"", "\"0.01\"", "\"0\"", "\"-5.00\"", "\"1.234\"", "\"1e3\"", "1000",
        "\"92233720368547.58\"", "\"2026-11-26T12:00:00Z\"", "\"2026-11-26T12:00:00.123456+05:00\"", "\"2026-13-01T00:00:00Z\"",
        "\"\"", "null", "true", "[]", "{}", "{\"reference\":\"job-1\"}", "{\"reference\":7}", "\"\\u0000\"",
        "\"" + String(repeating: "m", count: 600) + "\"", "-1", "1.5e300",
    ]

    /// An object built field by field from plausible and hostile values: reaches the checks behind the JSON syntax.
    static func structured(_ random: inout FuzzRandom) -> [UInt8] {
        var fields: [String] = []
        for name in fieldNames where random.int(8) != 0 {
            fields.append("\"\(name)\":\(fieldValues[random.int(fieldValues.count)])")
            if random.int(20) == 0 { fields.append("\"\(name)\":\(fieldValues[random.int(fieldValues.count)])") }
        }
        return Array(("{" + fields.shuffled(using: &random).joined(separator: ",") + "}").utf8)
    }

    /// Deep nesting, which a recursive parser could overflow its stack on.
    static func nested(_ random: inout FuzzRandom) -> [UInt8] {
        let depth = 1 + random.int(20_000)
        let open: [UInt8] = random.int(2) == 0 ? Array("[".utf8) : Array("{\"a\":".utf8)
        var body: [UInt8] = []
        body.reserveCapacity(depth * open.count)
        for _ in 0..<depth { body += open }
        return body
    }

    static func escape(_ bytes: [UInt8]) -> String {
        String(
            bytes.prefix(600).map { (32..<127).contains($0) && $0 != 92 ? String(UnicodeScalar($0)) : "\\x" + Crypto.hex([$0]) }
                .joined()) + (bytes.count > 600 ? "…(\(bytes.count) bytes)" : "")
    }
}

/// A small, fast generator whose whole future is fixed by its seed, so that a run can be replayed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// SplitMix64 keyed by seed, target and iteration, with the byte-level edits a fuzzer makes.
struct FuzzRandom: RandomNumberGenerator {
    private var generator: SplitMix64

    init(seed: UInt64, target: Fuzzer.Target, iteration: Int) {
        precondition(iteration >= 0, "iterations are numbered from 0")
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in target.rawValue.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        generator = SplitMix64(seed: seed ^ hash ^ (UInt64(iteration) &* 0x9E37_79B9_7F4A_7C15))
        _ = generator.next()
    }

    mutating func next() -> UInt64 { generator.next() }

    /// A uniform integer in 0..<bound.
    mutating func int(_ bound: Int) -> Int {
        precondition(bound > 0, "the bound must be positive")
        return Int(next() % UInt64(bound))
    }

    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }

    static let interesting: [UInt8] = [0, 0x7f, 0x80, 0xff, 0xc3, 0xed, 34, 92, 123, 125, 91, 93, 46, 45, 48, 57, 32, 10]

    mutating func mutate(_ input: [UInt8], dictionary: [[UInt8]]) -> [UInt8] {
        var bytes = input
        for _ in 0...int(3) {
            let at = bytes.isEmpty ? 0 : int(bytes.count + 1)
            switch int(8) {
            case 0 where !bytes.isEmpty: bytes[min(at, bytes.count - 1)] ^= UInt8(1) << UInt8(int(8))
            case 1 where !bytes.isEmpty: bytes[min(at, bytes.count - 1)] = Self.interesting[int(Self.interesting.count)]
            case 2: bytes.insert(contentsOf: self.bytes(1 + int(8)), at: at)
            case 3 where !bytes.isEmpty:
                let start = min(at, bytes.count - 1)
                bytes.removeSubrange(start..<min(bytes.count, start + 1 + int(16)))
            case 4: bytes.insert(contentsOf: dictionary[int(dictionary.count)], at: at)
            case 5 where !bytes.isEmpty:
                let start = min(at, bytes.count - 1)
                bytes.replaceSubrange(start..<min(bytes.count, start + 1 + int(8)), with: dictionary[int(dictionary.count)])
            case 6: bytes = Array(bytes.prefix(int(bytes.count + 1)))
            case 7 where !bytes.isEmpty:
                let start = int(bytes.count)
                let slice = bytes[start..<min(bytes.count, start + 1 + int(32))]
                bytes.insert(contentsOf: slice, at: at)
            default: bytes.append(contentsOf: self.bytes(1 + int(4)))
            }
        }
        return bytes
    }

    mutating func mutateText(_ text: String, dictionary: [[UInt8]]) -> String {
        String(decoding: mutate(Array(text.utf8), dictionary: dictionary), as: UTF8.self)
    }
}
