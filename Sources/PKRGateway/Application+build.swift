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

/// Opens and migrates the store and wires the gateway's parts together. Used by every command. In demo mode without
/// `PKR_PROVIDER_URL` the provider stub runs in this process behind its own loopback listener
/// (`gateway.localProvider`), which whoever uses the gateway runs (`buildApplication` does; commands use
/// `withLocalProvider`).
public func buildGateway(
    config: GatewayConfig, clock: any GatewayClock = SystemClock(), metrics: GatewayMetrics = GatewayMetrics(),
    logger: Logger = Logger(label: "pkr")
) async throws -> Gateway {
    let nowMicros: @Sendable () -> Int64 = { clock.nowMicros() }
    let store: any GatewayStore
    var postgres: PostgresStore?
    switch config.databaseEngine {
    case .sqlite:
        store = try SQLiteStore(path: config.sqlitePath, limits: config.limits, nowMicros: nowMicros)
    case .postgres:
        let pg = try await PostgresStore.connect(settings: config.postgres, limits: config.limits, nowMicros: nowMicros, logger: logger)
        store = pg
        postgres = pg
    }
    try await store.migrate()
    let (provider, local) = try await makeProvider(config: config, clock: clock, logger: logger, postgres: postgres)
    return Gateway(
        config: config, store: store, provider: provider, localProvider: local, clock: clock, metrics: metrics, logger: logger)
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
        if let local = gateway.localProvider {
            // The provider here is not listening yet: it opens its demo wallet itself, as a remote one does.
            try await local.store.openAccount(Demo.walletAccount)
            _ = try await gateway.bindDemoCustomer()
        } else {
            // A provider elsewhere may not be up yet; the customer is bound now and its wallet opened by the next
            // `POST /api/demo/seed` (a demo-mode provider opens the demo wallet itself anyway).
            _ = try await gateway.bindDemoCustomer()
            do {
                try await gateway.provider.openAccount(Demo.walletAccount)
            } catch {
                logger.warning("the provider did not answer at start-up; the demo wallet is opened on the next POST /api/demo/seed")
            }
        }
    }
    let router = GatewayRouter.build(gateway: gateway, metrics: config.metricsEnabled ? registry : nil)

    // The bound address is known only once the server runs (port 0 in tests); the dispatcher reads it then.
    let ownHost = config.host == "0.0.0.0" || config.host == "::" ? "127.0.0.1" : config.host
    let ownBaseURL = Mutex<String>("http://\(ownHost):\(config.port)")
    var services: [any Service] = []
    if let local = gateway.localProvider {
        services.append(local.listener)
        if config.webhookPush {
            let configuredURL = config.webhookURL
            services.append(
                WebhookDispatcher(
                    outbox: local.outbox, signal: local.dispatchSignal, secret: config.webhookSecrets[0],
                    scheduleMillis: config.webhookRetryScheduleMillis, clock: clock,
                    transport: HTTPWebhookTransport(
                        timeoutMillis: config.webhookTimeoutMillis,
                        target: { configuredURL ?? ownBaseURL.withLock { $0 } + "/api/webhooks/wallet" }),
                    paused: { local.controls.webhooksPaused }, logger: logger))
        }
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
            ownBaseURL.withLock { $0 = BoundAddress.baseURL(ip: ip, port: port) }
        },
        logger: logger)
    return BuiltApplication(application: application, gateway: gateway, metrics: registry)
}
