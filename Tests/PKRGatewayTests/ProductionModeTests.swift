import Foundation
import HTTPTypes
import HummingbirdTesting
import Logging
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

/// Keeps every log line so a test can search them.
final class CapturedLogs: Sendable {
    let lines = Mutex<[String]>([])

    func handler(label: String) -> any LogHandler { CapturingHandler(logs: self) }

    struct CapturingHandler: LogHandler {
        let logs: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
            logs.lines.withLock { $0.append("\(event.level) \(event.message) \(merged)") }
        }
    }
}

@Suite("Production mode")
struct ProductionModeTests {
    static let secret = WebhookSecret.generate()
    static let adminToken = "admin-token-0123456789abcdef"

    static func productionConfig(_ extra: [String: String] = [:]) async throws -> GatewayConfig {
        var env = [
            "DEBUG": "0", "PKR_WEBHOOK_SECRETS": secret.encoded, "PKR_ADMIN_TOKEN": adminToken,
            "PKR_WEBHOOK_RATE_LIMIT_PER_S": "0", "PKR_PROVIDER_URL": try await SharedTestProvider.url(),
            "PKR_PROVIDER_API_KEY": testProviderAPIKey,
        ]
        env.merge(extra) { _, new in new }
        return try await testConfig(env)
    }

    @Test("the server refuses to start with the dev secret, a short secret, no admin token, or no provider")
    func refusesUnsafeStart() async throws {
        let url = try await SharedTestProvider.url()
        let safe = [
            "DEBUG": "0", "PKR_ADMIN_TOKEN": Self.adminToken, "PKR_WEBHOOK_SECRETS": Self.secret.encoded,
            "PKR_PROVIDER_URL": url, "PKR_PROVIDER_API_KEY": testProviderAPIKey,
        ]
        for missing in ["PKR_PROVIDER_URL", "PKR_PROVIDER_API_KEY"] {
            await #expect(throws: ConfigError.self, "without \(missing)") {
                _ = try await buildApplication(config: try await testConfig(safe.filter { $0.key != missing }), logger: testLogger())
            }
        }
        await #expect(throws: ConfigError.self) {
            _ = try await buildApplication(
                config: try await testConfig(["DEBUG": "0", "PKR_ADMIN_TOKEN": Self.adminToken]), logger: testLogger())
        }
        await #expect(throws: ConfigError.self) {
            _ = try await buildApplication(
                config: try await testConfig(["DEBUG": "0", "PKR_WEBHOOK_SECRETS": Self.secret.encoded]), logger: testLogger())
        }
        await #expect(throws: ConfigError.self) {
            _ = try await testConfig(["PKR_WEBHOOK_SECRETS": "whsec_" + Data(repeating: 7, count: 16).base64EncodedString()])
        }
    }

    @Test("demo endpoints are gone, operator endpoints need the bearer token, hosts are checked")
    func productionSurface() async throws {
        try await withApp(try await Self.productionConfig(), .live) { client, gateway in
            #expect(try await client.call(.post, "/api/demo/seed").status == .notFound)
            #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1.00"}"#).status == .notFound)
            _ = try await gateway.seedDemo()
            for (method, uri) in [
                (HTTPRequest.Method.get, "/api/debug/summary"), (.get, "/api/webhooks/inbound"),
                (.get, "/api/webhooks/deliveries"), (.get, "/api/webhooks/quarantine"),
                (.post, "/api/ingest/wallet-transactions"), (.post, "/api/mint"),
            ] {
                let denied = try await client.call(method, uri, json: method == .post ? "{}" : nil)
                #expect(denied.status == .unauthorized, "\(uri)")
                #expect(denied.error == "unauthorized", "\(uri)")
            }
            let bearer = HTTPFields([HTTPField(name: .authorization, value: "Bearer \(Self.adminToken)")])
            #expect(try await client.call(.get, "/api/debug/summary", headers: bearer, csrf: false).status == .ok)
            let ingest = try await client.call(.post, "/api/ingest/wallet-transactions", json: "{}", headers: bearer, csrf: false)
            #expect(ingest.status == .ok, "a bearer-token request needs no CSRF token")
            let wrong = HTTPFields([HTTPField(name: .authorization, value: "Bearer nope")])
            #expect(try await client.call(.get, "/api/debug/summary", headers: wrong).status == .unauthorized)
            // The receiver takes the production secret and not the dev one.
            #expect(try await client.webhook(creditEvent(), secret: devSecret).status == .unauthorized)
            #expect(try await client.webhook(creditEvent(), secret: Self.secret).status == .ok)
        }
    }

    @Test("ALLOWED_HOSTS is enforced outside demo mode")
    func allowedHosts() async throws {
        try await withApp(try await Self.productionConfig(["ALLOWED_HOSTS": "api.example"]), .live) { client, _ in
            let disallowed = try await client.call(.get, "/api/health")
            #expect(disallowed.status == .badRequest)
            #expect(disallowed.error == "disallowed_host")
        }
        try await withApp(try await Self.productionConfig(["ALLOWED_HOSTS": "api.example,localhost"]), .live) { client, _ in
            let health = try await client.call(.get, "/api/health")
            #expect(health.status == .ok)
        }
    }

    @Test("no secret, token or signature reaches the logs")
    func logsHoldNoSecrets() async throws {
        let logs = CapturedLogs()
        let logger = Logger(label: "pkr-test", factory: logs.handler)
        // The provider pushes to nowhere, so a delivery goes dead and is logged, by the provider's own logger.
        let signatures = try await withProviderService(
            [
                "PKR_WEBHOOK_PUSH": "1", "PROVIDER_WEBHOOK_URL": "http://127.0.0.1:\(try freeLoopbackPort())/x",
                "PKR_WEBHOOK_RETRY_SCHEDULE_MS": "10", "PROVIDER_WEBHOOK_SECRETS": Self.secret.encoded,
            ], logger: logger
        ) { provider, url in
            let config = try await Self.productionConfig(["PKR_PROVIDER_URL": url])
            let built = try await buildApplication(config: config, logger: logger)
            return try await built.application.test(.live) { client in
                var signatures: [String] = []
                _ = try await built.gateway.seedDemo()
                let bearer = HTTPFields([HTTPField(name: .authorization, value: "Bearer \(Self.adminToken)")])
                for secret in [Self.secret, devSecret, WebhookSecret.generate()] {
                    let body = creditEvent()
                    let signed = WebhookSender.sign(body: body, secret: secret, timestampSeconds: SystemClock().nowMicros() / 1_000_000)
                    signatures.append(String(signed.signature.dropFirst(3)))
                    _ = try await client.webhook(body, secret: secret, id: signed.id, timestampSeconds: signed.timestampSeconds)
                }
                _ = try await client.call(.get, "/api/debug/summary", headers: bearer, csrf: false)
                _ = try await client.call(
                    .get, "/api/debug/summary",
                    headers: HTTPFields([HTTPField(name: .authorization, value: "Bearer guess-\(Self.adminToken)")])
                )
                _ = try await built.gateway.demoCredit(amountPaisa: 100, memo: "pushed to nowhere")
                let dead = try await eventually { try await provider.outbox.countByState()["dead"] == 1 }
                #expect(dead)
                return signatures
            }
        }
        let text = logs.lines.withLock { $0.joined(separator: "\n") }
        #expect(!text.isEmpty, "the run did log")
        let secretText = String(Self.secret.encoded.dropFirst("whsec_".count))
        for forbidden in [secretText, String(DevKeys.webhookSecret.dropFirst("whsec_".count)), Self.adminToken] + signatures {
            #expect(!text.contains(forbidden))
        }
    }
}
