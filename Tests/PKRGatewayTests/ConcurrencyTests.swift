import AsyncHTTPClient
import Foundation
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

/// The parts of a JSON answer the concurrency tests look at.
struct Reply: Sendable {
    var status: Int
    var error: String?
    var outcome: String?
    var jobID: String?
}

/// An HTTP client that really opens many connections at once.
final class LoadClient: Sendable {
    /// One for the whole test process and never shut down, like `HTTPClient.shared`: a client of its own per test
    /// would trap in its deinit (debug builds) whenever a test throws before shutting it down.
    private static let sharedClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    var client: HTTPClient { Self.sharedClient }
    let base: String

    init(port: Int) {
        base = "http://127.0.0.1:\(port)"
    }

    func post(_ path: String, body: [UInt8], headers: [(String, String)]) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "cookie", value: "csrftoken=\(testCSRFToken)")
        request.headers.add(name: "X-CSRFToken", value: testCSRFToken)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(30))
        let buffer = try await response.body.collect(upTo: 1 << 20)
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: buffer))) as? [String: Any] ?? [:]
        return Reply(
            status: Int(response.status.code), error: json["error"] as? String, outcome: json["outcome"] as? String,
            jobID: json["job_id"] as? String)
    }

    func webhook(_ body: [UInt8], id: String) async throws -> Reply {
        let signed = WebhookSender.sign(body: body, secret: devSecret, id: id, timestampSeconds: SystemClock().nowMicros() / 1_000_000)
        return try await post("/api/webhooks/wallet", body: body, headers: signed.headers)
    }
}

/// Runs `count` copies of `work` at once and collects their results.
func concurrently<T: Sendable>(_ count: Int, _ work: @escaping @Sendable (Int) async throws -> T) async throws -> [T] {
    try await withThrowingTaskGroup(of: T.self) { group in
        for index in 0..<count { group.addTask { try await work(index) } }
        var results: [T] = []
        for try await result in group { results.append(result) }
        return results
    }
}

func withLiveLoad(
    engine: TestEngine, _ overrides: [String: String] = [:],
    _ body: @Sendable (LoadClient, Gateway) async throws -> Void
) async throws {
    try await withApp(try await testConfig(engine: engine, overrides), .live) { client, gateway in
        _ = try await gateway.seedDemo()
        try await body(LoadClient(port: try #require(client.port)), gateway)
    }
}

@Suite("Exactly once under real concurrency", .serialized)
struct ConcurrencyTests {
    @Test("the same credit by webhook and by ingest at the same moment mints once", arguments: TestEngine.all)
    func webhookRacesIngest(engine: TestEngine) async throws {
        try await withLiveLoad(engine: engine) { load, gateway in
            for round in 0..<10 {
                let tx = try await gateway.demoCredit(amountPaisa: 1_000 + Int64(round), memo: "race \(round)")
                let results = try await concurrently(8) { index in
                    index % 2 == 0
                        ? try await load.webhook(WebhookEvent.encode(tx), id: "msg_race_\(round)").status
                        : try await load.post(
                            "/api/ingest/wallet-transactions", body: Array(#"{"since":"2025-01-01T00:00:00Z"}"#.utf8), headers: []
                        ).status
                }
                #expect(results.allSatisfy { $0 == 200 }, "\(results)")
            }
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            let expectedUnits: Int64 = (0..<10).map { (1_000 + Int64($0)) * 10_000 }.reduce(0, +)
            #expect(report.snapshot.mintedUnits == expectedUnits)
            #expect(report.snapshot.arrivals.both == 10, "each credit was seen by both paths")
        }
    }

    @Test("50 concurrent redeliveries of one webhook mint once", arguments: TestEngine.all)
    func concurrentRedeliveries(engine: TestEngine) async throws {
        try await withLiveLoad(engine: engine) { load, gateway in
            let tx = try await gateway.demoCredit(amountPaisa: 100_000, memo: "once")
            let outcomes = try await concurrently(50) { _ in try await load.webhook(WebhookEvent.encode(tx), id: "msg_once") }
            #expect(outcomes.allSatisfy { $0.status == 200 })
            #expect(outcomes.filter { $0.outcome == "minted" }.count == 1)
            #expect(outcomes.filter { $0.outcome == "duplicate" }.count == 49)
            let report = try await gateway.reconciliation()
            #expect(report.snapshot.mintedUnits == 1_000_000_000)
            #expect(report.ok, "\(report.text)")
        }
    }

    @Test("50 concurrent redeems against one balance never overdraw", arguments: TestEngine.all)
    func concurrentRedeems(engine: TestEngine) async throws {
        try await withLiveLoad(engine: engine) { load, gateway in
            let tx = try await gateway.demoCredit(amountPaisa: 1_000_000, memo: "10000 PKR")
            _ = try await gateway.ingest(sinceMicros: 0)
            // Each asks for 300 PKR of a 10,000 PKR balance: at most 33 can succeed.
            let results = try await concurrently(50) { index in
                try await load.post(
                    "/api/redeem", body: Array(#"{"amount_units":"300000000"}"#.utf8),
                    headers: [("Idempotency-Key", "redeem-\(index)")])
            }
            let succeeded = results.filter { $0.status == 201 }.count
            let failed = results.filter { $0.status != 201 }
            #expect(succeeded == 33)
            #expect(failed.allSatisfy { $0.status == 400 && $0.error == "insufficient_balance" })
            let user = try await gateway.currentCustomer()
            #expect(try await gateway.store.tokenBalanceUnits(customerID: user.id) == 10_000_000_000 - 33 * 300_000_000)
            let report = try await gateway.reconciliation()
            #expect(report.snapshot.burnedUnits == 33 * 300_000_000)
            #expect(report.ok, "\(report.text)")
            #expect(try await gateway.stub.balancePaisa(account: tx.account) == 1_000_000 - 33 * 30_000)
            // On PostgreSQL the holds went in shared statements, refusals included, and each was answered on its own.
            if let store = gateway.store as? PostgresStore {
                let batches = store.holdBatch.batchCount.load(ordering: .relaxed)
                #expect(batches < 50, "50 concurrent redeems took \(batches) hold batches")
            }
        }
    }

    @Test("50 concurrent redeems with one Idempotency-Key burn once", arguments: TestEngine.all)
    func concurrentSameKey(engine: TestEngine) async throws {
        try await withLiveLoad(engine: engine) { load, gateway in
            _ = try await gateway.demoCredit(amountPaisa: 100_000, memo: "1000 PKR")
            _ = try await gateway.ingest(sinceMicros: 0)
            let results = try await concurrently(50) { _ in
                try await load.post(
                    "/api/redeem", body: Array(#"{"amount_units":"200000000","memo":"once"}"#.utf8),
                    headers: [("Idempotency-Key", "the-one-key")])
            }
            let created = results.filter { $0.status == 201 }
            #expect(!created.isEmpty)
            #expect(Set(created.compactMap { $0.jobID }).count == 1, "every 201 is the same job")
            #expect(results.allSatisfy { $0.status == 201 || ($0.status == 409 && $0.error == "idempotency_request_in_flight") })
            let report = try await gateway.reconciliation()
            #expect(report.snapshot.burnedUnits == 200_000_000, "exactly one burn")
            #expect(report.ok, "\(report.text)")
        }
    }
}

@Suite("Lost webhooks heal through the fallback reconciler", .serialized)
struct LostWebhookTests {
    static let amountsPaisa: [Int64] = (1...20).map { Int64($0) * 12_345 }

    struct EndState: Equatable {
        var balanceUnits: Int64
        var mints: Int
        var ledgerEntries: Int
        var reserveUnits: Int128
    }

    static func endState(_ gateway: Gateway) async throws -> EndState {
        let report = try await gateway.reconciliation()
        let user = try await gateway.currentCustomer()
        let entries = try await gateway.store.ledgerEntries(customerID: nil, limit: 500, beforeID: nil)
        let mints = Set(entries.filter { $0.refType == .mint }.map(\.refID)).count
        return EndState(
            balanceUnits: try await gateway.store.tokenBalanceUnits(customerID: user.id), mints: mints,
            ledgerEntries: entries.count, reserveUnits: report.reserveUnits)
    }

    @Test(
        "N credits whose pushes fail are all minted once by one reconciler pass, as if every webhook had arrived", arguments: TestEngine.all
    )
    func reconcilerHeals(engine: TestEngine) async throws {
        // Reference run: every webhook arrives.
        let delivered = try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "1"]), .live) { _, gateway in
            _ = try await gateway.seedDemo()
            for amount in Self.amountsPaisa { _ = try await gateway.demoCredit(amountPaisa: amount, memo: "deposit") }
            let done = try await eventually { try await gateway.reconciliation().ok }
            #expect(done)
            return try await Self.endState(gateway)
        }
        // Lost run: the dispatcher can reach nobody.
        let lostConfig = try await testConfig(
            engine: engine,
            [
                "PKR_WEBHOOK_PUSH": "1", "PKR_WEBHOOK_URL": "http://127.0.0.1:\(try freeLoopbackPort())/gone",
                "PKR_WEBHOOK_RETRY_SCHEDULE_MS": "10",
            ])
        let healed = try await withApp(lostConfig, .live) { _, gateway in
            _ = try await gateway.seedDemo()
            for amount in Self.amountsPaisa { _ = try await gateway.demoCredit(amountPaisa: amount, memo: "deposit") }
            let allDead = try await eventually { try await gateway.stubOutbox.countByState()["dead"] == Self.amountsPaisa.count }
            #expect(allDead)
            let before = try await gateway.reconciliation()
            #expect(before.failed.map(\.name) == ["supply_equals_reserve"], "money without tokens until the reconciler runs")
            let pass = try await gateway.reconcileOnce()
            #expect(pass.minted == Self.amountsPaisa.count)
            #expect(try await gateway.reconcileOnce().minted == 0, "a second pass finds nothing new")
            let after = try await gateway.reconciliation()
            #expect(after.ok, "\(after.text)")
            #expect(after.snapshot.arrivals.pollOnly == Self.amountsPaisa.count)
            return try await Self.endState(gateway)
        }
        #expect(healed == delivered)
        #expect(healed.balanceUnits == Self.amountsPaisa.reduce(0, +) * 10_000)
    }

    @Test("the background reconciler heals lost webhooks on its own", arguments: TestEngine.all)
    func backgroundReconciler(engine: TestEngine) async throws {
        let config = try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "0", "PKR_RECONCILE_INTERVAL_S": "1"])
        try await withApp(config, .live) { _, gateway in
            _ = try await gateway.seedDemo()
            for amount in Self.amountsPaisa.prefix(5) { _ = try await gateway.demoCredit(amountPaisa: amount, memo: "deposit") }
            let healed = try await eventually(timeoutSeconds: 15) { try await gateway.reconciliation().ok }
            #expect(healed)
            let user = try await gateway.currentCustomer()
            #expect(try await gateway.store.tokenBalanceUnits(customerID: user.id) == Self.amountsPaisa.prefix(5).reduce(0, +) * 10_000)
        }
    }
}
