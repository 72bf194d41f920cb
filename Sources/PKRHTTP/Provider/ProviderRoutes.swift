import Foundation
import HTTPTypes
import Hummingbird
import PKRApplication
import PKRCore
import Synchronization

/// The wallet provider's own API (`/v1/...`), shaped like real providers' (Stripe, Circle Mint, Modern Treasury):
/// bearer-key auth on every call, amounts as exact decimal strings, idempotency keys on payouts, a cursor-paged
/// append-only transaction listing. `pkr provider serve` serves it at the root; demo mode mounts it under
/// `/provider` in the gateway's process, where the gateway still reaches it only over HTTP.
public struct ProviderRoutes: Sendable {
    public let store: any WalletStubStore
    public let apiKey: String
    /// Test controls (`/v1/test/...`), only in demo mode.
    public let controls: ProviderControls?
    private let payoutsInFlight = PayoutsInFlight()
    static let bodyLimits = BodyLimits(bytesMax: 64 * 1024, timeoutMillis: 10_000)

    public init(store: any WalletStubStore, apiKey: String, controls: ProviderControls?) {
        precondition(apiKey.utf8.count >= 16, "the provider's API key is at least 16 bytes")
        self.store = store
        self.apiKey = apiKey
        self.controls = controls
    }

    public func register<Context: RequestContext>(on group: RouterGroup<Context>) {
        let v1 = group.group("v1").add(middleware: ProviderMiddleware<Context>(apiKey: apiKey, controls: controls))
        v1.get("balance") { _, _ in try await self.balance() }
        v1.post("accounts") { request, _ in try await self.openAccount(request) }
        v1.get("accounts/:account_no") { _, context in try await self.account(Self.pathParameter(context, "account_no")) }
        v1.post("accounts/:account_no/deposits") { request, context in
            try await self.deposit(request, account: Self.pathParameter(context, "account_no"))
        }
        v1.get("transactions") { request, _ in try await self.transactions(request) }
        v1.post("payouts") { request, _ in try await self.createPayout(request) }
        v1.get("payouts") { request, _ in try await self.findPayouts(request) }
        v1.get("payouts/:id") { _, context in try await self.payout(id: Self.pathParameter(context, "id")) }
        v1.post("payouts/:id/cancel") { _, context in
            let id = try Self.pathParameter(context, "id")
            return JSONResponse.make(.ok, Self.json(try await self.store.advancePayout(id: id, to: .canceled, failureCode: nil)))
        }
        if let controls {
            v1.post("test/webhooks") { request, _ in
                let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
                guard case .bool(let paused)? = root["paused"] else { throw GatewayError.invalidField("paused", "true or false") }
                controls.setWebhooksPaused(paused)
                return JSONResponse.make(.ok, .object([("paused", .bool(paused))]))
            }
            v1.post("test/fail-payouts") { request, _ in
                let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
                let count = try Self.count(root, "count", 0...1000) ?? 1
                let codeText = try JSONBody.text(root, "failure_code") ?? PayoutFailureCode.railRejected.rawValue
                guard let code = PayoutFailureCode(rawValue: codeText) else {
                    throw GatewayError.invalidField(
                        "failure_code", PayoutFailureCode.allCases.map(\.rawValue).joined(separator: ", "))
                }
                // Refused before any money moves, unless the failure comes after the debit (the money is then credited back).
                var afterDebit = false
                switch root["after_debit"] {
                case nil, .null?: break
                case .bool(let value)?: afterDebit = value
                default: throw GatewayError.invalidField("after_debit", "true or false")
                }
                controls.failPayouts(count: count, PayoutFailure(code: code, afterDebit: afterDebit))
                return JSONResponse.make(
                    .ok,
                    .object([
                        ("count", .integer(Int64(count))), ("failure_code", .string(code.rawValue)), ("after_debit", .bool(afterDebit)),
                    ]))
            }
            v1.post("test/pend-payouts") { request, _ in
                let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
                let count = try Self.count(root, "count", 0...1000) ?? 1
                controls.pendPayouts(count: count)
                return JSONResponse.make(.ok, .object([("count", .integer(Int64(count)))]))
            }
            v1.post("test/advance-payout") { request, _ in
                let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
                guard let id = try JSONBody.text(root, "id") else { throw GatewayError.missingField("id") }
                guard let statusText = try JSONBody.text(root, "status") else { throw GatewayError.missingField("status") }
                let allowed: [PayoutStatus] = [.processing, .paid, .failed]
                guard let status = PayoutStatus(rawValue: statusText), allowed.contains(status) else {
                    throw GatewayError.invalidField("status", allowed.map(\.rawValue).joined(separator: ", "))
                }
                var code: PayoutFailureCode?
                if let codeText = try JSONBody.text(root, "failure_code") {
                    guard let parsed = PayoutFailureCode(rawValue: codeText) else {
                        throw GatewayError.invalidField(
                            "failure_code", PayoutFailureCode.allCases.map(\.rawValue).joined(separator: ", "))
                    }
                    code = parsed
                }
                return JSONResponse.make(.ok, Self.json(try await self.store.advancePayout(id: id, to: status, failureCode: code)))
            }
            v1.post("test/return-payout") { request, _ in
                let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
                guard let id = try JSONBody.text(root, "id") else { throw GatewayError.missingField("id") }
                return JSONResponse.make(.ok, Self.json(try await self.store.returnPayout(id: id)))
            }
            v1.post("test/faults") { request, _ in
                let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
                var faults = ProviderControls.Faults()
                faults.failNext = try Self.count(root, "fail_next", 0...1000) ?? 0
                faults.failStatus = try Self.count(root, "fail_status", 400...599) ?? 500
                faults.retryAfterSeconds = try Self.count(root, "retry_after_s", 0...3600)
                faults.delayMillis = Int64(try Self.count(root, "delay_ms", 0...60_000) ?? 0)
                faults.dropNext = try Self.count(root, "drop_next", 0...1000) ?? 0
                faults.holdMillis = Int64(try Self.count(root, "hold_ms", 0...60_000) ?? 3_000)
                controls.setFaults(faults)
                let fields: [(String, JSONValue)] = [
                    ("fail_next", .integer(Int64(faults.failNext))), ("fail_status", .integer(Int64(faults.failStatus))),
                    ("delay_ms", .integer(faults.delayMillis)), ("drop_next", .integer(Int64(faults.dropNext))),
                    ("hold_ms", .integer(faults.holdMillis)),
                ]
                return JSONResponse.make(.ok, .object(fields))
            }
        }
    }

    // MARK: - Accounts

    func balance() async throws -> Response {
        JSONResponse.make(.ok, .object([("balance_pkr", .string(Money.formatPaisa(try await store.reservePaisa())))]))
    }

    func openAccount(_ request: Request) async throws -> Response {
        let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
        guard let accountNo = try JSONBody.text(root, "account_no") else { throw GatewayError.missingField("account_no") }
        try Self.requireAccountNo(accountNo, field: "account_no")
        let created = try await store.openAccount(accountNo)
        guard let account = try await store.account(accountNo) else { throw ProviderError.unknownAccount(accountNo) }
        return JSONResponse.make(created ? .created : .ok, Self.json(account))
    }

    func account(_ accountNo: String) async throws -> Response {
        try Self.requireAccountNo(accountNo, field: "account_no")
        guard let account = try await store.account(accountNo) else { throw ProviderHTTPError.unknownAccount(accountNo) }
        return JSONResponse.make(.ok, Self.json(account))
    }

    func deposit(_ request: Request, account: String) async throws -> Response {
        try Self.requireAccountNo(account, field: "account_no")
        let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
        let amountPaisa = try Self.amount(root)
        let memo = try Self.memo(root)
        let tx = try await store.credit(account: account, amountPaisa: amountPaisa, memo: memo)
        return JSONResponse.make(.created, Self.json(tx))
    }

    // MARK: - The listing

    func transactions(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        var after: Int64 = 0
        if let text = query["after"] {
            guard let value = Int64(String(text)), value >= 0 else { throw GatewayError.invalidField("after", "a cursor from next_cursor") }
            after = value
        }
        var limit = 100
        if let text = query["limit"] {
            guard let value = Int(String(text)), (1...ProviderLimits.pageSizeMax).contains(value) else {
                throw GatewayError.invalidField("limit", "an integer from 1 to \(ProviderLimits.pageSizeMax)")
            }
            limit = value
        }
        var sinceMicros: Int64 = 0
        if let text = query["since"] {
            guard let value = Timestamp.parse(String(text)) else { throw GatewayError.invalidField("since", "an RFC 3339 time") }
            sinceMicros = value
        }
        // One more than asked tells whether more follow.
        let page = try await store.transactions(sinceMicros: sinceMicros, after: after, limit: limit + 1)
        let hasMore = page.transactions.count > limit
        let shown = page.transactions.prefix(limit)
        let nextCursor = hasMore ? page.cursors[limit - 1] : page.nextCursor
        return JSONResponse.make(
            .ok,
            .object([
                ("data", .array(shown.map { Self.json($0) })),
                ("has_more", .bool(hasMore)),
                ("next_cursor", .string(String(nextCursor))),
            ]))
    }

    // MARK: - Payouts

    func createPayout(_ request: Request) async throws -> Response {
        guard let rawKey = request.header(.idempotencyKey) else { throw ProviderHTTPError.missingIdempotencyKey }
        let key = try IdempotencyKey.validate(rawKey)
        let root = try JSONBody.object(try await request.bodyBytes(Self.bodyLimits))
        guard let account = try JSONBody.text(root, "account") else { throw GatewayError.missingField("account") }
        try Self.requireAccountNo(account, field: "account")
        let amountPaisa = try Self.amount(root)
        let memo = try Self.memo(root)
        guard let reference = try JSONBody.text(root, "reference") else { throw GatewayError.missingField("reference") }
        guard WebhookEvent.isIdentifier(reference, bytesMax: Self.referenceBytesMax) else {
            throw GatewayError.invalidField("reference", "1 to \(Self.referenceBytesMax) characters of A-Z a-z 0-9 _ . : -")
        }
        guard payoutsInFlight.insert(key) else { throw ProviderError.requestInFlight(key) }
        defer { payoutsInFlight.remove(key) }
        let failing = controls?.takePayoutFailure()
        let pending = failing == nil && controls?.takePendingPayout() == true
        let (payout, replayed) = try await store.payout(
            PayoutRequest(account: account, amountPaisa: amountPaisa, memo: memo, reference: reference, idempotencyKey: key),
            failing: failing, pending: pending)
        if replayed, let failing { controls?.restorePayoutFailure(failing) }
        if replayed && pending { controls?.restorePendingPayout() }
        var headers = HTTPFields()
        if replayed { headers[HTTPField.Name("Idempotent-Replayed")!] = "true" }
        return JSONResponse.make(replayed ? .ok : .created, Self.json(payout), headers: headers)
    }

    func findPayouts(_ request: Request) async throws -> Response {
        guard let reference = request.uri.queryParameters["reference"].map(String.init) else {
            throw GatewayError.missingField("reference")
        }
        let found = try await store.payout(reference: reference)
        return JSONResponse.make(.ok, .object([("data", .array(found.map { [Self.json($0)] } ?? [])), ("has_more", .bool(false))]))
    }

    func payout(id: String) async throws -> Response {
        guard let payout = try await store.payout(id: id) else { throw ProviderError.unknownPayout(id) }
        return JSONResponse.make(.ok, Self.json(payout))
    }

    // MARK: - Fields

    static func requireAccountNo(_ accountNo: String, field: String) throws {
        guard WebhookEvent.isIdentifier(accountNo, bytesMax: WebhookEvent.accountBytesMax) else {
            throw GatewayError.invalidField(field, "1 to \(WebhookEvent.accountBytesMax) characters of A-Z a-z 0-9 _ . : -")
        }
    }

    static func amount(_ root: JSONReader.Value) throws -> Int64 {
        guard let text = try JSONBody.text(root, "amount_pkr") else { throw GatewayError.missingField("amount_pkr") }
        do { return try Money.parsePaisa(text) } catch { throw GatewayError.invalidAmount(field: "amount_pkr", error) }
    }

    /// The memo rule the gateway's receiver applies, so that every webhook the provider sends can be received.
    static func memo(_ root: JSONReader.Value) throws -> String {
        let memo = try JSONBody.text(root, "memo") ?? ""
        guard WebhookEvent.isValidMemo(memo) else { throw GatewayError.invalidField("memo", WebhookEvent.memoRule) }
        return memo
    }

    /// A path parameter as sent, percent-decoded (`A%3A1` is `A:1`).
    static func pathParameter(_ context: some RequestContext, _ name: String) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else { throw GatewayError.invalidField(name, "malformed percent-encoding") }
        return decoded
    }

    /// A payout's reference leaves room for its reversal's (`<reference>:returned`) within the webhook's limit.
    static let referenceBytesMax = WebhookEvent.providerTxIDBytesMax - ":returned".utf8.count

    static func count(_ root: JSONReader.Value, _ key: String, _ range: ClosedRange<Int>) throws -> Int? {
        switch root[key] {
        case nil, .null?: return nil
        case .number(let text)?:
            guard let value = Int(text), range.contains(value) else {
                throw GatewayError.invalidField(key, "an integer from \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        default: throw GatewayError.invalidField(key, "an integer from \(range.lowerBound) to \(range.upperBound)")
        }
    }

    // MARK: - Rendering

    static func json(_ account: ProviderAccount) -> JSONValue {
        .object([
            ("account_no", .string(account.accountNo)), ("balance_pkr", .string(Money.formatPaisa(account.balancePaisa))),
            ("created_at", .string(Timestamp.format(micros: account.createdAtMicros))),
        ])
    }

    static func json(_ tx: ProviderTransaction) -> JSONValue {
        .object([
            ("provider_tx_id", .string(tx.providerTxID)), ("account", .string(tx.account)),
            ("direction", .string(tx.direction.rawValue)), ("amount_pkr", .string(Money.formatPaisa(tx.amountPaisa))),
            ("status", .string(tx.status.rawValue)), ("occurred_at", .string(Timestamp.format(micros: tx.occurredAtMicros))),
            ("memo", .string(tx.memo)), ("reference", .optional(tx.reference)),
        ])
    }

    static func json(_ payout: Payout) -> JSONValue {
        .object([
            ("id", .string(payout.id)), ("status", .string(payout.status.rawValue)), ("account", .string(payout.account)),
            ("amount_pkr", .string(Money.formatPaisa(payout.amountPaisa))), ("memo", .string(payout.memo)),
            ("reference", .string(payout.reference)), ("failure_code", .optional(payout.failureCode)),
            ("provider_tx_id", .optional(payout.providerTxID)),
            ("reversal_provider_tx_id", .optional(payout.reversalProviderTxID)),
            ("created_at", .string(Timestamp.format(micros: payout.createdAtMicros))),
            ("updated_at", .string(Timestamp.format(micros: payout.updatedAtMicros))),
        ])
    }
}

/// Payout keys being served in this process: a second request with one answers 409 instead of waiting.
private final class PayoutsInFlight: Sendable {
    private let keys = Mutex<Set<String>>([])

    func insert(_ key: String) -> Bool { keys.withLock { $0.insert(key).inserted } }
    func remove(_ key: String) { _ = keys.withLock { $0.remove(key) } }
}

enum ProviderHTTPError: Error {
    case missingIdempotencyKey
    case unknownAccount(String)
}

/// Auth, test faults and the provider's own error codes, for every `/v1` route.
struct ProviderMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: String
    let controls: ProviderControls?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            guard authorized(request) else {
                return Self.error(.unauthorized, "unauthorized", "send Authorization: Bearer <PROVIDER_API_KEY>")
            }
            let isControl = request.uri.path.contains("/v1/test/")
            let decision = isControl ? nil : controls?.nextCall()
            if let delay = decision?.delayMillis, delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
            if let status = decision?.failStatus {
                var response = Self.error(HTTPResponse.Status(code: status), "injected_fault", "a test control made this call fail")
                if let seconds = decision?.retryAfterSeconds { response.headers[.retryAfter] = String(seconds) }
                return response
            }
            let response = try await next(request, context)
            if let hold = decision?.holdMillis {
                // The work is done; the answer is lost on the way.
                try? await Task.sleep(for: .milliseconds(hold))
                return Self.error(.gatewayTimeout, "answer_dropped", "a test control dropped this answer")
            }
            return response
        } catch let error as ProviderError {
            return Self.response(for: error)
        } catch ProviderHTTPError.missingIdempotencyKey {
            return Self.error(.badRequest, "missing_idempotency_key", "POST /v1/payouts needs an Idempotency-Key header")
        } catch ProviderHTTPError.unknownAccount(let account) {
            return Self.error(.notFound, "unknown_account", "no account '\(account)'")
        }
    }

    private func authorized(_ request: Request) -> Bool {
        guard let header = request.header(.authorization), header.hasPrefix("Bearer ") else { return false }
        // Digests of equal length, so that not even the key's length shows in the timing.
        return Crypto.constantTimeEqual(
            Crypto.sha256(Array(header.dropFirst("Bearer ".count).utf8)), Crypto.sha256(Array(apiKey.utf8)))
    }

    static func response(for error: ProviderError) -> Response {
        switch error {
        case .unknownAccount(let account): return Self.error(.unprocessableContent, "unknown_account", "no account '\(account)'")
        case .insufficientFunds(let account):
            return Self.error(.unprocessableContent, "insufficient_funds", "account '\(account)' cannot cover the payout")
        case .referenceConflict(let reference):
            return Self.error(.conflict, "reference_conflict", "reference '\(reference)' was paid under another idempotency key")
        case .idempotencyKeyReused:
            return Self.error(.unprocessableContent, "idempotency_key_reused", "this key was used with another request")
        case .requestInFlight:
            return Self.error(.conflict, "request_in_flight", "a request with this key is still being served; retry")
        case .unknownPayout(let id): return Self.error(.notFound, "unknown_payout", "no payout '\(id)'")
        case .payoutState(let id, let status):
            return Self.error(.conflict, "payout_state", "payout '\(id)' is \(status.rawValue); only a paid payout can be returned")
        case .corruptRow, .unavailable, .rejected:
            return Self.error(.internalServerError, "internal_error", "an unexpected provider error occurred")
        }
    }

    static func error(_ status: HTTPResponse.Status, _ code: String, _ detail: String) -> Response {
        JSONResponse.make(status, .object([("error", .string(code)), ("detail", .string(detail))]))
    }
}

/// The provider's HTTP face when it has a listener of its own: JSON errors and its `/v1` routes at the root.
public enum ProviderRouter {
    public static func build(routes: ProviderRoutes) -> Router<AppRequestContext> {
        let router = Router(context: AppRequestContext.self)
        router.add(middleware: ErrorMiddleware())
        // Unauthenticated, like the gateway's: for load balancers and start-up checks.
        router.get("health") { _, _ in JSONResponse.make(.ok, .object([("ok", .bool(true))])) }
        OpenAPIRoute.register(on: router, document: OpenAPIRoute.providerDocument)
        routes.register(on: router.group())
        return router
    }
}
