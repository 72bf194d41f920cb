import AsyncHTTPClient
import Foundation
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

/// A PostgreSQL cluster of the test's own, so stopping it disturbs no other test.
struct PrivateCluster {
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/pg-cluster.sh").path
    }

    let directory: String
    let port: Int

    init() throws {
        directory = try temporaryDirectory().appendingPathComponent("pg").path
        port = try freeLoopbackPort()
    }

    /// Output goes to /dev/null: the server inherits the descriptors, so a pipe would never reach end-of-file.
    /// The child is reaped with waitpid directly: Foundation's own reaping was seen to miss it in this process.
    func run(_ command: String) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.script, command, directory, String(port)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var status: Int32 = 0
        for _ in 0..<1200 {
            let reaped = waitpid(process.processIdentifier, &status, WNOHANG)
            if reaped == process.processIdentifier {
                // WIFEXITED and WEXITSTATUS spelled out: the C macros are not imported.
                guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else { throw POSIXError(.EIO) }
                return
            }
            if reaped == -1, !process.isRunning {
                // Foundation reaped it first.
                guard process.terminationStatus == 0 else { throw POSIXError(.EIO) }
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw POSIXError(.ETIMEDOUT)
    }
}

@Suite("PostgreSQL outage", .serialized)
struct OutageTests {
    @Test(
        "PostgreSQL restarted under a running gateway: 503 during the outage, nothing lost, no restart needed",
        .enabled(if: TestEngine.postgresAvailable))
    func restartUnderLoad() async throws {
        let cluster = try PrivateCluster()
        try await cluster.run("start")
        let config = try GatewayConfig(values: [
            "DB_ENGINE": "postgres", "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": String(cluster.port),
            "POSTGRES_USER": "pkr_demo", "POSTGRES_PASSWORD": "pkr_demo", "POSTGRES_DB": "pkr_demo",
            "PORT": "0", "PKR_WEBHOOK_PUSH": "0", "PKR_RECONCILE_INTERVAL_S": "0", "PKR_DEMO_SEED_ON_START": "1",
        ])
        do {
            try await Self.scenario(config, cluster)
        } catch {
            try? await cluster.run("destroy")
            throw error
        }
        try await cluster.run("destroy")
    }

    static func scenario(_ config: GatewayConfig, _ cluster: PrivateCluster) async throws {
        try await withApp(config, .live) { client, gateway in
            let port = try #require(client.port)
            let url = "http://127.0.0.1:\(port)/api/webhooks/wallet"
            let credits = try await concurrently(6) { index in
                try await gateway.stub.credit(account: Demo.walletAccount, amountPaisa: 10_000 * Int64(index + 1), memo: "c\(index)")
            }.sorted { $0.amountPaisa < $1.amountPaisa }
            let acknowledged = try await WebhookSender.send(
                body: WebhookEvent.encode(credits[0]), secret: devSecret, url: url, retries: 0,
                nowSeconds: { SystemClock().nowMicros() / 1_000_000 })
            #expect(acknowledged.status == 200)

            try await cluster.run("stop")
            // Once the gateway has noticed (its probe runs every 250 ms), requests are refused at once.
            let availability = try #require((gateway.store as? PostgresStore)?.availability)
            let noticed = try await eventually { !availability.isReachable }
            #expect(noticed)
            let during = try await client.call(.get, "/api/balance")
            #expect(during.status == .serviceUnavailable, "requests are refused with 503 while the database is down")
            #expect(during.error == "store_unavailable")
            // The provider keeps sending; each webhook is refused (5xx) and retried by the sender.
            let sends = Task {
                try await concurrently(5) { index in
                    try await WebhookSender.send(
                        body: WebhookEvent.encode(credits[index + 1]), secret: devSecret, url: url, retries: 10,
                        nowSeconds: { SystemClock().nowMicros() / 1_000_000 })
                }
            }
            try await Task.sleep(for: .milliseconds(1500))
            try await cluster.run("start")
            let results = try await sends.value
            #expect(results.allSatisfy { $0.status == 200 }, "\(results.map(\.status))")
            #expect(results.allSatisfy { $0.attempts > 1 }, "every send was refused at least once")

            let balance = try await client.call(.get, "/api/balance")
            #expect(balance.status == .ok, "the same gateway serves again without a restart")
            #expect(balance.string("token_balance_units") == String(credits.reduce(0) { $0 + $1.amountPaisa } * 10_000))
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            #expect(report.snapshot.arrivals.webhookOnly == 6, "each credit recorded once, the acknowledged one included")
        }
    }
}
