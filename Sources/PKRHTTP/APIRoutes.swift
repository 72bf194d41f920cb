import Foundation
import HTTPTypes
import Hummingbird
import PKRApplication
import PKRCore

/// The seed-compatible API (paths, field names and JSON types as in the Django MVP) plus operator endpoints.
struct APIRoutes {
    let gateway: Gateway
    let operatorAuth: OperatorAuth

    var config: GatewayConfig { gateway.config }
    var bodyLimits: BodyLimits { BodyLimits(bytesMax: config.bodyBytesMax, timeoutMillis: config.requestBodyTimeoutMillis) }

    func register(on router: Router<AppRequestContext>) {
        let api = router.group("api")
        api.get("health") { _, _ in JSONResponse.make(.ok, .object([("ok", .bool(true))])) }
        api.get("csrf", use: csrf)
        if config.demoMode {
            api.post("demo/seed", use: demoSeed)
            api.post("demo/wallet/credit", use: demoCredit)
        }
        api.post("ingest/wallet-transactions", use: ingest)
        api.post("mint", use: mint)
        api.post("redeem", use: redeem)
        api.post("users", use: createUser)
        api.get("balance", use: balance)
        api.get("ledger", use: ledger)
        api.get("external-transactions", use: externalTransactions)
        api.get("me", use: me)
        api.get("debug/summary", use: summary)
        api.get("redemptions/:job_id", use: redemption)
    }

    // MARK: - Session

    @Sendable func csrf(_ request: Request, context: AppRequestContext) async throws -> Response {
        let existing = request.cookies["csrftoken"]?.value
        let token = existing.flatMap { CSRF.isWellFormed($0) ? $0 : nil } ?? Identifiers.csrfToken()
        var headers = HTTPFields()
        headers[.setCookie] = "csrftoken=\(token); Max-Age=31449600; Path=/; SameSite=Lax"
        return JSONResponse.make(.ok, .object([("csrftoken", .string(token))]), headers: headers)
    }

    @Sendable func demoSeed(_ request: Request, context: AppRequestContext) async throws -> Response {
        let customer = try await gateway.seedDemo()
        return JSONResponse.make(.ok, .object([("user_id", .string(customer.id)), ("wallet_account", .string(customer.walletAccount))]))
    }

    @Sendable func me(_ request: Request, context: AppRequestContext) async throws -> Response {
        JSONResponse.make(.ok, Self.customerJSON(try await gateway.currentCustomer()))
    }

    // MARK: - Customers

    /// `POST /api/users` (operator): binds a provider account to a new customer; the same email and account again
    /// answer the same customer (200 instead of 201).
    @Sendable func createUser(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let root = try JSONBody.object(try await request.bodyBytes(bodyLimits))
        guard let email = try JSONBody.text(root, "email") else { throw GatewayError.missingField("email") }
        guard CustomerFields.isEmail(email) else { throw GatewayError.invalidField("email", CustomerFields.emailRule) }
        guard let account = try JSONBody.text(root, "wallet_account") else { throw GatewayError.missingField("wallet_account") }
        guard CustomerFields.isWalletAccount(account) else {
            throw GatewayError.invalidField("wallet_account", "1 to \(WebhookEvent.accountBytesMax) characters of A-Z a-z 0-9 _ . : -")
        }
        let displayName = try JSONBody.text(root, "display_name") ?? String(email.prefix { $0 != "@" })
        guard CustomerFields.isDisplayName(displayName) else {
            throw GatewayError.invalidField("display_name", CustomerFields.displayNameRule)
        }
        let creation = try await gateway.createCustomer(
            CustomerDraft(email: email, displayName: displayName, walletAccount: account))
        return JSONResponse.make(creation.created ? .created : .ok, Self.customerJSON(creation.customer))
    }

    /// `GET /api/redemptions/{job_id}` (operator): where a redemption stands, and how it got there.
    @Sendable func redemption(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let jobID = try context.parameters.require("job_id")
        guard let redemption = try await gateway.redemption(jobID: jobID) else {
            throw GatewayError.notFound("no redemption with job id '\(jobID)'")
        }
        let history: [JSONValue] = redemption.history.map { event in
            .object([
                ("state", .string(event.state.rawValue)), ("at", .optional(event.at)),
                ("provider_tx_id", .optional(event.providerTxID)), ("mint_job_id", .optional(event.mintJobID)),
            ])
        }
        return JSONResponse.make(
            .ok,
            .object([
                ("job_id", .string(redemption.jobID)), ("user_id", .string(redemption.customerID)),
                ("amount_units", .string(String(redemption.amountUnits))), ("state", .string(redemption.state.rawValue)),
                ("history", .array(history)),
            ]))
    }

    static func customerJSON(_ customer: Customer) -> JSONValue {
        .object([
            ("user_id", .string(customer.id)), ("email", .string(customer.email)),
            ("display_name", .string(customer.displayName)),
            ("wallet_account", .string(customer.walletAccount)),
            ("chain_address", .string(customer.chainAddress)),
        ])
    }

    /// The customer a read acts for: `?user_id=` from an operator (server to server), else the seed's current one.
    func actingCustomerID(_ request: Request) throws -> String? {
        guard let text = request.uri.queryParameters["user_id"] else { return nil }
        try operatorAuth.require(request)
        let id = String(text)
        guard CustomerFields.isUserID(id) else { throw GatewayError.invalidField("user_id", CustomerFields.userIDRule) }
        return id
    }

    // MARK: - Deposits

    struct CreditBody: Decodable {
        var amount_pkr: String
        var memo: String?
    }

    @Sendable func demoCredit(_ request: Request, context: AppRequestContext) async throws -> Response {
        let body = try await request.decodeJSON(CreditBody.self, bodyLimits)
        let paisa: Int64
        do { paisa = try Money.parsePaisa(body.amount_pkr) } catch { throw GatewayError.invalidAmount(field: "amount_pkr", error) }
        let memo = try Self.memo(body.memo)
        let tx = try await gateway.demoCredit(amountPaisa: paisa, memo: memo)
        return JSONResponse.make(
            .created,
            .object([
                ("provider_tx_id", .string(tx.providerTxID)),
                ("amount_pkr", .string(Money.formatPaisa(tx.amountPaisa))),
                ("webhook_push", .bool(config.webhookPush)),
            ]))
    }

    struct IngestBody: Decodable {
        var since: String?
    }

    @Sendable func ingest(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let bytes = try await request.bodyBytes(bodyLimits)
        var sinceMicros: Int64?
        if !bytes.isEmpty {
            let body: IngestBody
            do { body = try JSONDecoder().decode(IngestBody.self, from: Data(bytes)) } catch let error as DecodingError {
                throw JSONBody.gatewayError(error)
            }
            if let since = body.since {
                guard let micros = Timestamp.parse(since) else {
                    throw GatewayError.invalidField("since", "an RFC 3339 timestamp such as 2025-01-01T00:00:00Z")
                }
                sinceMicros = micros
            }
        }
        try await gateway.requireCustomers()
        let result = try await gateway.ingest(sinceMicros: sinceMicros)
        return JSONResponse.make(
            .ok,
            .object([
                ("ingested", .integer(Int64(result.ingested))),
                ("minted", .integer(Int64(result.minted))),
                ("duplicates", .integer(Int64(result.duplicates))),
                ("conflicts", .integer(Int64(result.conflicts))),
            ]))
    }

    // MARK: - Mint and redeem

    struct MintBody: Decodable {
        var provider_tx_id: String
    }

    @Sendable func mint(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let body = try await request.decodeJSON(MintBody.self, bodyLimits)
        guard WebhookEvent.isIdentifier(body.provider_tx_id, bytesMax: WebhookEvent.providerTxIDBytesMax) else {
            throw GatewayError.invalidField("provider_tx_id", "1 to 128 characters of A-Z a-z 0-9 _ . : -")
        }
        let job = try await gateway.mint(providerTxID: body.provider_tx_id)
        return JSONResponse.make(.created, Self.jobJSON(job))
    }

    @Sendable func redeem(_ request: Request, context: AppRequestContext) async throws -> Response {
        let key = try request.header(.idempotencyKey).map { key throws(GatewayError) in try IdempotencyKey.validate(key) }
        let body = try RedeemRequest.parse(try await request.bodyBytes(bodyLimits))
        let units: Int64
        switch body.amountUnits {
        case .success(let value): units = value
        case .failure(let error): throw GatewayError.invalidAmount(field: "amount_units", error)
        }
        if body.userID != nil { try operatorAuth.require(request) }
        let result = try await gateway.redeem(
            amountUnits: units, memo: try Self.memo(body.memo), idempotencyKey: key, customerID: body.userID)
        var headers = HTTPFields()
        if case .replayed = result { headers[HTTPField.Name("Idempotent-Replayed")!] = "true" }
        let receipt = result.receipt
        return JSONResponse.make(
            .created, Self.jobJSON(id: receipt.jobID, txHash: receipt.txHash, amountUnits: receipt.amountUnits), headers: headers)
    }

    /// The seed's answer for a mint or a redeem; a replay renders the same receipt, so the same bytes.
    static func jobJSON(_ job: ChainJob) -> JSONValue { jobJSON(id: job.id, txHash: job.txHash, amountUnits: job.amountUnits) }

    static func jobJSON(id: String, txHash: String, amountUnits: Int64) -> JSONValue {
        .object([("job_id", .string(id)), ("tx_hash", .string(txHash)), ("amount_units", .string(String(amountUnits)))])
    }

    static func memo(_ memo: String?) throws -> String {
        let memo = memo ?? ""
        guard WebhookEvent.isValidMemo(memo) else { throw GatewayError.invalidField("memo", WebhookEvent.memoRule) }
        return memo
    }

    // MARK: - Reads

    @Sendable func balance(_ request: Request, context: AppRequestContext) async throws -> Response {
        let units = try await gateway.tokenBalanceUnits(customerID: try actingCustomerID(request))
        return JSONResponse.make(
            .ok,
            .object([
                ("token_balance_units", .string(String(units))),
                ("token_decimals", .integer(Int64(Money.tokenDecimals))),
            ]))
    }

    @Sendable func ledger(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try request.page()
        let entries = try await gateway.ledgerEntries(page, customerID: try actingCustomerID(request))
        return JSONResponse.make(
            .ok,
            .array(
                entries.map { entry in
                    .object([
                        ("id", .integer(entry.id)), ("user_id", .optional(entry.userID)), ("side", .string(entry.side.rawValue)),
                        ("account", .string(entry.account.rawValue)), ("amount_units", .string(String(entry.amountUnits))),
                        ("ref_type", .string(entry.refType.rawValue)), ("ref_id", .string(entry.refID)),
                        ("created_at", .string(entry.createdAt)), ("prev_hash", .string(entry.prevHash)),
                        ("entry_hash", .string(entry.entryHash)),
                    ])
                }))
    }

    @Sendable func externalTransactions(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try request.page()
        let records = try await gateway.externalTransactions(page)
        return JSONResponse.make(.ok, .array(records.map(Self.externalJSON)))
    }

    static func externalJSON(_ record: ExternalTransactionRecord) -> JSONValue {
        let via: String = record.seenViaWebhook && record.seenViaPoll ? "both" : (record.seenViaWebhook ? "webhook" : "poll")
        return .object([
            ("id", .integer(record.id)),
            ("provider_tx_id", .string(record.tx.providerTxID)), ("direction", .string(record.tx.direction.rawValue)),
            ("amount_pkr", .string(Money.formatPaisa(record.tx.amountPaisa))), ("memo", .string(record.tx.memo)),
            ("occurred_at", .string(Timestamp.format(micros: record.tx.occurredAtMicros))), ("recorded_at", .string(record.recordedAt)),
            ("status", .string(record.tx.status.rawValue)), ("account", .string(record.tx.account)),
            ("arrived_via", .string(via)), ("first_seen_via", .string(record.firstSeenVia.rawValue)),
            ("mint_job_id", .optional(record.mintJobID)), ("matched_burn_job_id", .optional(record.matchedJobID)),
            ("flag", .optional(record.operatorFlag)),
        ])
    }

    @Sendable func summary(_ request: Request, context: AppRequestContext) async throws -> Response {
        try operatorAuth.require(request)
        let report = try await gateway.reconciliation()
        let s = report.snapshot
        return JSONResponse.make(
            .ok,
            .object([
                (
                    "chain_jobs",
                    .object([
                        ("mints_units", .string(String(s.mintedUnits))), ("burns_units", .string(String(s.burnedUnits))),
                        ("net_units", .string(String(report.netUnits))),
                    ])
                ),
                (
                    "balances",
                    .object([
                        ("token_balance_units", .string(String(s.tokenBalanceUnits))),
                        ("chain_stub_units", .string(String(s.chainStubUnits))),
                        ("match", .bool(s.tokenBalanceUnits == s.chainStubUnits && report.netUnits == s.tokenBalanceUnits)),
                    ])
                ),
                ("external_transactions_latest", .array(s.latest.map(Self.externalJSON))),
                ("notes", .string("net_units should equal token_balance_units when everything is consistent.")),
                ("invariants", report.invariantsJSON),
                ("convergence", report.convergenceJSON),
            ]))
    }
}

/// Operator endpoints: open in demo mode, `Authorization: Bearer $PKR_ADMIN_TOKEN` otherwise.
struct OperatorAuth: Sendable {
    let demoMode: Bool
    let adminToken: String?

    func isOperator(_ request: Request) -> Bool {
        guard let adminToken, let header = request.header(.authorization), header.hasPrefix("Bearer ") else { return false }
        // Digests of equal length, so that not even the token's length shows in the timing.
        return Crypto.constantTimeEqual(
            Crypto.sha256(Array(header.dropFirst("Bearer ".count).utf8)),
            Crypto.sha256(Array(adminToken.utf8)))
    }

    func require(_ request: Request) throws {
        if demoMode || isOperator(request) { return }
        throw GatewayError.unauthorized("this operator endpoint needs Authorization: Bearer <PKR_ADMIN_TOKEN>")
    }
}
