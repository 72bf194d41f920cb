import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import PKRCore
import Synchronization
import Testing

@testable import PKRApplication
@testable import PKRGateway
@testable import PKRHTTP

/// The samples of a Prometheus text exposition, keyed by name and sorted labels: `name{a="1",b="2"}`.
/// (scripts/operator-test also parses it with the Prometheus client library's own parser.)
func prometheusSamples(_ text: String) -> [String: String] {
    var samples: [String: String] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " ") else { continue }
        samples[String(line[..<space])] = String(line[line.index(after: space)...])
    }
    return samples
}

@Suite("Operators: metrics, logs, retention")
struct OperatorTests {
    @Test("the metrics count what the database holds", arguments: TestEngine.all)
    func metricsAgreeWithTheDatabase(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await client.seed()
            let first = Identifiers.providerTxID(unixMillis: SystemClock().nowMicros() / 1000)
            #expect(try await client.webhook(creditEvent(first, amountPKR: "1000.00")).status == .ok)
            #expect(try await client.webhook(creditEvent(amountPKR: "250.50")).status == .ok)
            #expect(try await client.webhook(creditEvent(first, amountPKR: "1000.00")).status == .ok)  // a redelivery
            #expect(try await client.webhook(creditEvent(first, amountPKR: "999.00")).status == .conflict)
            #expect(try await client.webhook(creditEvent(), secret: WebhookSecret.generate()).status == .unauthorized)
            _ = try await gateway.stub.credit(account: Demo.walletAccount, amountPaisa: 5_000, memo: "lost webhook")
            _ = try await gateway.reconcileOnce()
            let redeem = try await client.call(
                .post, "/api/redeem", json: #"{"amount_units": "200000000", "memo": "out"}"#,
                headers: [HTTPField.Name("Idempotency-Key")!: "metrics-1"])
            #expect(redeem.status == .created)
            _ = try await client.call(.get, "/api/webhooks/deliveries/424242")
            let summary = try await client.call(.get, "/api/debug/summary")
            let chainJobs = try #require(summary["chain_jobs"] as? [String: Any])

            let scrape = try await client.call(.get, "/metrics")
            #expect(scrape.status == .ok)
            #expect(scrape.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
            let samples = prometheusSamples(scrape.text)
            #expect(samples["pkr_minted_units_total"] == chainJobs["mints_units"] as? String)
            #expect(samples["pkr_redeemed_units_total"] == chainJobs["burns_units"] as? String)
            #expect(samples["pkr_releases_total"] == "0")
            #expect(samples[#"pkr_mints_total{via="webhook"}"#] == "2")
            #expect(samples[#"pkr_mints_total{via="poll"}"#] == "1")
            #expect(samples["pkr_redeems_total"] == "1")
            #expect(samples[#"pkr_webhook_deliveries_total{outcome="minted",reason=""}"#] == "2")
            #expect(samples[#"pkr_webhook_deliveries_total{outcome="duplicate",reason=""}"#] == "1")
            #expect(samples[#"pkr_webhook_deliveries_total{outcome="conflict",reason=""}"#] == "1")
            #expect(samples[#"pkr_webhook_deliveries_total{outcome="rejected",reason="signature_mismatch"}"#] == "1")
            #expect(samples["pkr_quarantine_entries"].flatMap(Double.init) == 1)
            #expect(samples["pkr_store_available"].flatMap(Double.init) == 1)
            #expect(samples[#"pkr_reconcile_runs_total{result="ok"}"#] == "1")
            #expect(samples["pkr_reconcile_healed_total"] == "1")
            #expect(samples["pkr_reconcile_last_success_timestamp_seconds"].flatMap(Double.init).map { $0 > 0 } == true)
            #expect(samples["pkr_webhook_mint_lag_seconds_count"] == "2")
            #expect(samples[#"pkr_invariant_ok{check="every_settled_credit_minted_once"}"#].flatMap(Double.init) == 1)
            // Routes are named by their template, never by the raw path.
            #expect(samples[#"pkr_http_requests_total{method="POST",route="/api/webhooks/wallet",status="200"}"#] == "3")
            #expect(samples[#"pkr_http_requests_total{method="GET",route="/api/webhooks/deliveries/{id}",status="404"}"#] == "1")
            #expect(!scrape.text.contains("424242"))
            #expect(samples[#"pkr_http_request_duration_seconds_count{method="POST",route="/api/redeem"}"#] == "1")
        }
    }

    @Test("the server runs every check on its own schedule, so pkr_invariant_ok needs no one to ask for a summary")
    func invariantChecksRunOnSchedule() async throws {
        try await withApp(try await testConfig(["PKR_INVARIANT_CHECK_INTERVAL_S": "1"])) { client, _ in
            _ = try await client.seed()
            let exported = try await eventually(timeoutSeconds: 10) {
                let samples = prometheusSamples(try await client.call(.get, "/metrics").text)
                return samples.keys.filter { $0.hasPrefix("pkr_invariant_ok{") }.count == InvariantCheckTests.recentCheckNames.count
                    && samples.filter { $0.key.hasPrefix("pkr_invariant_ok{") }.allSatisfy { Double($0.value) == 1 }
            }
            #expect(exported, "every check exported as 1 without a summary being asked for")
        }
    }

    @Test("outside demo mode /metrics needs the operator token")
    func metricsNeedTheOperatorToken() async throws {
        try await withApp(try await ProductionModeTests.productionConfig()) { client, _ in
            let anonymous = try await client.call(.get, "/metrics", csrf: false)
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.error == "unauthorized")
            let scraped = try await client.call(
                .get, "/metrics", headers: [.authorization: "Bearer \(ProductionModeTests.adminToken)"], csrf: false)
            #expect(scraped.status == .ok)
            #expect(scraped.text.contains("pkr_store_available 1"))
        }
    }

    @Test("every answer carries a request id: the client's when it is sane, else a new one")
    func requestIDs() async throws {
        try await withApp(try await testConfig()) { client, _ in
            let given = try await client.call(.get, "/api/health", headers: [HTTPField.Name("X-Request-Id")!: "trace-abc.123"])
            #expect(given.headers[HTTPField.Name("X-Request-Id")!] == "trace-abc.123")
            let hostile = try await client.call(
                .get, "/api/health", headers: [HTTPField.Name("X-Request-Id")!: String(repeating: "x", count: 200)])
            let made = try #require(hostile.headers[HTTPField.Name("X-Request-Id")!])
            #expect(made.count == 32 && made.allSatisfy(\.isHexDigit))
            let error = try await client.call(.post, "/api/redeem", json: "{", csrf: false)
            #expect(error.status == .forbidden)
            #expect(error.headers[HTTPField.Name("X-Request-Id")!]?.count == 32)
        }
    }

    @Test("JSON logs: one object a line, an access line per request, no secret, token or webhook body")
    func jsonLogs() async throws {
        let lines = Mutex<[String]>([])
        let adminToken = ProductionModeTests.adminToken
        var logger = Logger(label: "pkr") { label in JSONLogHandler(label: label, write: { line in lines.withLock { $0.append(line) } }) }
        logger.logLevel = .trace
        let config = try await ProductionModeTests.productionConfig()
        let built = try await buildApplication(config: config, logger: logger)
        try await built.application.test(.router) { client in
            let auth: HTTPFields = [.authorization: "Bearer \(adminToken)", HTTPField.Name("X-Request-Id")!: "req-42"]
            #expect(try await client.call(.post, "/api/demo/seed", headers: auth, csrf: false).status != .internalServerError)
            _ = try await client.webhook(
                creditEvent(amountPKR: "12.34"), secret: ProductionModeTests.secret, extraHeaders: [.authorization: "Bearer \(adminToken)"])
            _ = try await client.webhook(Array(#"{"memo": "secret-body-marker"}"#.utf8), secret: ProductionModeTests.secret)
            _ = try await client.call(.get, "/api/debug/summary", headers: auth, csrf: false)
        }
        let written = lines.withLock { $0 }
        #expect(!written.isEmpty)
        var accessLines: [[String: Any]] = []
        for line in written {
            #expect(line.hasSuffix("\n") && line.dropLast().allSatisfy { $0 != "\n" })
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(object["time"] is String && object["level"] is String && object["message"] is String)
            if object["message"] as? String == "request" { accessLines.append(object) }
            #expect(!line.contains(adminToken))
            #expect(!line.contains(ProductionModeTests.secret.encoded))
            #expect(!line.contains("secret-body-marker"))
        }
        let summaryLine = try #require(accessLines.first { $0["route"] as? String == "/api/debug/summary" })
        #expect(summaryLine["method"] as? String == "GET")
        #expect(summaryLine["status"] as? String == "200")
        #expect(summaryLine["request_id"] as? String == "req-42")
        #expect((summaryLine["duration_ms"] as? String)?.contains(".") == true)
        #expect(accessLines.count == 4)
    }

    @Test("prune deletes only what is past the window; the books still balance; an old key is new again", arguments: TestEngine.all)
    func prune(engine: TestEngine) async throws {
        let now = SystemClock().nowMicros()
        let day = 86_400 * Timestamp.microsPerSecond
        let clock = SimClock(startMicros: now - 40 * day)
        let config = try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "1"])
        let built = try await buildApplication(config: config, clock: clock, logger: testLogger())
        // Live, so that the stub's dispatcher pushes to this server's own receiver.
        try await built.application.test(.live) { client in
            let gateway = built.gateway
            _ = try await client.seed()
            // Old traffic: three deposits pushed and delivered, a conflicting copy of one kept in quarantine, and a
            // keyed redeem whose payout is pushed too.
            var deposits: [ProviderTransaction] = []
            for _ in 0..<3 { deposits.append(try await gateway.demoCredit(amountPaisa: 100_000, memo: "old")) }
            #expect(try await eventually { try await gateway.deliveries(Page(limit: 10), state: "delivered").count == 3 })
            var altered = deposits[0]
            altered.amountPaisa += 100
            let oldSeconds = clock.nowMicros() / Timestamp.microsPerSecond
            #expect(try await client.webhook(WebhookEvent.encode(altered), timestampSeconds: oldSeconds).status == .conflict)
            let key: HTTPFields = [HTTPField.Name("Idempotency-Key")!: "old-key"]
            let redeemBody = #"{"amount_units": "100000000", "memo": "old"}"#
            let first = try await client.call(.post, "/api/redeem", json: redeemBody, headers: key)
            #expect(first.status == .created)
            #expect(try await client.call(.post, "/api/redeem", json: redeemBody, headers: key).string("job_id") == first.string("job_id"))
            #expect(try await eventually { try await gateway.deliveries(Page(limit: 10), state: "delivered").count == 4 })

            // Forty days later, with one recent deposit.
            clock.advance(byMicros: 40 * day)
            _ = try await gateway.demoCredit(amountPaisa: 500, memo: "recent")
            #expect(try await eventually { try await gateway.deliveries(Page(limit: 10), state: "delivered").count == 5 })
            var progressCalls = 0
            let result = try await gateway.prune(olderThanSeconds: 30 * 86_400, batchRows: 1) { _ in progressCalls += 1 }
            #expect(result.deliveries == 4)
            #expect(result.attempts == 4)
            #expect(result.inboundRows == 4)  // the conflict's row stays with its quarantine entry
            #expect(result.idempotencyRecords == 1)
            #expect(result.batches == progressCalls && result.batches >= 12)
            #expect(try await gateway.deliveries(Page(limit: 50), state: nil).count == 1)
            let inbound = try await gateway.inboundLog(Page(limit: 50))
            #expect(inbound.map(\.outcome).sorted() == ["conflict", "minted"])
            #expect(try await gateway.quarantine(Page(limit: 50)).count == 1)
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            #expect(try await gateway.verifyLedger().firstBreak == nil)

            // The key's record is gone: the same request is a new redeem.
            let again = try await client.call(.post, "/api/redeem", json: redeemBody, headers: key)
            #expect(again.status == .created)
            #expect(again.string("job_id") != first.string("job_id"))
            #expect(try await gateway.prune(olderThanSeconds: 30 * 86_400).rows == 0)
            #expect(try await gateway.reconciliation().ok)
        }
    }

    @Test("retention windows and log settings are validated")
    func settings() throws {
        #expect(RetentionWindow.seconds("30d") == Int64(2_592_000))
        #expect(RetentionWindow.seconds("90m") == Int64(5_400))
        #expect(RetentionWindow.seconds("3600s") == Int64(3_600))
        for bad in ["", "30", "d", "0d", "-1d", "59s", "30w", "99999999999d", "1.5h"] {
            #expect(RetentionWindow.seconds(bad) == nil, "\(bad)")
        }
        #expect(throws: ConfigError.self) { try GatewayConfig(values: ["LOG_FORMAT": "xml"]) }
        #expect(throws: ConfigError.self) { try GatewayConfig(values: ["LOG_LEVEL": "loud"]) }
        #expect(throws: ConfigError.self) { try GatewayConfig(values: ["PKR_PRUNE_OLDER_THAN": "soon"]) }
        let config = try GatewayConfig(values: ["LOG_FORMAT": "JSON", "LOG_LEVEL": "warning", "PKR_PRUNE_OLDER_THAN": "7d"])
        #expect(config.logFormat == .json)
        #expect(config.logLevel == .warning)
        #expect(config.pruneOlderThanSeconds == Int64(604_800))
    }
}
