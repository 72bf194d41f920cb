import Foundation
import HTTPTypes
import Hummingbird
import PKRApplication
import PKRCore

/// The signed webhook receiver and the operator views of inbound and outbound webhooks.
struct WebhookRoutes {
    static let receiverPaths = ["/api/webhooks/wallet", "/api/webhooks/bank"]

    let gateway: Gateway
    let operatorAuth: OperatorAuth
    let rateLimiter: RateLimiter?
    let allowedNetworks: [CIDR]

    func register(on router: Router<AppRequestContext>) {
        let webhooks = router.group("api/webhooks")
        webhooks.post("wallet", use: receive)
        webhooks.post("bank", use: receive)
        webhooks.get("inbound", use: inbound)
        webhooks.get("quarantine", use: quarantine)
        webhooks.get("deliveries", use: deliveries)
        webhooks.get("deliveries/:id", use: delivery)
        webhooks.post("deliveries/:id/retry", use: retry)
    }

    @Sendable func receive(_ request: Request, context: AppRequestContext) async throws -> Response {
        let receivedAt = gateway.clock.nowMicros()
        // Rate-limited and disallowed deliveries are refused before the body is read and are not written to
        // the inbound log: a flood must not cost a database write each.
        if let rateLimiter, !rateLimiter.allow(key: context.sourceIP ?? "unknown", nowMicros: receivedAt) {
            throw GatewayError.rateLimited
        }
        let headers = WebhookHeaders(
            id: request.header(.webhookID), timestamp: request.header(.webhookTimestamp),
            signature: request.header(.webhookSignature),
            legacySignature: request.header(.legacySignature))
        if !allowedNetworks.isEmpty {
            guard let ip = context.sourceIP, allowedNetworks.contains(where: { $0.contains(ip) }) else {
                context.logger.notice(
                    "webhook from an address outside PKR_WEBHOOK_ALLOWED_CIDRS refused",
                    metadata: ["source": "\(context.sourceIP ?? "unknown")"])
                throw GatewayError.forbidden("this address may not deliver webhooks")
            }
        }
        let body: [UInt8]
        do {
            body = try await request.bodyBytes(
                BodyLimits(
                    bytesMax: gateway.config.webhookBodyBytesMax,
                    timeoutMillis: gateway.config.requestBodyTimeoutMillis))
        } catch let error as GatewayError {
            try await gateway.logUnreadableDelivery(
                headers, sourceAddress: context.sourceIP, receivedAtMicros: receivedAt,
                error: error)
            throw error
        }
        let outcome = try await gateway.receiveWebhook(
            Gateway.WebhookDelivery(
                headers: headers, body: body, sourceAddress: context.sourceIP, receivedAtMicros: receivedAt))
        var fields: [(String, JSONValue)] = [("ok", .bool(true)), ("outcome", .string(outcome.code))]
        switch outcome {
        case .minted(let job):
            fields += [
                ("duplicate", .bool(false)), ("job_id", .string(job.id)), ("tx_hash", .string(job.txHash)),
                ("amount_units", .string(String(job.amountUnits))),
            ]
        case .duplicate(let jobID):
            fields += [("duplicate", .bool(true)), ("job_id", .optional(jobID))]
        case .recorded(let note):
            fields += [("duplicate", .bool(false)), ("note", .string(note))]
        case .conflict:
            break
        }
        return JSONResponse.make(.ok, .object(fields))
    }

    @Sendable func inbound(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let page = try request.page()
        return try Self.encode(try await gateway.inboundLog(page))
    }

    @Sendable func quarantine(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let page = try request.page()
        return try Self.encode(try await gateway.quarantine(page))
    }

    @Sendable func deliveries(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let page = try request.page()
        let state = request.uri.queryParameters["state"].map(String.init)
        if let state, !["pending", "delivered", "dead"].contains(state) {
            throw GatewayError.invalidField("state", "pending, delivered or dead")
        }
        return try Self.encode(try await gateway.deliveries(page, state: state))
    }

    @Sendable func delivery(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let id = try Self.deliveryID(context)
        guard let (view, attempts) = try await gateway.delivery(id: id) else { throw GatewayError.notFound("no delivery \(id)") }
        struct Detail: Encodable {
            var delivery: DeliveryView
            var attempts: [AttemptView]
        }
        return try Self.encode(Detail(delivery: view, attempts: attempts))
    }

    @Sendable func retry(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let id = try Self.deliveryID(context)
        guard try await gateway.redeliver(id: id) else { throw GatewayError.notFound("no delivery \(id)") }
        return JSONResponse.make(.accepted, .object([("ok", .bool(true)), ("delivery_id", .integer(id)), ("state", .string("pending"))]))
    }

    static func deliveryID(_ context: AppRequestContext) throws -> Int64 {
        guard let text = context.parameters.get("id"), let id = Int64(text), id > 0, id < Int64.max else {
            throw GatewayError.invalidField("id", "a positive integer delivery id")
        }
        return id
    }

    static func encode<T: Encodable>(_ value: T) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return JSONResponse.make(.ok, text: String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}
