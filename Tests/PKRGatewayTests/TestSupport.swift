import AsyncHTTPClient
import Foundation
import GRDB
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PKRCore
import PostgresNIO
import ServiceLifecycle
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

/// Any well-formed token works: CSRF is a double-submit check of header against cookie.
let testCSRFToken = String(repeating: "t", count: 64)
let devSecret = try! WebhookSecret(encoded: DevKeys.webhookSecret)

/// A fresh directory for one test's files, inside this test process's own directory. Names stay short: a PostgreSQL
/// cluster keeps its Unix socket in one (`OutageTests`), and a socket path has at most 107 bytes.
func temporaryDirectory() throws -> URL {
    let url = testRunDirectory.appendingPathComponent(String(testDirectoryCount.add(1, ordering: .relaxed).newValue))
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
    return url
}

private let testDirectoryCount = Atomic<Int>(0)

/// Every test's databases and logs live under one directory per test process, removed when the process exits
/// normally (not after a crash or a kill), so that test runs do not pile databases up in the system's temporary
/// directory. `PKR_TEST_KEEP_FILES=1` keeps them for a look after the run.
private let testRunDirectory: URL = {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("pkr-tests-\(getpid())-\(Crypto.hex(Crypto.randomBytes(3)))")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    if ProcessInfo.processInfo.environment["PKR_TEST_KEEP_FILES"] != "1" {
        atexit { try? FileManager.default.removeItem(at: testRunDirectory) }
    }
    return url
}()

/// The engines every contract test runs against. PostgreSQL joins when scripts/test has started a cluster.
enum TestEngine: String, CaseIterable, Sendable {
    case sqlite
    case postgres

    static var postgresPort: String { ProcessInfo.processInfo.environment["PKR_TEST_POSTGRES_PORT"] ?? "55432" }
    static var postgresAvailable: Bool { ProcessInfo.processInfo.environment["PKR_TEST_POSTGRES"] == "1" }
    static var all: [TestEngine] { postgresAvailable ? [.sqlite, .postgres] : [.sqlite] }
}

/// A config on a fresh database (a new SQLite file, or a new PostgreSQL database), poll-only and quiet unless a
/// test says otherwise. `sharing` reuses another config's database, as a second instance would.
func testConfig(
    engine: TestEngine = .sqlite, _ overrides: [String: String] = [:],
    sharing: GatewayConfig? = nil
) async throws -> GatewayConfig {
    var env = [
        "PORT": "0",
        "PKR_WEBHOOK_PUSH": "0",
        "PKR_RECONCILE_INTERVAL_S": "0",
        "PKR_INVARIANT_CHECK_INTERVAL_S": "0",
        "PKR_DEMO_SEED_ON_START": "0",
        // The suite shares two cores with provider processes and the simulation; a test about timeouts sets its own.
        "PKR_PROVIDER_TIMEOUT_MS": "30000",
    ]
    switch engine {
    case .sqlite:
        env["SQLITE_PATH"] = try sharing?.sqlitePath ?? temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
    case .postgres:
        env["DB_ENGINE"] = "postgres"
        env["POSTGRES_HOST"] = "127.0.0.1"
        env["POSTGRES_PORT"] = TestEngine.postgresPort
        env["POSTGRES_USER"] = "pkr_demo"
        env["POSTGRES_PASSWORD"] = "pkr_demo"
        if let sharing {
            env["POSTGRES_DB"] = sharing.postgres.database
        } else {
            env["POSTGRES_DB"] = try await createPostgresDatabase()
        }
    }
    env.merge(overrides) { _, new in new }
    return try GatewayConfig(values: env)
}

/// A new, empty database on the test cluster, so each test starts from nothing. Its name carries the hour it was
/// made in; the first one a test process makes drops those of earlier runs older than two hours, so a long-lived
/// cluster does not fill up with them (`scripts/test` throws its cluster away anyway).
func createPostgresDatabase() async throws -> String {
    let hour = SystemClock().nowMicros() / Timestamp.microsPerSecond / 3600
    let name = "pkr_t_\(hour)_" + Crypto.hex(Crypto.randomBytes(8))
    let configuration = PostgresConnection.Configuration(
        host: "127.0.0.1", port: Int(TestEngine.postgresPort) ?? 55432,
        username: "pkr_demo", password: "pkr_demo", database: "pkr_demo",
        tls: .disable)
    let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: testLogger())
    do {
        if staleTestDatabasesDropped.exchange(true, ordering: .relaxed) == false {
            try await dropTestDatabases(before: hour - 2, connection)
        }
        try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: testLogger())
        try await connection.close()
    } catch {
        try? await connection.close()
        throw error
    }
    return name
}

private let staleTestDatabasesDropped = Atomic<Bool>(false)

/// Drops the test databases made before `hour` (and those named before names carried an hour). A database still
/// in use is left for a later run.
private func dropTestDatabases(before hour: Int64, _ connection: PostgresConnection) async throws {
    // All names are read before the first drop: the connection runs one query at a time.
    var names: [String] = []
    for try await name in try await connection.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pkr\\_t\\_%'",
        logger: testLogger()
    ).decode(String.self) {
        names.append(name)
    }
    for name in names {
        let parts = name.split(separator: "_")
        let madeInHour = parts.count == 4 ? Int64(parts[2]) : nil
        guard madeInHour.map({ $0 < hour }) ?? true,
            name.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 122) })
        else { continue }
        _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name)"), logger: testLogger())
    }
}

func testLogger() -> Logger {
    var logger = Logger(label: "pkr-test")
    logger.logLevel = .critical
    return logger
}

/// Builds the application exactly as `pkr serve` does and runs `body` against it.
func withApp<T: Sendable>(
    _ config: GatewayConfig, _ setup: TestingSetup = .router,
    _ body: @Sendable (any TestClientProtocol, Gateway) async throws -> T
) async throws -> T {
    let built = try await buildApplication(config: config, logger: testLogger())
    return try await built.application.test(setup) { client in try await body(client, built.gateway) }
}

/// Runs the application as `pkr serve` does, on the configured port (live tests force port 0 instead).
func withRunningServer<T: Sendable>(_ config: GatewayConfig, _ body: @Sendable (Gateway) async throws -> T) async throws -> T {
    let built = try await buildApplication(config: config, logger: testLogger())
    let serviceGroup = ServiceGroup(configuration: .init(services: [built.application], logger: testLogger()))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await serviceGroup.run() }
        let up = try await eventually {
            var request = HTTPClientRequest(url: "http://\(config.host):\(config.port)/api/health")
            request.method = .GET
            return (try? await HTTPClient.shared.execute(request, timeout: .seconds(1)).status.code) == 200
        }
        guard up else {
            await serviceGroup.triggerGracefulShutdown()
            throw POSIXError(.ECONNREFUSED)
        }
        do {
            let value = try await body(built.gateway)
            await serviceGroup.triggerGracefulShutdown()
            try await group.waitForAll()
            return value
        } catch {
            await serviceGroup.triggerGracefulShutdown()
            throw error
        }
    }
}

struct JSONResult: @unchecked Sendable {
    var status: HTTPResponse.Status
    var headers: HTTPFields
    var json: Any?
    var text: String

    var object: [String: Any] { json as? [String: Any] ?? [:] }
    var array: [[String: Any]] { json as? [[String: Any]] ?? [] }
    subscript(key: String) -> Any? { object[key] }
    func string(_ key: String) -> String? { object[key] as? String }
    var error: String? { string("error") }
}

extension TestClientProtocol {
    /// Sends a request the way a browser session would: with the CSRF cookie and header unless told not to.
    func call(
        _ method: HTTPRequest.Method, _ uri: String, json body: String? = nil, headers extra: HTTPFields = [:],
        csrf: Bool = true
    ) async throws -> JSONResult {
        var headers = extra
        if csrf {
            headers[.cookie] = "csrftoken=\(testCSRFToken)"
            headers[HTTPField.Name("X-CSRFToken")!] = testCSRFToken
        }
        if body != nil { headers[.contentType] = "application/json" }
        return try await execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { response in
            let text = String(buffer: response.body)
            return JSONResult(
                status: response.status, headers: response.headers,
                json: try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]),
                text: text)
        }
    }

    /// Posts a webhook body signed with `secret` (the dev secret by default) at `timestampSeconds` (now by default).
    func webhook(
        _ body: [UInt8], secret: WebhookSecret = devSecret, id: String? = nil, timestampSeconds: Int64? = nil,
        path: String = "/api/webhooks/wallet", extraHeaders: HTTPFields = [:]
    ) async throws -> JSONResult {
        let signed = WebhookSender.sign(
            body: body, secret: secret, id: id,
            timestampSeconds: timestampSeconds ?? SystemClock().nowMicros() / 1_000_000)
        var headers = extraHeaders
        for (name, value) in signed.headers { headers[HTTPField.Name(name)!] = value }
        headers[.contentType] = "application/json"
        return try await execute(uri: path, method: .post, headers: headers, body: ByteBuffer(bytes: body)) { response in
            let text = String(buffer: response.body)
            return JSONResult(
                status: response.status, headers: response.headers,
                json: try? JSONSerialization.jsonObject(with: Data(text.utf8)), text: text)
        }
    }

    func seed() async throws -> String {
        let result = try await call(.post, "/api/demo/seed")
        return try #require(result.string("user_id"))
    }

    func balanceUnits() async throws -> String? {
        try await call(.get, "/api/balance").string("token_balance_units")
    }
}

func creditEvent(
    _ providerTxID: String = Identifiers.providerTxID(unixMillis: SystemClock().nowMicros() / 1000), amountPKR: String = "1000.00",
    account: String = "WALLET-001",
    direction: TransactionDirection = .credit, status: TransactionStatus = .settled, reference: String? = nil
) -> [UInt8] {
    let paisa = try! Money.parsePaisa(amountPKR)
    return WebhookEvent.encode(
        ProviderTransaction(
            providerTxID: providerTxID, account: account, direction: direction,
            amountPaisa: paisa, status: status,
            occurredAtMicros: SystemClock().nowMicros(), memo: "test", reference: reference))
}

/// Polls until `condition` holds or the deadline passes; returns whether it held.
func eventually(timeoutSeconds: Double = 10, _ condition: @Sendable () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeoutSeconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(25))
    }
    return try await condition()
}

/// Runs raw SQL against whichever database the gateway uses, as an attacker with database access would.
func executeRawSQL(_ gateway: Gateway, _ sql: String) async throws {
    switch gateway.store {
    case let sqlite as SQLiteStore:
        try await sqlite.database.write { db in try db.execute(sql: sql) }
    case let postgres as PostgresStore:
        try await postgres.client.query(PostgresQuery(unsafeSQL: sql), logger: testLogger())
    default:
        Issue.record("unknown store \(type(of: gateway.store))")
    }
}

@Suite("Test environment")
struct TestEnvironmentTests {
    @Test("CI runs the PostgreSQL half of the contract suite, never skips it")
    func postgresInCI() {
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            #expect(TestEngine.postgresAvailable, "scripts/test must start PostgreSQL and set PKR_TEST_POSTGRES=1")
        }
    }
}

extension Gateway {
    /// The provider stub this gateway runs in-process (demo mode without `PKR_PROVIDER_URL`): a test plays the
    /// provider through it, as a customer paying in or a bank settling would.
    var stub: any WalletStubStore { localProvider!.store }
    var stubOutbox: any OutboxStore { localProvider!.outbox }
}

/// The provider's interface straight onto the stub's store, with no wire: for the deterministic simulation, which
/// injects its own faults at this interface. Everything else reaches the provider over HTTP.
struct DirectProvider: WalletProvider {
    let store: any WalletStubStore

    func openAccount(_ accountNo: String) async throws { try await store.openAccount(accountNo) }

    func deposit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction {
        try await store.credit(account: account, amountPaisa: amountPaisa, memo: memo)
    }

    func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage {
        try await store.transactions(sinceMicros: sinceMicros, after: cursor, limit: limit)
    }

    func payout(_ request: PayoutRequest) async throws -> Payout { try await store.payout(request).payout }

    func payout(reference: String) async throws -> Payout? { try await store.payout(reference: reference) }

    func reservePaisa() async throws -> Int64 { try await store.reservePaisa() }
}

/// The provider key production-mode tests use on both sides.
let testProviderAPIKey = "pk_test_provider_key_0123456789"

/// Runs a provider service (`pkr provider serve`'s parts) in this process on its own SQLite file and a free port,
/// and `body` with its base URL.
func withProviderService<T: Sendable>(
    _ overrides: [String: String] = [:], logger: Logger = testLogger(),
    _ body: @Sendable (ProviderService, String) async throws -> T
) async throws -> T {
    let directory = try temporaryDirectory()
    var env = [
        "PROVIDER_PORT": "0", "SQLITE_PATH": directory.appendingPathComponent("provider.sqlite3").path,
        "PROVIDER_API_KEY": testProviderAPIKey, "PKR_WEBHOOK_PUSH": "0",
    ]
    env.merge(overrides) { _, new in new }
    let provider = try await buildProviderService(config: try GatewayConfig(values: env), logger: logger)
    let value = try await withServices(provider.services, logger: logger) { try await body(provider, try await provider.baseURL()) }
    // The provider's database pool lives until its services have stopped.
    withExtendedLifetime(provider) {}
    return value
}

/// One provider service for the whole test process, started on first use and never stopped: production-mode
/// gateways reach it over HTTP as they would a real provider.
enum SharedTestProvider {
    private static let started = Task<String, any Error> {
        let directory = try temporaryDirectory()
        let provider = try await buildProviderService(
            config: try GatewayConfig(values: [
                "PROVIDER_PORT": "0", "SQLITE_PATH": directory.appendingPathComponent("provider.sqlite3").path,
                "PROVIDER_API_KEY": testProviderAPIKey, "PKR_WEBHOOK_PUSH": "0",
            ]), logger: testLogger())
        let group = ServiceGroup(configuration: .init(services: provider.services, logger: testLogger()))
        Task.detached {
            try await group.run()
            withExtendedLifetime(provider) {}
        }
        return try await provider.baseURL()
    }

    static func url() async throws -> String { try await started.value }
}
