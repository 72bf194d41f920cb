import Hummingbird
import PKRApplication
import PKRCore
import Prometheus

/// The gateway's HTTP face: middleware in order (request id, metrics and access log; errors as JSON; allowed hosts
/// outside demo mode; CSRF) and every route. Routes call the gateway's use cases only.
public enum GatewayRouter {
    /// `metrics`: where `/metrics` reads from and HTTP requests are counted; the same registry the gateway's
    /// metrics factory writes to. Without it there is no `/metrics` and nothing is counted.
    public static func build(gateway: Gateway, metrics: PrometheusCollectorRegistry?) -> Router<AppRequestContext> {
        let config = gateway.config
        let operatorAuth = OperatorAuth(demoMode: config.demoMode, adminToken: config.adminToken)
        let router = Router(context: AppRequestContext.self)
        router.add(middleware: ObservabilityMiddleware(metrics: metrics.map { HTTPMetrics(factory: PrometheusMetricsFactory.gateway($0)) }))
        router.add(middleware: ErrorMiddleware())
        if !config.demoMode {
            router.add(middleware: AllowedHostsMiddleware(allowedHosts: Set(config.allowedHosts.map { $0.lowercased() })))
        }
        router.add(middleware: CSRFMiddleware(trustedOrigins: Set(config.csrfTrustedOrigins), operatorAuth: operatorAuth))
        OpenAPIRoute.register(on: router)
        ConsoleRoute.register(on: router)
        if let metrics { MetricsRoute.register(on: router, gateway: gateway, registry: metrics, operatorAuth: operatorAuth) }
        APIRoutes(gateway: gateway, operatorAuth: operatorAuth).register(on: router)
        if let local = gateway.localProvider {
            // The in-process provider's API for people and scripts, as `pkr provider serve` would answer it.
            ProviderRoutes(store: local.store, apiKey: config.providerAPIKey, controls: local.controls)
                .register(on: router.group("provider"))
        }
        WebhookRoutes(
            gateway: gateway, operatorAuth: operatorAuth,
            rateLimiter: config.webhookRateLimitPerSecond.map { RateLimiter(ratePerSecond: $0) },
            allowedNetworks: config.webhookAllowedCIDRs.compactMap(CIDR.init)
        ).register(on: router)
        return router
    }
}
