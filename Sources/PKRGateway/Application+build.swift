import Foundation
import Hummingbird
import Logging
import NIOCore
import PKRApplication
import PKRCore
import PKRHTTP
import PKRPostgres
import PKRSQLite
import Prometheus
import ServiceLifecycle
import Synchronization
import WalletStub

public typealias GatewayApplication = Application<RouterResponder<AppRequestContext>>

/// What the composition root builds: the application to run and the gateway behind it (for tests and tools).
public struct BuiltApplication: Sendable {
    public let application: GatewayApplication
    public let gateway: Gateway
    /// What `/metrics` exposes.
    public let metrics: PrometheusCollectorRegistry
}

/// Opens and migrates the store and wires the gateway's parts together. Used by every command.
public func buildGateway(
    config: GatewayConfig, clock: any GatewayClock = SystemClock(), metrics: GatewayMetrics = GatewayMetrics(),
    logger: Logger = Logger(label: "pkr")
) async throws -> Gateway {
    let signal = WakeSignal()
    let nowMicros: @Sendable () -> Int64 = { clock.nowMicros() }
    let onOutboxWrite: @Sendable () -> Void = { signal.signal() }
    let store: any GatewayStore
    let walletStub: any WalletStubStore
    let outbox: any OutboxStore
    switch config.databaseEngine {
    case .sqlite:
        let sqlite = try SQLiteStore(path: config.sqlitePath, limits: config.limits, nowMicros: nowMicros)
        store = sqlite
        walletStub = SQLiteWalletStub(
            database: sqlite.database, transactions: sqlite.sharedTransactions,
            pushEnabled: config.webhookPush, nowMicros: nowMicros, onOutboxWrite: onOutboxWrite)
        outbox = SQLiteWebhookOutbox(database: sqlite.database)
    case .postgres:
        let postgres = try await PostgresStore.connect(
            settings: config.postgres, limits: config.limits, nowMicros: nowMicros,
            logger: logger)
        store = postgres
        walletStub = PostgresWalletStub(
            client: postgres.client, availability: postgres.availability,
            pushEnabled: config.webhookPush, nowMicros: nowMicros, logger: logger,
            onOutboxWrite: onOutboxWrite)
        outbox = PostgresWebhookOutbox(client: postgres.client, availability: postgres.availability, logger: logger)
    }
    try await store.migrate()
    return Gateway(
        config: config, store: store, provider: walletStub, walletStub: walletStub, outbox: outbox, clock: clock,
        metrics: metrics, logger: logger, dispatchSignal: signal)
}

/// The one composition root: router, middleware and background services, used by `pkr serve` and the tests.
public func buildApplication(
    config: GatewayConfig, clock: any GatewayClock = SystemClock(),
    logger: Logger = Logger(label: "pkr")
) async throws -> BuiltApplication {
    try config.validateForServing()
    // One registry per application, so that two in one process (the tests) count apart.
    let registry = PrometheusCollectorRegistry()
    let metrics = config.metricsEnabled ? GatewayMetrics(factory: PrometheusMetricsFactory.gateway(registry)) : GatewayMetrics()
    let gateway = try await buildGateway(config: config, clock: clock, metrics: metrics, logger: logger)
    if config.demoMode && config.seedDemoOnStart {
        _ = try await gateway.seedDemo()
    }
    let router = GatewayRouter.build(gateway: gateway, metrics: config.metricsEnabled ? registry : nil)

    // The bound address is known only once the server runs (port 0 in tests); the dispatcher reads it then.
    let ownHost = config.host == "0.0.0.0" || config.host == "::" ? "127.0.0.1" : config.host
    let ownBaseURL = Mutex<String>("http://\(ownHost):\(config.port)")
    var services: [any Service] = []
    if config.webhookPush {
        let configuredURL = config.webhookURL
        services.append(
            WebhookDispatcher(
                outbox: gateway.outbox, signal: gateway.dispatchSignal, secret: config.webhookSecrets[0],
                scheduleMillis: config.webhookRetryScheduleMillis, clock: clock,
                transport: HTTPWebhookTransport(
                    timeoutMillis: config.webhookTimeoutMillis,
                    target: { configuredURL ?? ownBaseURL.withLock { $0 } + "/api/webhooks/wallet" }),
                logger: logger))
    }
    if config.reconcileIntervalSeconds > 0 {
        services.append(
            PeriodicService.reconciler(gateway: gateway, intervalSeconds: config.reconcileIntervalSeconds, logger: logger))
    }
    if config.invariantCheckIntervalSeconds > 0 {
        services.append(
            PeriodicService.invariantChecks(gateway: gateway, intervalSeconds: config.invariantCheckIntervalSeconds, logger: logger))
    }
    if let olderThanSeconds = config.pruneOlderThanSeconds {
        services.append(
            PeriodicService.retention(
                gateway: gateway, olderThanSeconds: olderThanSeconds, intervalSeconds: config.pruneIntervalSeconds, logger: logger))
    }
    let application = Application(
        router: router,
        server: .http1(configuration: .init(idleTimeout: .seconds(config.idleTimeoutSeconds))),
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "pkr"),
        services: services,
        onServerRunning: { channel in
            guard let address = channel.localAddress, let ip = address.ipAddress, let port = address.port else { return }
            let host = ip == "0.0.0.0" ? "127.0.0.1" : (ip == "::" ? "[::1]" : (ip.contains(":") ? "[\(ip)]" : ip))
            ownBaseURL.withLock { $0 = "http://\(host):\(port)" }
        },
        logger: logger)
    return BuiltApplication(application: application, gateway: gateway, metrics: registry)
}
