import AsyncHTTPClient
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import PKRCore
import Testing

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite
@testable import WalletStub

/// A tiny cookie-keeping client over AsyncHTTPClient, like curl with `-c cookies.txt -b cookies.txt`.
final class CookieClient: @unchecked Sendable {
    let base: String
    private var cookies: [String: String] = [:]

    init(port: Int) { base = "http://127.0.0.1:\(port)" }

    func send(_ method: HTTPMethod, _ path: String, json: String? = nil, headers extra: [(String, String)] = []) async throws -> JSONResult
    {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if !cookies.isEmpty {
            request.headers.add(name: "cookie", value: cookies.map { "\($0.key)=\($0.value)" }.joined(separator: "; "))
        }
        if let token = cookies["csrftoken"] { request.headers.add(name: "X-CSRFToken", value: token) }
        if let json {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: json))
        }
        for (name, value) in extra { request.headers.add(name: name, value: value) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        for header in response.headers["set-cookie"] {
            let pair = header.split(separator: ";")[0].split(separator: "=", maxSplits: 1)
            if pair.count == 2 { cookies[String(pair[0])] = String(pair[1]) }
        }
        let text = String(buffer: try await response.body.collect(upTo: 1 << 22))
        var fields = HTTPFields()
        for header in response.headers {
            if let name = HTTPField.Name(header.name) { fields.append(HTTPField(name: name, value: header.value)) }
        }
        return JSONResult(
            status: .init(code: Int(response.status.code)), headers: fields,
            json: try? JSONSerialization.jsonObject(with: Data(text.utf8)), text: text)
    }
}

@Suite("Live server over real HTTP", .serialized)
struct LiveServerTests {
    @Test("the seed walkthrough over HTTP with a cookie jar, and the seed's queries through the sqlite3 CLI", arguments: TestEngine.all)
    func walkthroughOverHTTP(engine: TestEngine) async throws {
        let config = try await testConfig(engine: engine)
        let key = UUID().uuidString
        try await withApp(config, .live) { client, _ in
            let http = CookieClient(port: try #require(client.port))
            #expect(try await http.send(.GET, "/api/health").text == #"{"ok": true}"#)
            _ = try await http.send(.GET, "/api/csrf")
            #expect(try await http.send(.POST, "/api/demo/seed").string("wallet_account") == "WALLET-001")
            #expect(
                try await http.send(.POST, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00","memo":"Deposit #1"}"#).status
                    == .created)
            let ingest = try await http.send(.POST, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            #expect(ingest["ingested"] as? Int == 1 && ingest["minted"] as? Int == 1)
            #expect(try await http.send(.GET, "/api/balance").string("token_balance_units") == "1000000000")
            let keyHeader = [("Idempotency-Key", key)]
            let first = try await http.send(
                .POST, "/api/redeem", json: #"{"amount_units":"200000000","memo":"cash-out"}"#, headers: keyHeader)
            let again = try await http.send(
                .POST, "/api/redeem", json: #"{"amount_units":"200000000","memo":"cash-out"}"#, headers: keyHeader)
            #expect(first.status == .created && again.status == .created)
            #expect(first.string("job_id") == again.string("job_id"))
            #expect(try await http.send(.GET, "/api/balance").string("token_balance_units") == "800000000")
            let summary = try await http.send(.GET, "/api/debug/summary")
            #expect((summary["balances"] as? [String: Any])?["match"] as? Bool == true)
        }
        // The seed README's inspection queries, verbatim, through the sqlite3 or psql command-line tool.
        let output = try runInspectionQueries(config, engine: engine)
        #expect(output == SeedQueries.expectedAfterWalkthrough(key: key))
    }

    @Test("with push on, a deposit is minted by its webhook with no ingest call", arguments: TestEngine.all)
    func pushMints(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "1"]), .live) { client, gateway in
            let http = CookieClient(port: try #require(client.port))
            _ = try await http.send(.GET, "/api/csrf")
            _ = try await http.send(.POST, "/api/demo/seed")
            let credit = try await http.send(.POST, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00","memo":"Deposit #1"}"#)
            #expect(credit.status == .created)
            let minted = try await eventually {
                try await http.send(.GET, "/api/balance").string("token_balance_units") == "1000000000"
            }
            #expect(minted)
            let inbound = try await http.send(.GET, "/api/webhooks/inbound").array
            #expect(inbound.first?["outcome"] as? String == "minted")
            #expect(inbound.first?["provider_tx_id"] as? String == credit.string("provider_tx_id"))
            // The seed's step 3 now finds nothing new.
            let ingest = try await http.send(.POST, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            #expect(ingest["ingested"] as? Int == 0 && ingest["minted"] as? Int == 0)
            // The redeem's payout comes back as a debit webhook and confirms the burn.
            let redeem = try await http.send(
                .POST, "/api/redeem", json: #"{"amount_units":"200000000"}"#, headers: [("Idempotency-Key", "k")])
            #expect(redeem.status == .created)
            let confirmed = try await eventually { try await gateway.reconciliation().snapshot.burnsAwaitingDebit.isEmpty }
            #expect(confirmed)
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            // The stub records a delivery after the gateway's answer, so the burn can be confirmed a moment before.
            let delivered = try await eventually {
                let deliveries = try await http.send(.GET, "/api/webhooks/deliveries").array
                return deliveries.count == 2 && deliveries.allSatisfy { $0["state"] as? String == "delivered" }
            }
            #expect(delivered)
        }
    }

    @Test("a push made while the gateway is down is retried and minted once it is back", arguments: TestEngine.all)
    func retriesUntilGatewayIsBack(engine: TestEngine) async throws {
        let gatewayPort = try freeLoopbackPort()
        // The provider side pushes to a port where nothing listens yet.
        let provider = try await testConfig(
            engine: engine,
            [
                "PKR_WEBHOOK_PUSH": "1", "PKR_WEBHOOK_URL": "http://127.0.0.1:\(gatewayPort)/api/webhooks/wallet",
                "PKR_WEBHOOK_RETRY_SCHEDULE_MS": "100,200,300,400,500,600,700,800,900,1000",
            ])
        try await withApp(provider, .live) { client, gateway in
            _ = try await gateway.seedDemo()
            let tx = try await gateway.demoCredit(amountPaisa: 50_000, memo: "while down")
            let failedOnce = try await eventually {
                (try await gateway.stubOutbox.list(limit: 1, beforeID: nil, state: nil).first?.attempts ?? 0) >= 2
            }
            #expect(failedOnce, "the first attempts fail while the gateway is down")
            #expect(try await gateway.store.tokenBalanceUnits(customerID: try await gateway.currentCustomer().id) == 0)

            // The gateway comes up on the target port, sharing the database, and the next retry lands.
            let receiver = try await testConfig(engine: engine, ["PORT": "\(gatewayPort)"], sharing: provider)
            try await withRunningServer(receiver) { _ in
                let minted = try await eventually {
                    try await gateway.store.tokenBalanceUnits(customerID: try await gateway.currentCustomer().id) == 500_000_000
                }
                #expect(minted)
            }
            let settled = try await eventually { try await gateway.stubOutbox.list(limit: 1, beforeID: nil, state: "delivered").count == 1 }
            #expect(settled, "the dispatcher records the delivery once the gateway acknowledged it")
            let delivery = try #require(try await gateway.stubOutbox.list(limit: 1, beforeID: nil, state: nil).first)
            #expect(delivery.state == "delivered")
            #expect(delivery.provider_tx_id == tx.providerTxID)
            let attempts = try #require(try await gateway.stubOutbox.attempts(deliveryID: delivery.id))
            #expect(attempts.count >= 3)
            #expect(attempts.last?.http_status == 200)
            #expect(attempts.dropLast().allSatisfy { $0.http_status == nil })
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
        }
    }

    @Test("a delivery that never succeeds is parked as dead, and an operator can redeliver it", arguments: TestEngine.all)
    func deadAndRedeliver(engine: TestEngine) async throws {
        let config = try await testConfig(
            engine: engine,
            [
                "PKR_WEBHOOK_PUSH": "1", "PKR_WEBHOOK_URL": "http://127.0.0.1:\(try freeLoopbackPort())/nowhere",
                "PKR_WEBHOOK_RETRY_SCHEDULE_MS": "20,20",
            ])
        try await withApp(config, .live) { client, gateway in
            let http = CookieClient(port: try #require(client.port))
            _ = try await http.send(.GET, "/api/csrf")
            _ = try await http.send(.POST, "/api/demo/seed")
            _ = try await http.send(.POST, "/api/demo/wallet/credit", json: #"{"amount_pkr":"7.00"}"#)
            let dead = try await eventually { try await http.send(.GET, "/api/webhooks/deliveries?state=dead").array.count == 1 }
            #expect(dead)
            let delivery = try #require(try await http.send(.GET, "/api/webhooks/deliveries").array.first)
            #expect(delivery["attempts"] as? Int == 3, "one attempt and two retries")
            let id = try #require(delivery["id"] as? Int)
            let detail = try await http.send(.GET, "/api/webhooks/deliveries/\(id)")
            #expect((detail["attempts"] as? [[String: Any]])?.count == 3)
            let retry = try await http.send(.POST, "/api/webhooks/deliveries/\(id)/retry")
            #expect(retry.status == .accepted)
            #expect(try await http.send(.POST, "/api/webhooks/deliveries/999/retry").status == .notFound)
            #expect(try await http.send(.GET, "/api/webhooks/deliveries/9223372036854775807").status == .badRequest)
            #expect(try await http.send(.GET, "/api/webhooks/deliveries/abc").error == "invalid_field")
            let deadAgain = try await eventually {
                (try await gateway.stubOutbox.list(limit: 1, beforeID: nil, state: "dead").first?.attempts ?? 0) == 6
            }
            #expect(deadAgain, "a redelivery runs a fresh schedule")
        }
    }

    @Test("a round's attempts are recorded alike on both engines: delivered, retried, dead, and a late retry", arguments: TestEngine.all)
    func roundOfAttempts(engine: TestEngine) async throws {
        // Every push fails once and is retried an hour later, so the deliveries wait for this test to claim them.
        let config = try await testConfig(
            engine: engine,
            [
                "PKR_WEBHOOK_PUSH": "1", "PKR_WEBHOOK_URL": "http://127.0.0.1:\(try freeLoopbackPort())/nowhere",
                "PKR_WEBHOOK_RETRY_SCHEDULE_MS": "3600000,3600000",
            ])
        try await withApp(config, .live) { _, gateway in
            let outbox = gateway.stubOutbox
            _ = try await gateway.seedDemo()
            for amount: Int64 in [100, 200, 300] { _ = try await gateway.demoCredit(amountPaisa: amount, memo: "deposit") }
            let waiting = try await eventually {
                try await outbox.list(limit: 10, beforeID: nil, state: "pending").filter { $0.attempts == 1 }.count == 3
            }
            try #require(waiting)
            let now = gateway.clock.nowMicros()
            let hourMicros = 3_600 * Timestamp.microsPerSecond
            let claimed = try await outbox.claimDue(nowMicros: now + 2 * hourMicros, limit: 10).sorted { $0.id < $1.id }
            try #require(claimed.count == 3)
            let retryAt = now + 3 * hourMicros
            func attempt(_ delivery: OutboxDelivery, _ status: Int?, _ error: String?, _ outcome: AttemptOutcome) -> OutboxAttempt {
                OutboxAttempt(
                    delivery: delivery, httpStatus: status, error: error, durationMicros: 1_500, outcome: outcome,
                    finishedAtMicros: now + 1)
            }
            try await outbox.recordAttempts([
                attempt(claimed[0], 200, nil, .delivered), attempt(claimed[1], 503, "HTTP 503", .retry(atMicros: retryAt)),
                attempt(claimed[2], nil, "connection refused", .dead),
            ])
            // A retry recorded after the delivery ended (its lease ran out while it was sent) counts as an attempt and
            // moves nothing else.
            try await outbox.recordAttempts([attempt(claimed[0], 500, "HTTP 500", .retry(atMicros: retryAt))])

            let views = Dictionary(uniqueKeysWithValues: try await outbox.list(limit: 10, beforeID: nil, state: nil).map { ($0.id, $0) })
            let (delivered, retried, dead) = try (
                #require(views[claimed[0].id]), #require(views[claimed[1].id]), #require(views[claimed[2].id])
            )
            let at = Timestamp.format(micros: now + 1)
            #expect(delivered.state == "delivered" && delivered.attempts == 3 && delivered.delivered_at == at)
            #expect(delivered.last_http_status == 200 && delivered.last_error == nil && delivered.next_attempt_at == nil)
            #expect(retried.state == "pending" && retried.attempts == 2 && retried.delivered_at == nil)
            #expect(retried.last_http_status == 503 && retried.last_error == "HTTP 503")
            #expect(retried.next_attempt_at == Timestamp.format(micros: retryAt))
            #expect(dead.state == "dead" && dead.attempts == 2 && dead.last_http_status == nil && dead.last_error == "connection refused")

            let deliveredAttempts = try #require(try await outbox.attempts(deliveryID: claimed[0].id))
            #expect(deliveredAttempts.map(\.attempt_no) == [1, 2, 3])
            #expect(deliveredAttempts.dropFirst().map(\.http_status) == [200, 500])
            #expect(deliveredAttempts.dropFirst().map(\.error) == [nil, "HTTP 500"])
            #expect(deliveredAttempts.dropFirst().allSatisfy { $0.attempted_at == at && $0.duration_ms == "1.500" })
            // Redelivered by an operator, its next attempt is numbered after the late one. It is made due in two hours, so
            // that the running dispatcher leaves it to this test.
            #expect(try await outbox.redeliver(id: claimed[0].id, nowMicros: now + 2 * hourMicros))
            let again = try #require(
                try await outbox.claimDue(nowMicros: now + 2 * hourMicros, limit: 10).first { $0.id == claimed[0].id })
            try await outbox.recordAttempts([attempt(again, 200, nil, .delivered)])
            #expect(try await outbox.attempts(deliveryID: claimed[0].id)?.map(\.attempt_no) == [1, 2, 3, 4])
            let deadAttempts = try #require(try await outbox.attempts(deliveryID: claimed[2].id))
            #expect(deadAttempts.last?.attempt_no == 2 && deadAttempts.last?.http_status == nil)
            #expect(deadAttempts.last?.error == "connection refused")
        }
    }
}

/// Asks the kernel for a free loopback port, then releases it for the test to use.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}

func runInspectionQueries(_ config: GatewayConfig, engine: TestEngine) throws -> String {
    let sql = SeedQueries.all.joined(separator: "\n")
    switch engine {
    case .sqlite:
        // The test's server may still be closing its connections, and the last one to close holds the database
        // while it removes the WAL: the CLI waits for it instead of failing at once with "database is locked".
        return try runTool("/usr/bin/sqlite3", ["-cmd", ".timeout 5000", config.sqlitePath], input: sql)
    case .postgres:
        let p = config.postgres
        return try runTool(
            "/usr/bin/psql", ["-At", "-h", p.host, "-p", String(p.port), "-U", p.user, "-d", p.database],
            input: sql, environment: ["PGPASSWORD": p.password])
    }
}

func runTool(_ path: String, _ arguments: [String], input: String, environment: [String: String] = [:]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let stdin = Pipe()
    let output = Pipe()
    let errors = Pipe()
    process.standardInput = stdin
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try stdin.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    // A failure shows in the comparison the caller makes, with the tool's own words.
    let errorText = String(decoding: errorData, as: UTF8.self)
    return String(decoding: data, as: UTF8.self) + (errorText.isEmpty ? "" : "[stderr] " + errorText)
}
