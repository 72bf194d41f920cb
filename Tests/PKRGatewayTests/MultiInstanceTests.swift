import AsyncHTTPClient
import Foundation
import NIOCore
import PKRCore
import Synchronization
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
///
/// Its output goes to a file of its own, never to the test process's descriptors: a child that outlived a failed
/// run would otherwise hold the runner's pipe open. It is stopped on `stop()` or, at the latest, when this object
/// goes away, and reaped with waitpid (Foundation's own reaping was seen to miss exits).
final class ServerProcess: @unchecked Sendable {
    let port: Int
    let healthPath: String
    let logURL: URL
    private let process = Process()
    private let stopped = Mutex(false)

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
        env["PKR_PROVIDER_TIMEOUT_MS"] = String(config.providerTimeoutMillis)
        env["DB_ENGINE"] = config.databaseEngine.rawValue
        env["SQLITE_PATH"] = config.sqlitePath
        env["POSTGRES_HOST"] = config.postgres.host
        env["POSTGRES_PORT"] = String(config.postgres.port)
        env["POSTGRES_USER"] = config.postgres.user
        env["POSTGRES_PASSWORD"] = config.postgres.password
        env["POSTGRES_DB"] = config.postgres.database
        env["LOG_LEVEL"] = "error"
        env.merge(extra) { _, new in new }
        logURL = try temporaryDirectory().appendingPathComponent(provider ? "provider.log" : "gateway.log")
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        defer { try? log.close() }
        process.executableURL = Self.binary
        process.arguments = provider ? ["provider", "serve"] : ["serve"]
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    deinit { stop() }

    func waitUntilUp() async throws -> Bool {
        try await eventually(timeoutSeconds: 20) {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(self.port)\(self.healthPath)")
            request.method = .GET
            return (try? await HTTPClient.shared.execute(request, timeout: .seconds(1)).status.code) == 200
        }
    }

    /// What the child wrote (errors only), for a failure's message.
    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL if it has not exited within ten seconds; idempotent.
    func stop() {
        let alreadyStopped = stopped.withLock { value in
            let was = value
            value = true
            return was
        }
        guard !alreadyStopped else { return }
        let pid = process.processIdentifier
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for attempt in 0..<400 {
            let reaped = waitpid(pid, &status, WNOHANG)
            // Reaped here, or already reaped by Foundation (ECHILD).
            if reaped == pid || (reaped == -1 && !process.isRunning) { return }
            if attempt == 200 { kill(pid, SIGKILL) }
            usleep(50_000)
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
        #expect(try await provider.waitUntilUp(), "\(provider.log)")
        config.providerURL = "http://127.0.0.1:\(provider.port)"
        let gateway = try await buildGateway(config: config, logger: testLogger())
        _ = try await gateway.seedDemo()
        let instances = try (0..<2).map { _ in
            try ServerProcess(config: config, extra: ["PKR_WEBHOOK_PUSH": "0", "PKR_RECONCILE_INTERVAL_S": "0"])
        }
        defer { instances.forEach { $0.stop() } }
        for instance in instances { #expect(try await instance.waitUntilUp(), "\(instance.log)") }
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
