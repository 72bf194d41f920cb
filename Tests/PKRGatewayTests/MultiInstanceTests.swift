import AsyncHTTPClient
import Foundation
import NIOCore
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

/// A `pkr serve` (or `pkr provider serve`) child process on its own port.
final class ServerProcess: @unchecked Sendable {
    let port: Int
    let healthPath: String
    private let process = Process()

    static var binary: URL {
        // Tests/PKRGatewayTests/<file> → the package root → the debug build of the executable.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/pkr")
    }

    init(config: GatewayConfig, extra: [String: String], provider: Bool = false) throws {
        port = try freeLoopbackPort()
        healthPath = provider ? "/health" : "/api/health"
        var env = ProcessInfo.processInfo.environment
        env[provider ? "PROVIDER_PORT" : "PORT"] = String(port)
        if let url = config.providerURL {
            env["PKR_PROVIDER_URL"] = url
            env["PKR_PROVIDER_API_KEY"] = config.providerAPIKey
        }
        env["DB_ENGINE"] = config.databaseEngine.rawValue
        env["SQLITE_PATH"] = config.sqlitePath
        env["POSTGRES_HOST"] = config.postgres.host
        env["POSTGRES_PORT"] = String(config.postgres.port)
        env["POSTGRES_USER"] = config.postgres.user
        env["POSTGRES_PASSWORD"] = config.postgres.password
        env["POSTGRES_DB"] = config.postgres.database
        env["LOG_LEVEL"] = "error"
        env.merge(extra) { _, new in new }
        process.executableURL = Self.binary
        process.arguments = provider ? ["provider", "serve"] : ["serve"]
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    func waitUntilUp() async throws -> Bool {
        try await eventually(timeoutSeconds: 20) {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(self.port)\(self.healthPath)")
            request.method = .GET
            return (try? await HTTPClient.shared.execute(request, timeout: .seconds(1)).status.code) == 200
        }
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}

@Suite("Several gateway instances on one database", .serialized)
struct MultiInstanceTests {
    @Test(
        "two pkr serve processes share one pkr provider serve process, webhooks, ingests and redeems: no double mint, no lost update",
        arguments: TestEngine.all)
    func twoInstances(engine: TestEngine) async throws {
        #expect(FileManager.default.isExecutableFile(atPath: ServerProcess.binary.path), "build the pkr executable first")
        var config = try await testConfig(engine: engine)
        // The provider is a third process; this one is a customer paying in, the webhook wire, and the auditor.
        let provider = try ServerProcess(config: config, extra: ["PKR_WEBHOOK_PUSH": "0"], provider: true)
        defer { provider.stop() }
        #expect(try await provider.waitUntilUp())
        config.providerURL = "http://127.0.0.1:\(provider.port)"
        let gateway = try await buildGateway(config: config, logger: testLogger())
        _ = try await gateway.seedDemo()
        let instances = try (0..<2).map { _ in
            try ServerProcess(config: config, extra: ["PKR_WEBHOOK_PUSH": "0", "PKR_RECONCILE_INTERVAL_S": "0"])
        }
        defer { instances.forEach { $0.stop() } }
        for instance in instances { #expect(try await instance.waitUntilUp()) }
        let clients = instances.map { LoadClient(port: $0.port) }

        let credits = try await concurrently(40) { index in
            try await gateway.provider.deposit(account: Demo.walletAccount, amountPaisa: 100_000 + Int64(index), memo: "deposit \(index)")
        }
        let ingestBody = Array(#"{"since":"2025-01-01T00:00:00Z"}"#.utf8)
        // Every credit is delivered to both instances at once, half of them twice more; both instances ingest
        // throughout; and 30 redeems of 500 PKR are split across the two.
        let results = try await concurrently(credits.count * 2 + 20 + 30) { index -> Reply in
            switch index {
            case 0..<(credits.count * 2):
                let tx = credits[index / 2]
                return try await clients[index % 2].webhook(WebhookEvent.encode(tx), id: "msg_\(tx.providerTxID)")
            case (credits.count * 2)..<(credits.count * 2 + 20):
                return try await clients[index % 2].post("/api/ingest/wallet-transactions", body: ingestBody, headers: [])
            default:
                return try await clients[index % 2].post(
                    "/api/redeem", body: Array(#"{"amount_units":"500000000"}"#.utf8),
                    headers: [("Idempotency-Key", "multi-\(index)")])
            }
        }
        for client in clients { try await client.shutdown() }
        let unexpected = results.filter { ![200, 201].contains($0.status) && $0.error != "insufficient_balance" }
        #expect(unexpected.isEmpty, "\(unexpected.prefix(5))")

        _ = try await gateway.ingest(sinceMicros: 0)
        let report = try await gateway.reconciliation()
        #expect(report.ok, "\(report.text)")
        let depositedUnits = credits.reduce(Int64(0)) { $0 + $1.amountPaisa * Money.unitsPerPaisa }
        let redeemed = results.filter { $0.status == 201 }.count
        #expect(report.snapshot.mintedUnits == depositedUnits, "each of the 40 credits minted exactly once")
        #expect(report.snapshot.burnedUnits == Int64(redeemed) * 500_000_000)
        // No lost update: the chain stub saw every mint and burn.
        #expect(report.snapshot.chainStubUnits == depositedUnits - Int64(redeemed) * 500_000_000)
        #expect(report.snapshot.tokenBalanceUnits == report.snapshot.chainStubUnits)
    }
}
