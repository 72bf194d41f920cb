import Foundation
import Hummingbird
import Logging
import PKRApplication
import PKRCore
import PKRHTTP
import PKRPostgres
import PKRSQLite
import ProviderClient
import ServiceLifecycle
import Synchronization
import WalletStub

/// The provider stub's store, outbox and controls on its own connections: on SQLite a pool of its own on
/// `PROVIDER_SQLITE_PATH` (the gateway's file by default), on PostgreSQL the given pool or a new one. Its
/// transactions are never the gateway's.
func openProviderStore(
    config: GatewayConfig, clock: any GatewayClock, logger: Logger, postgres: PostgresStore?
) async throws -> (store: any WalletStubStore, outbox: any OutboxStore, signal: WakeSignal, pool: PostgresStore?) {
    let signal = WakeSignal()
    let nowMicros: @Sendable () -> Int64 = { clock.nowMicros() }
    let onOutboxWrite: @Sendable () -> Void = { signal.signal() }
    switch config.databaseEngine {
    case .sqlite:
        let pool = try SQLiteStore.openProviderDatabase(path: config.providerServer.sqlitePath ?? config.sqlitePath)
        return (
            SQLiteWalletStub(database: pool, pushEnabled: config.webhookPush, nowMicros: nowMicros, onOutboxWrite: onOutboxWrite),
            SQLiteWebhookOutbox(database: pool), signal, nil
        )
    case .postgres:
        let pg: PostgresStore
        if let postgres {
            pg = postgres
        } else {
            pg = try await PostgresStore.connect(settings: config.postgres, limits: config.limits, nowMicros: nowMicros, logger: logger)
            try await pg.migrate()
        }
        return (
            PostgresWalletStub(
                client: pg.client, availability: pg.availability, pushEnabled: config.webhookPush, nowMicros: nowMicros,
                logger: logger, onOutboxWrite: onOutboxWrite),
            PostgresWebhookOutbox(client: pg.client, availability: pg.availability, logger: logger), signal, pg
        )
    }
}

/// Where a listener ended up: known only once it runs (port 0), awaited by the clients that call it.
final class BoundAddress: Sendable {
    private let url = Mutex<String?>(nil)

    func set(_ value: String) { url.withLock { $0 = value } }

    /// The base URL once the listener is up; a listener that never comes up is reported as an unavailable provider.
    func wait(timeoutMillis: Int64 = 10_000) async throws -> String {
        let deadline = ContinuousClock.now + .milliseconds(timeoutMillis)
        while ContinuousClock.now < deadline {
            if let value = url.withLock({ $0 }) { return value }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw ProviderError.unavailable("the provider's listener did not start")
    }

    /// `http://host:port` of a channel's local address, loopback for a wildcard.
    static func baseURL(ip: String, port: Int) -> String {
        let host = ip == "0.0.0.0" ? "127.0.0.1" : (ip == "::" ? "[::1]" : (ip.contains(":") ? "[\(ip)]" : ip))
        return "http://\(host):\(port)"
    }
}

/// The provider's listener: its `/v1` API on `host:port`, reporting the address it bound to.
func providerListener(
    routes: ProviderRoutes, host: String, port: Int, bound: BoundAddress, logger: Logger
) -> some Service {
    Application(
        router: ProviderRouter.build(routes: routes),
        configuration: .init(address: .hostname(host, port: port), serverName: "pkr-provider"),
        onServerRunning: { channel in
            guard let address = channel.localAddress, let ip = address.ipAddress, let port = address.port else { return }
            bound.set(BoundAddress.baseURL(ip: ip, port: port))
        },
        logger: logger)
}

/// The wallet provider stub as its own service (`pkr provider serve`): its listener and its webhook dispatcher, with
/// its store, outbox and controls for whoever runs it in-process (tests).
public struct ProviderService: Sendable {
    public let services: [any Service]
    public let store: any WalletStubStore
    public let outbox: any OutboxStore
    public let controls: ProviderControls
    let bound: BoundAddress
    /// The PostgreSQL pool it opened for itself, kept open as long as the service is.
    let pool: PostgresStore?

    /// `http://host:port` once the listener is up.
    public func baseURL() async throws -> String { try await bound.wait() }
}

public func buildProviderService(config: GatewayConfig, clock: any GatewayClock = SystemClock(), logger: Logger) async throws
    -> ProviderService
{
    try config.validateForProviderServing()
    let (store, outbox, signal, pool) = try await openProviderStore(config: config, clock: clock, logger: logger, postgres: nil)
    let controls = ProviderControls()
    if config.demoMode { try await store.openAccount(Demo.walletAccount) }
    let routes = ProviderRoutes(store: store, apiKey: config.providerServer.apiKey, controls: config.demoMode ? controls : nil)
    let bound = BoundAddress()
    var services: [any Service] = [
        providerListener(routes: routes, host: config.providerServer.host, port: config.providerServer.port, bound: bound, logger: logger)
    ]
    if config.webhookPush {
        let target = config.providerServer.webhookURL ?? config.providerServer.defaultWebhookURL
        services.append(
            WebhookDispatcher(
                outbox: outbox, signal: signal, secret: config.providerWebhookSecrets[0],
                scheduleMillis: config.webhookRetryScheduleMillis, clock: clock,
                transport: HTTPWebhookTransport(timeoutMillis: config.webhookTimeoutMillis, target: { target }),
                paused: { controls.webhooksPaused }, logger: logger))
    }
    return ProviderService(services: services, store: store, outbox: outbox, controls: controls, bound: bound, pool: pool)
}

/// The gateway's provider: the configured one over HTTP, or in demo mode without `PKR_PROVIDER_URL` the stub run
/// in this process on a loopback port of its own, still reached over HTTP.
func makeProvider(
    config: GatewayConfig, clock: any GatewayClock, logger: Logger, postgres: PostgresStore?
) async throws -> (any WalletProvider, LocalProvider?) {
    var local: LocalProvider?
    let baseURL: @Sendable () async throws -> String
    if let url = config.providerURL {
        baseURL = { url }
    } else {
        precondition(config.demoMode || config.providerURL != nil, "outside demo mode the provider is configured")
        // Shares the gateway's PostgreSQL pool (never its transactions), which the gateway keeps open.
        let (store, outbox, signal, _) = try await openProviderStore(config: config, clock: clock, logger: logger, postgres: postgres)
        let controls = ProviderControls()
        let bound = BoundAddress()
        let routes = ProviderRoutes(store: store, apiKey: config.providerAPIKey, controls: controls)
        local = LocalProvider(
            store: store, outbox: outbox, controls: controls, dispatchSignal: signal,
            listener: providerListener(routes: routes, host: "127.0.0.1", port: 0, bound: bound, logger: logger))
        baseURL = { try await bound.wait() }
    }
    var settings = HTTPWalletProvider.Settings(baseURL: baseURL, apiKey: config.providerAPIKey)
    settings.timeoutMillis = config.providerTimeoutMillis
    let provider = HTTPWalletProvider(settings: settings, nowMicros: { clock.nowMicros() }, logger: logger)
    return (provider, local)
}

/// Runs `body` with the in-process provider's listener up, for commands that use a gateway outside `pkr serve`.
public func withLocalProvider<T: Sendable>(_ gateway: Gateway, _ body: @Sendable () async throws -> T) async throws -> T {
    guard let listener = gateway.localProvider?.listener else { return try await body() }
    return try await withServices([listener], logger: gateway.logger, body)
}

/// Runs `body` while `services` run, then shuts them down gracefully, whether `body` returned or threw.
public func withServices<T: Sendable>(
    _ services: [any Service], logger: Logger, _ body: @Sendable () async throws -> T
) async throws -> T {
    let group = ServiceGroup(configuration: .init(services: services, logger: logger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let value = try await body()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return value
        } catch {
            await group.triggerGracefulShutdown()
            try? await tasks.waitForAll()
            throw error
        }
    }
}
