import Hummingbird
import PKRApplication
import PKRCore

/// The gateway's HTTP face: middleware in order (errors as JSON, allowed hosts outside demo mode, CSRF) and every
/// route. Routes call the gateway's use cases only.
public enum GatewayRouter {
    public static func build(gateway: Gateway) -> Router<AppRequestContext> {
        let config = gateway.config
        let operatorAuth = OperatorAuth(demoMode: config.demoMode, adminToken: config.adminToken)
        let router = Router(context: AppRequestContext.self)
        router.add(middleware: ErrorMiddleware())
        if !config.demoMode {
            router.add(middleware: AllowedHostsMiddleware(allowedHosts: Set(config.allowedHosts.map { $0.lowercased() })))
        }
        router.add(middleware: CSRFMiddleware(trustedOrigins: Set(config.csrfTrustedOrigins), operatorAuth: operatorAuth))
        OpenAPIRoute.register(on: router)
        APIRoutes(gateway: gateway, operatorAuth: operatorAuth).register(on: router)
        WebhookRoutes(
            gateway: gateway, operatorAuth: operatorAuth,
            rateLimiter: config.webhookRateLimitPerSecond.map { RateLimiter(ratePerSecond: $0) },
            allowedNetworks: config.webhookAllowedCIDRs.compactMap(CIDR.init)
        ).register(on: router)
        return router
    }
}
