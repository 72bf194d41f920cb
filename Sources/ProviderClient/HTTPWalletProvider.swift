import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PKRCore
import Synchronization

/// The gateway's side of the provider boundary: `WalletProvider` over the provider's HTTP API, with AsyncHTTPClient.
/// Every call has a timeout; network errors, 5xx, 409 and 429 are tried again with capped, jittered backoff (and
/// `Retry-After`); a circuit breaker fails calls at once while the provider keeps failing. A payout is sent under
/// one idempotency key on every attempt, and an outcome that stays unknown is resolved by looking the payout up by
/// its reference, never by a new key.
public final class HTTPWalletProvider: WalletProvider {
    public struct Settings: Sendable {
        /// The provider's base URL, without `/v1` (read per call: demo mode learns its own port only once it runs).
        public var baseURL: @Sendable () async throws -> String
        public var apiKey: String
        public var timeoutMillis: Int64 = 5_000
        public var retry = RetryPolicy()
        public var breakerFailuresMax = 5
        public var breakerOpenMillis: Int64 = 5_000

        public init(baseURL: @escaping @Sendable () async throws -> String, apiKey: String) {
            self.baseURL = baseURL
            self.apiKey = apiKey
        }
    }

    /// The largest answer read: a full listing page is well under it.
    static let responseBytesMax = 8 * 1024 * 1024

    private let settings: Settings
    private let client: HTTPClient
    private let breaker: Mutex<CircuitBreaker>
    private let nowMicros: @Sendable () -> Int64
    private let logger: Logger

    /// The process's client for provider calls. A refused connection fails the attempt at once (the adapter's own
    /// retries decide what comes next) instead of being retried by the pool until the attempt's deadline. The connect
    /// timeout also bounds a call's wait for a free pooled connection, so it is long: each attempt's own deadline
    /// (`Settings.timeoutMillis`) is what cuts a call short. Never shut down, like `HTTPClient.shared`.
    public static let sharedClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        configuration.timeout.connect = .seconds(10)
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    public init(
        settings: Settings, client: HTTPClient = HTTPWalletProvider.sharedClient, nowMicros: @escaping @Sendable () -> Int64,
        logger: Logger
    ) {
        self.settings = settings
        self.client = client
        self.breaker = Mutex(CircuitBreaker(failuresMax: settings.breakerFailuresMax, openMicros: settings.breakerOpenMillis * 1000))
        self.nowMicros = nowMicros
        self.logger = logger
    }

    public var circuit: CircuitBreaker.State { breaker.withLock { $0.state } }

    // MARK: - WalletProvider

    public func openAccount(_ accountNo: String) async throws {
        _ = try await call(.POST, "/v1/accounts", body: .object([("account_no", .string(accountNo))]), expect: [200, 201])
    }

    public func deposit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction {
        // Not retried: a deposit has no idempotency key, and a customer's payment is made once.
        do {
            let answer = try await call(
                .POST, "/v1/accounts/\(try Self.pathSegment(account))/deposits",
                body: .object([("amount_pkr", .string(Money.formatPaisa(amountPaisa))), ("memo", .string(memo))]),
                expect: [201], retried: false)
            return try Self.transaction(answer)
        } catch ProviderError.unknownAccount {
            // The refusal names no account; this call knows which.
            throw ProviderError.unknownAccount(account)
        }
    }

    public func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage {
        var query = "after=\(cursor)&limit=\(limit)"
        if sinceMicros > 0 { query += "&since=" + Timestamp.format(micros: sinceMicros) }
        let answer = try await call(.GET, "/v1/transactions?" + query, expect: [200])
        guard case .array(let rows)? = answer["data"], case .string(let next)? = answer["next_cursor"],
            let nextCursor = Int64(next), nextCursor >= cursor, rows.count <= limit
        else { throw ProviderError.rejected(status: 200, code: "malformed_listing") }
        return ProviderPage(transactions: try rows.map(Self.transaction), nextCursor: rows.isEmpty ? cursor : nextCursor)
    }

    public func payout(_ request: PayoutRequest) async throws -> Payout {
        let body = JSONValue.object([
            ("account", .string(request.account)), ("amount_pkr", .string(Money.formatPaisa(request.amountPaisa))),
            ("memo", .string(request.memo)), ("reference", .string(request.reference)),
        ])
        do {
            let answer = try await call(.POST, "/v1/payouts", body: body, idempotencyKey: request.idempotencyKey, expect: [200, 201])
            return try Self.payout(answer)
        } catch ProviderError.unavailable(let why) {
            // The provider may have paid and the answer been lost: ask what happened under the reference.
            logger.warning(
                "payout outcome unknown; looking it up by reference", metadata: ["reference": "\(request.reference)", "error": "\(why)"])
            if let found = try await payout(reference: request.reference) { return found }
            throw ProviderError.unavailable(why)
        }
    }

    public func payout(reference: String) async throws -> Payout? {
        let answer = try await call(.GET, "/v1/payouts?reference=" + (try Self.pathSegment(reference)), expect: [200])
        guard case .array(let rows)? = answer["data"], rows.count <= 1 else {
            throw ProviderError.rejected(status: 200, code: "malformed_payout_list")
        }
        return try rows.first.map(Self.payout)
    }

    public func reservePaisa() async throws -> Int64 {
        let answer = try await call(.GET, "/v1/balance", expect: [200])
        guard case .string(let text)? = answer["balance_pkr"],
            let paisa = try? Money.parseBalancePaisa(text)
        else {
            throw ProviderError.rejected(status: 200, code: "malformed_balance")
        }
        return paisa
    }

    // MARK: - The wire

    /// One logical call: attempts until an expected answer, a final refusal, or the retry budget is spent.
    private func call(
        _ method: HTTPMethod, _ pathAndQuery: String, body: JSONValue? = nil, idempotencyKey: String? = nil,
        expect: Set<Int>, retried: Bool = true
    ) async throws -> JSONReader.Value {
        let attemptsMax = retried ? settings.retry.attemptsMax : 1
        var lastFailure = "no attempt made"
        for attempt in 1...attemptsMax {
            guard breaker.withLock({ $0.admit(nowMicros: nowMicros()) }) else {
                throw ProviderError.unavailable("circuit open after repeated failures")
            }
            var retryAfterSeconds: Int64?
            do {
                let (status, headers, bytes) = try await send(method, pathAndQuery, body: body, idempotencyKey: idempotencyKey)
                if expect.contains(status) {
                    breaker.withLock { $0.recordSuccess() }
                    do { return try JSONReader.parse(bytes) } catch {
                        throw ProviderError.rejected(status: status, code: "malformed_json")
                    }
                }
                let code =
                    (try? JSONReader.parse(bytes)).flatMap { value -> String? in
                        if case .string(let code)? = value["error"] { return code }
                        return nil
                    } ?? "http_\(status)"
                guard RetryPolicy.isRetryable(status: status) else {
                    // The provider answered and refused: it is up, and asking again would be refused again.
                    breaker.withLock { $0.recordSuccess() }
                    throw Self.refusal(status: status, code: code)
                }
                if status >= 500 { breaker.withLock { $0.recordFailure(nowMicros: nowMicros()) } }
                lastFailure = "HTTP \(status) \(code)"
                retryAfterSeconds = headers.first(name: "Retry-After").flatMap { Int64($0) }
            } catch let error as ProviderError {
                throw error
            } catch {
                breaker.withLock { $0.recordFailure(nowMicros: nowMicros()) }
                lastFailure = Self.describe(error)
            }
            guard attempt < attemptsMax else { break }
            let delay = settings.retry.delayMillis(
                afterAttempt: attempt, retryAfterSeconds: retryAfterSeconds, random: Double.random(in: 0...1))
            logger.debug(
                "provider call failed; retrying",
                metadata: [
                    "path": "\(Self.pathOnly(pathAndQuery))", "attempt": "\(attempt)", "delay_ms": "\(delay)", "error": "\(lastFailure)",
                ])
            try await Task.sleep(for: .milliseconds(delay))
        }
        throw ProviderError.unavailable(lastFailure)
    }

    private func send(
        _ method: HTTPMethod, _ pathAndQuery: String, body: JSONValue?, idempotencyKey: String?
    ) async throws -> (Int, HTTPHeaders, [UInt8]) {
        var request = HTTPClientRequest(url: try await settings.baseURL() + pathAndQuery)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(settings.apiKey)")
        request.headers.add(name: "Accept", value: "application/json")
        if let idempotencyKey { request.headers.add(name: "Idempotency-Key", value: idempotencyKey) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: JSONText.render(body)))
        }
        let response = try await client.execute(request, timeout: .milliseconds(settings.timeoutMillis))
        let buffer = try await response.body.collect(upTo: Self.responseBytesMax)
        return (Int(response.status.code), response.headers, Array(buffer: buffer))
    }

    static func refusal(status: Int, code: String) -> ProviderError {
        switch code {
        case "unknown_account": return .unknownAccount("")
        case "insufficient_funds": return .insufficientFunds(account: "")
        case "reference_conflict": return .referenceConflict("")
        case "idempotency_key_reused": return .idempotencyKeyReused("")
        default: return .rejected(status: status, code: code)
        }
    }

    /// A connection failure's kind, never a URL with its query or a header.
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            if error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout { return "timeout" }
            return "network error (\(error.shortDescription))"
        }
        return "network error (\(String(describing: type(of: error))))"
    }

    static func pathOnly(_ pathAndQuery: String) -> Substring { pathAndQuery.prefix { $0 != "?" } }

    static func pathSegment(_ text: String) throws -> String {
        // Provider identifiers are A-Z a-z 0-9 _ . : -, which need no escaping; anything else is refused here.
        guard WebhookEvent.isIdentifier(text, bytesMax: 128) else { throw ProviderError.rejected(status: 0, code: "invalid_identifier") }
        return text
    }

    // MARK: - Decoding

    static func transaction(_ value: JSONReader.Value) throws -> ProviderTransaction {
        func text(_ key: String) throws -> String {
            guard case .string(let text)? = value[key] else { throw ProviderError.rejected(status: 200, code: "malformed_transaction") }
            return text
        }
        var reference: String?
        if case .string(let text)? = value["reference"] { reference = text }
        guard let direction = TransactionDirection(rawValue: try text("direction")),
            let status = TransactionStatus(rawValue: try text("status")),
            let occurred = Timestamp.parse(try text("occurred_at")),
            let amountPaisa = try? Money.parsePaisa(try text("amount_pkr"))
        else { throw ProviderError.rejected(status: 200, code: "malformed_transaction") }
        return ProviderTransaction(
            providerTxID: try text("provider_tx_id"), account: try text("account"), direction: direction,
            amountPaisa: amountPaisa, status: status, occurredAtMicros: occurred, memo: try text("memo"), reference: reference)
    }

    static func payout(_ value: JSONReader.Value) throws -> Payout {
        func text(_ key: String) throws -> String {
            guard case .string(let text)? = value[key] else { throw ProviderError.rejected(status: 200, code: "malformed_payout") }
            return text
        }
        func optional(_ key: String) -> String? {
            if case .string(let text)? = value[key] { return text }
            return nil
        }
        guard let status = PayoutStatus(rawValue: try text("status")),
            let amountPaisa = try? Money.parsePaisa(try text("amount_pkr")),
            let created = Timestamp.parse(try text("created_at")), let updated = Timestamp.parse(try text("updated_at"))
        else { throw ProviderError.rejected(status: 200, code: "malformed_payout") }
        return Payout(
            id: try text("id"), status: status, account: try text("account"), amountPaisa: amountPaisa, memo: try text("memo"),
            reference: try text("reference"), failureCode: optional("failure_code"), providerTxID: optional("provider_tx_id"),
            reversalProviderTxID: optional("reversal_provider_tx_id"), createdAtMicros: created, updatedAtMicros: updated)
    }
}
