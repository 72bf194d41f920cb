import Foundation
import GRDB
import HTTPTypes
import HummingbirdTesting
import PKRCore
import PostgresNIO
import Testing

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite
@testable import WalletStub

@Suite("Webhook receiver through the router")
struct WebhookReceiverTests {
    @Test("a signed settled credit is recorded and minted in one step", arguments: TestEngine.all)
    func mintsSettledCredit(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            let result = try await client.webhook(creditEvent(amountPKR: "1000.00"))
            #expect(result.status == .ok, "\(result.text)")
            #expect(result.string("outcome") == "minted")
            #expect(result["duplicate"] as? Bool == false)
            #expect(result.string("amount_units") == "1000000000")
            #expect(try await client.balanceUnits() == "1000000000")
            // The bank alias is the same receiver.
            #expect(try await client.webhook(creditEvent(amountPKR: "1.00"), path: "/api/webhooks/bank").string("outcome") == "minted")
            #expect(try await client.balanceUnits() == "1001000000")
        }
    }

    @Test("the same webhook delivered 20 times mints once", arguments: TestEngine.all)
    func redeliveries(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            let body = creditEvent(amountPKR: "250.00")
            var outcomes: [String] = []
            for _ in 0..<20 {
                let result = try await client.webhook(body, id: "msg_same")
                #expect(result.status == .ok)
                outcomes.append(result.string("outcome") ?? "?")
            }
            #expect(outcomes.first == "minted")
            #expect(outcomes.dropFirst().allSatisfy { $0 == "duplicate" })
            #expect(try await client.balanceUnits() == "250000000")
            #expect(try await client.call(.get, "/api/webhooks/inbound?limit=500").array.count == 20)
        }
    }

    @Test("a redelivery with different content is a 409, quarantined, and mints nothing", arguments: TestEngine.all)
    func conflict(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await client.seed()
            // A real deposit at the (poll-only) stub, so the reserve backs what the webhook mints.
            let deposit = try await gateway.demoCredit(amountPaisa: 10_000, memo: "real")
            let txID = deposit.providerTxID
            #expect(try await client.webhook(WebhookEvent.encode(deposit)).string("outcome") == "minted")
            let conflicting = try await client.webhook(creditEvent(txID, amountPKR: "900.00", direction: .credit))
            #expect(conflicting.status == .conflict)
            #expect(conflicting.error == "webhook_conflict")
            #expect(conflicting["differing_fields"] as? [String] == ["amount_pkr"])
            let accountToo = try await client.webhook(creditEvent(txID, amountPKR: "900.00", account: "WALLET-002"))
            #expect(accountToo["differing_fields"] as? [String] == ["amount_pkr", "account"])
            #expect(try await client.balanceUnits() == "100000000")
            let quarantined = try await client.call(.get, "/api/webhooks/quarantine").array
            #expect(quarantined.count == 2)
            #expect(quarantined.allSatisfy { $0["provider_tx_id"] as? String == txID })
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
        }
    }

    @Test("stale, future, forged and unsigned deliveries are 401 and mint nothing", arguments: TestEngine.all)
    func rejectsUnauthentic(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            let now = SystemClock().nowMicros() / 1_000_000
            let stale = try await client.webhook(creditEvent(), timestampSeconds: now - 301)
            #expect(stale.status == .unauthorized)
            #expect(stale.error == "timestamp_too_old")
            #expect(try await client.webhook(creditEvent(), timestampSeconds: now + 400).error == "timestamp_too_new")
            let forged = try await client.webhook(creditEvent(), secret: WebhookSecret.generate())
            #expect(forged.status == .unauthorized)
            #expect(forged.error == "signature_mismatch")
            let unsigned = try await client.call(
                .post, "/api/webhooks/wallet", json: String(decoding: creditEvent(), as: UTF8.self), csrf: false)
            #expect(unsigned.status == .unauthorized)
            #expect(unsigned.error == "missing_signature_headers")
            var badHeader = HTTPFields()
            badHeader[HTTPField.Name("webhook-id")!] = "msg_1"
            badHeader[HTTPField.Name("webhook-timestamp")!] = "12.5"
            badHeader[HTTPField.Name("webhook-signature")!] = "v1,????"
            #expect(
                try await client.call(.post, "/api/webhooks/wallet", json: "{}", headers: badHeader, csrf: false).error
                    == "malformed_timestamp")
            #expect(try await client.balanceUnits() == "0")
            let log = try await client.call(.get, "/api/webhooks/inbound").array
            #expect(log.count == 5)
            #expect(
                Set(log.compactMap { $0["verification"] as? String }) == [
                    "timestamp_too_old", "timestamp_too_new", "signature_mismatch", "missing_signature_headers", "malformed_timestamp",
                ])
            #expect(log.allSatisfy { $0["outcome"] as? String == "rejected" })
        }
    }

    @Test("signed but malformed, invalid or oversized payloads get 400, 422 and 413", arguments: TestEngine.all)
    func rejectsBadPayloads(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            #expect(try await client.webhook(Array("not json".utf8)).error == "invalid_json")
            #expect(try await client.webhook([0xff, 0xfe, 0x00]).status == .badRequest)
            #expect(try await client.webhook(Array(#"{"provider_tx_id":"TX-1"}"#.utf8)).error == "missing_field")
            let badAmount = Array(
                #"{"provider_tx_id":"TX-1","account":"WALLET-001","direction":"credit","amount_pkr":"1.001","status":"settled","occurred_at":"2026-01-01T00:00:00Z"}"#
                    .utf8)
            let amount = try await client.webhook(badAmount)
            #expect(amount.status == .unprocessableContent)
            #expect(amount.error == "invalid_amount")
            let numeric = Array(
                #"{"provider_tx_id":"TX-1","account":"WALLET-001","direction":"credit","amount_pkr":1000,"status":"settled","occurred_at":"2026-01-01T00:00:00Z"}"#
                    .utf8)
            #expect(try await client.webhook(numeric).error == "invalid_field")
            // An account no customer is bound to is not an error: the credit is recorded, unminted, for an operator.
            let unbound = try await client.webhook(creditEvent(account: "WALLET-999"))
            #expect(unbound.status == .ok)
            #expect(unbound.string("outcome") == "recorded")
            #expect(unbound.string("note")?.contains("WALLET-999") == true)
            let huge = try await client.webhook(Array(repeating: UInt8(ascii: " "), count: 64 * 1024 + 1))
            #expect(huge.status == .contentTooLarge)
            #expect(huge.error == "payload_too_large")
            #expect(try await client.balanceUnits() == "0")
            let log = try await client.call(.get, "/api/webhooks/inbound").array
            #expect(log.count == 7, "every delivery is logged")
            #expect(log.filter { $0["outcome"] as? String == "rejected" }.count == 6)
            #expect(log.filter { $0["outcome"] as? String == "recorded" }.count == 1)
        }
    }

    @Test(
        "the inbound log keeps the body of a refused or quarantined delivery, and only the size of one the books hold",
        arguments: TestEngine.all)
    func inboundBodies(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await client.seed()
            let deposit = try await gateway.demoCredit(amountPaisa: 10_000, memo: "real")
            let minted = WebhookEvent.encode(deposit)
            let recorded = creditEvent(account: "WALLET-999")
            let refused = Array(
                #"{"provider_tx_id":"TX-1","account":"WALLET-001","direction":"credit","amount_pkr":1000,"status":"settled","occurred_at":"2026-01-01T00:00:00Z"}"#
                    .utf8)
            let forged = creditEvent()
            let conflicting = creditEvent(deposit.providerTxID, amountPKR: "900.00", direction: .credit)
            #expect(try await client.webhook(minted).string("outcome") == "minted")
            #expect(try await client.webhook(minted).string("outcome") == "duplicate")
            #expect(try await client.webhook(recorded).string("outcome") == "recorded")
            #expect(try await client.webhook(refused).status == .badRequest)
            #expect(try await client.webhook(forged, secret: WebhookSecret.generate()).status == .unauthorized)
            #expect(try await client.webhook(conflicting).status == .conflict)
            let rows = try await Self.inboundRows(gateway)
            #expect(rows.map(\.outcome) == ["minted", "duplicate", "recorded", "rejected", "rejected", "conflict"])
            let sent = [minted, minted, recorded, refused, forged, conflicting]
            for (row, body) in zip(rows, sent) {
                #expect(row.bodyBytes == body.count, "\(row.outcome): the size is always kept")
                // Only a delivery the books do not hold keeps its body.
                let kept = ["rejected", "conflict"].contains(row.outcome)
                #expect(row.body == (kept ? body : nil), "\(row.outcome)")
            }
            #expect(rows.filter { $0.body != nil }.count == 3)
        }
    }

    /// Every inbound-log row, oldest first, with the body as stored.
    static func inboundRows(_ gateway: Gateway) async throws -> [(outcome: String, bodyBytes: Int, body: [UInt8]?)] {
        switch gateway.store {
        case let sqlite as SQLiteStore:
            return try await sqlite.database.read { db in
                try Row.fetchAll(db, sql: "SELECT outcome, body_bytes, body FROM core_webhookinbound ORDER BY id").map { row in
                    (row[0], row[1], (row[2] as Data?).map { Array($0) })
                }
            }
        case let postgres as PostgresStore:
            var rows: [(outcome: String, bodyBytes: Int, body: [UInt8]?)] = []
            let query: PostgresQuery = "SELECT outcome, body_bytes, body FROM core_webhookinbound ORDER BY id"
            for try await (outcome, bodyBytes, body) in try await postgres.client.query(query, logger: testLogger())
                .decode((String, Int, ByteBuffer?).self)
            {
                rows.append((outcome, bodyBytes, body.map { Array($0.readableBytesView) }))
            }
            return rows
        default:
            Issue.record("unknown store \(type(of: gateway.store))")
            return []
        }
    }

    @Test("a pending credit mints only when it settles, once", arguments: TestEngine.all)
    func pendingThenSettled(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            let txID = Identifiers.providerTxID(unixMillis: SystemClock().nowMicros() / 1000)
            #expect(try await client.webhook(creditEvent(txID, status: .pending)).string("outcome") == "recorded")
            #expect(try await client.balanceUnits() == "0")
            #expect(try await client.webhook(creditEvent(txID, status: .settled)).string("outcome") == "minted")
            #expect(
                try await client.webhook(creditEvent(txID, status: .pending)).string("outcome") == "duplicate",
                "a late pending after settlement changes nothing")
            let reversal = try await client.webhook(creditEvent(txID, status: .failed))
            #expect(reversal.status == .conflict)
            #expect(reversal["differing_fields"] as? [String] == ["status"])
            #expect(try await client.balanceUnits() == "1000000000")
        }
    }

    @Test("a debit nobody asked for is recorded and flagged, never burned", arguments: TestEngine.all)
    func unmatchedDebit(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await client.seed()
            _ = try await client.webhook(creditEvent(amountPKR: "100.00"))
            let debit = try await client.webhook(creditEvent(amountPKR: "40.00", direction: .debit))
            #expect(debit.status == .ok)
            #expect(debit.string("outcome") == "recorded")
            #expect(try await client.balanceUnits() == "100000000")
            let report = try await gateway.reconciliation()
            #expect(report.failed.map(\.name).contains("no_unmatched_debits"))
            let external = try await client.call(.get, "/api/external-transactions").array
            #expect(external.first?["flag"] as? String == "unmatched_debit")
        }
    }

    @Test("several active secrets: any one verifies (rotation)", arguments: TestEngine.all)
    func rotation(engine: TestEngine) async throws {
        let old = WebhookSecret.generate()
        let new = WebhookSecret.generate()
        try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_SECRETS": "\(new.encoded) \(old.encoded)"])) { client, _ in
            _ = try await client.seed()
            #expect(try await client.webhook(creditEvent(), secret: old).status == .ok)
            #expect(try await client.webhook(creditEvent(), secret: new).status == .ok)
            #expect(try await client.webhook(creditEvent(), secret: devSecret).status == .unauthorized)
        }
    }

    @Test("legacy X-Signature is accepted only when its secret is configured", arguments: TestEngine.all)
    func legacy(engine: TestEngine) async throws {
        let legacySecret = "legacy-secret-0123456789"
        let body = creditEvent(amountPKR: "3.00")
        let signature = WebhookSigner.legacySignature(key: Array(legacySecret.utf8), body: body)
        let headers = HTTPFields([HTTPField(name: HTTPField.Name("X-Signature")!, value: signature)])
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            let off = try await client.call(
                .post, "/api/webhooks/wallet", json: String(decoding: body, as: UTF8.self), headers: headers, csrf: false)
            #expect(off.status == .unauthorized)
        }
        try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_LEGACY_SECRET": legacySecret])) { client, _ in
            _ = try await client.seed()
            let on = try await client.call(
                .post, "/api/webhooks/wallet", json: String(decoding: body, as: UTF8.self), headers: headers, csrf: false)
            #expect(on.status == .ok, "\(on.text)")
            var wrong = HTTPFields()
            wrong[HTTPField.Name("X-Signature")!] = String(repeating: "0", count: 64)
            #expect(
                try await client.call(.post, "/api/webhooks/wallet", json: "{}", headers: wrong, csrf: false).error == "signature_mismatch")
        }
    }

    @Test("the CIDR allowlist and the rate limit guard the receiver", arguments: TestEngine.all)
    func allowlistAndRateLimit(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_ALLOWED_CIDRS": "10.0.0.0/8"]), .live) { client, _ in
            _ = try await client.seed()
            #expect(try await client.webhook(creditEvent()).status == .forbidden)
        }
        try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_RATE_LIMIT_PER_S": "2"]), .live) { client, _ in
            _ = try await client.seed()
            // Ten at once from one address against a budget of two per second: the burst is cut.
            let load = LoadClient(port: try #require(client.port))
            let replies = try await concurrently(10) { _ in try await load.webhook(creditEvent(), id: Identifiers.webhookMessageID()) }
            #expect(replies.filter { $0.status == 200 }.count >= 1)
            #expect(replies.filter { $0.status == 429 }.count >= 5, "\(replies.map(\.status))")
            #expect(replies.filter { $0.status == 429 }.allSatisfy { $0.error == "rate_limited" })
        }
    }
}
