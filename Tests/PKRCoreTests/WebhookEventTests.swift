import Foundation
import Testing

@testable import PKRCore

private var validFields: [String: Any] {
    [
        "type": "wallet.credit", "provider_tx_id": "TX-0001", "account": "PK00DEMO", "direction": "credit",
        "amount_pkr": "1000.50", "status": "settled", "occurred_at": "2025-01-01T05:00:00+05:00",
        "memo": "deposit / ref 42", "metadata": ["reference": "burn:job-7"],
    ]
}

private func json(_ fields: [String: Any]) -> [UInt8] {
    Array(try! JSONSerialization.data(withJSONObject: fields))
}

private func json(_ text: String) -> [UInt8] { Array(text.utf8) }

private func payload(setting key: String, to value: Any?) -> [UInt8] {
    var fields = validFields
    fields[key] = value
    return json(fields)
}

private func parseError(_ body: [UInt8]) -> GatewayError? {
    do {
        _ = try WebhookEvent.parse(body)
        return nil
    } catch {
        return error
    }
}

/// The field named by an `invalidField` error, so tests don't pin the human-readable reason.
private func invalidFieldName(_ error: GatewayError?) -> String? {
    guard case .invalidField(let field, _)? = error else { return nil }
    return field
}

private func isInvalidJSON(_ error: GatewayError?) -> Bool {
    guard case .invalidJSON? = error else { return false }
    return true
}

@Suite struct WebhookEventParseTests {
    @Test func parsesValidPayload() throws {
        let tx = try WebhookEvent.parse(json(validFields))
        #expect(
            tx
                == ProviderTransaction(
                    providerTxID: "TX-0001", account: "PK00DEMO", direction: .credit, amountPaisa: 100_050, status: .settled,
                    occurredAtMicros: 1_735_689_600 * 1_000_000, memo: "deposit / ref 42", reference: "burn:job-7"))
    }

    @Test func optionalFieldsMayBeAbsent() throws {
        var fields = validFields
        for key in ["type", "memo", "metadata"] { fields[key] = nil }
        let tx = try WebhookEvent.parse(json(fields))
        #expect(tx.memo == "")
        #expect(tx.reference == nil)
    }

    @Test func unknownFieldsAreIgnored() throws {
        var fields = validFields
        fields["fee_pkr"] = 12.5
        fields["extra"] = ["nested": [1, 2, 3]]
        fields["metadata"] = ["reference": "burn:job-7", "note": "hello"]
        #expect(try WebhookEvent.parse(json(fields)) == WebhookEvent.parse(json(validFields)))
    }

    @Test(arguments: ["provider_tx_id", "account", "direction", "amount_pkr", "status", "occurred_at"])
    func missingRequiredField(name: String) {
        #expect(parseError(payload(setting: name, to: nil)) == .missingField(name))
    }

    @Test(arguments: ["provider_tx_id", "amount_pkr", "occurred_at"])
    func nullCountsAsMissing(name: String) {
        #expect(parseError(payload(setting: name, to: NSNull())) == .missingField(name))
    }

    @Test(arguments: [
        ("direction", "CREDIT"), ("direction", "refund"), ("status", "done"), ("status", ""),
        ("type", "wallet.debit"), ("type", "payment.credit"), ("occurred_at", "2025-02-30T00:00:00Z"),
        ("occurred_at", "1735689600"), ("provider_tx_id", ""), ("provider_tx_id", "TX 1"),
        ("provider_tx_id", String(repeating: "a", count: 129)), ("account", "PK/1"),
        ("account", String(repeating: "a", count: 65)), ("memo", String(repeating: "m", count: 501)),
    ])
    func invalidFieldValue(name: String, value: String) {
        #expect(invalidFieldName(parseError(payload(setting: name, to: value))) == name)
    }

    @Test func debitMustBeTypedAsDebit() throws {
        var fields = validFields
        fields["direction"] = "debit"
        #expect(invalidFieldName(parseError(json(fields))) == "type")
        fields["type"] = "wallet.debit"
        #expect(try WebhookEvent.parse(json(fields)).direction == .debit)
    }

    @Test func invalidMetadataReference() {
        #expect(
            invalidFieldName(parseError(payload(setting: "metadata", to: ["reference": "not valid!"])))
                == "metadata.reference")
    }

    @Test(
        arguments: [
            ("1.234", .tooManyDecimals), ("0", .notPositive), ("-5.00", .notPositive), ("ten", .notANumber),
            ("99999999999999999999", .outOfRange),
        ] as [(String, MoneyError)])
    func invalidAmount(text: String, error: MoneyError) {
        #expect(parseError(payload(setting: "amount_pkr", to: text)) == .invalidAmount(field: "amount_pkr", error))
    }

    @Test func amountAsNumberIsAnInvalidField() {
        #expect(invalidFieldName(parseError(payload(setting: "amount_pkr", to: 1000.5))) == "amount_pkr")
        #expect(invalidFieldName(parseError(payload(setting: "amount_pkr", to: 1000))) == "amount_pkr")
    }

    @Test func wronglyTypedFieldsAreInvalidFields() {
        #expect(invalidFieldName(parseError(payload(setting: "status", to: true))) == "status")
        #expect(invalidFieldName(parseError(payload(setting: "metadata", to: "burn:job-7"))) == "metadata")
        #expect(invalidFieldName(parseError(payload(setting: "metadata", to: ["reference": 7]))) == "metadata.reference")
    }

    @Test(arguments: [
        json("not json"), json(""), json("[]"), json("\"a string\""), json("{\"account\": "), json("null"),
        [0xff, 0xfe, 0x7b, 0x7d], [0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d],
    ])
    func nonJSONIsInvalidJSON(body: [UInt8]) {
        #expect(isInvalidJSON(parseError(body)), "got \(String(describing: parseError(body)))")
    }
}

@Suite struct WebhookEventEncodeTests {
    private static let samples = [
        ProviderTransaction(
            providerTxID: "TX-abc", account: "PK00DEMO", direction: .credit, amountPaisa: 1,
            status: .settled, occurredAtMicros: 0, memo: ""),
        ProviderTransaction(
            providerTxID: "TX-def:1", account: "acct_2", direction: .debit,
            amountPaisa: 922_337_203_685_477, status: .pending, occurredAtMicros: 1_764_158_400_123_456,
            memo: "payout \"quoted\" / slashes \\ and ünïcødé ✓\n", reference: "job-9"),
        ProviderTransaction(
            providerTxID: "t", account: "a", direction: .debit, amountPaisa: 100_050,
            status: .failed, occurredAtMicros: 4_102_444_799_999_999,
            memo: String(repeating: "é", count: 500)),
    ]

    @Test(arguments: samples)
    func encodeThenParseRoundTrips(tx: ProviderTransaction) throws {
        #expect(try WebhookEvent.parse(WebhookEvent.encode(tx)) == tx)
    }

    @Test func encodesTheDocumentedShape() throws {
        let object = try JSONSerialization.jsonObject(with: Data(WebhookEvent.encode(Self.samples[1]))) as? [String: Any]
        let fields = try #require(object)
        #expect(fields["type"] as? String == "wallet.debit")
        #expect(fields["amount_pkr"] as? String == "9223372036854.77")
        #expect(fields["occurred_at"] as? String == "2025-11-26T12:00:00.123456Z")
        #expect((fields["metadata"] as? [String: Any])?["reference"] as? String == "job-9")
    }
}
