/// Every way a request can fail, typed in the core. The HTTP layer maps these to status codes in one place.
public enum GatewayError: Error, Equatable, Sendable {
    case invalidJSON(String)
    case missingField(String)
    case invalidField(String, String)
    case invalidAmount(field: String, MoneyError)
    case amountAboveLimit(field: String, limit: String)
    case insufficientBalance(availableUnits: Int64, requestedUnits: Int64)
    case unknownProviderTransaction(String)
    case notMintable(String)
    case demoNotSeeded
    case idempotencyKeyReused
    case idempotencyRequestInFlight
    case invalidIdempotencyKey
    case csrfFailed(String)
    case webhookRejected(WebhookRejection)
    case unknownAccount(String)
    case unknownCustomer(String)
    case customerConflict(String)
    case webhookConflict(providerTxID: String, fields: [String])
    case payloadTooLarge(bytesMax: Int)
    case notFound(String)
    case unauthorized(String)
    case forbidden(String)
    case rateLimited
    case requestTimeout(millis: Int64)
    case disallowedHost(String)
    case providerUnavailable(String)
    /// A debit names a payout the provider, asked directly, does not confirm.
    case payoutNotConfirmed(reference: String)
    case storeUnavailable(String)

    /// The stable, machine-readable code clients branch on.
    public var code: String {
        switch self {
        case .invalidJSON: return "invalid_json"
        case .missingField: return "missing_field"
        case .invalidField: return "invalid_field"
        case .invalidAmount(_, .notWholePaisa): return "not_whole_paisa"
        case .invalidAmount: return "invalid_amount"
        case .amountAboveLimit: return "amount_above_limit"
        case .insufficientBalance: return "insufficient_balance"
        case .unknownProviderTransaction: return "unknown_provider_tx"
        case .notMintable: return "not_mintable"
        case .demoNotSeeded: return "demo_not_seeded"
        case .idempotencyKeyReused: return "idempotency_key_reused"
        case .idempotencyRequestInFlight: return "idempotency_request_in_flight"
        case .invalidIdempotencyKey: return "invalid_idempotency_key"
        case .csrfFailed: return "csrf_failed"
        case .webhookRejected(let reason): return reason.rawValue
        case .unknownAccount: return "unknown_account"
        case .unknownCustomer: return "unknown_customer"
        case .customerConflict: return "customer_conflict"
        case .webhookConflict: return "webhook_conflict"
        case .payloadTooLarge: return "payload_too_large"
        case .notFound: return "not_found"
        case .unauthorized: return "unauthorized"
        case .forbidden: return "forbidden"
        case .rateLimited: return "rate_limited"
        case .requestTimeout: return "request_timeout"
        case .disallowedHost: return "disallowed_host"
        case .providerUnavailable: return "provider_unavailable"
        case .payoutNotConfirmed: return "payout_not_confirmed"
        case .storeUnavailable: return "store_unavailable"
        }
    }

    /// A human-readable explanation. Never contains a secret.
    public var detail: String {
        switch self {
        case .invalidJSON(let why): return "the request body is not valid JSON: \(why)"
        case .missingField(let field): return "the field '\(field)' is required"
        case .invalidField(let field, let why): return "the field '\(field)' is invalid: \(why)"
        case .invalidAmount(let field, let error): return "'\(field)' \(error.detail)"
        case .amountAboveLimit(let field, let limit): return "'\(field)' is above the single-transaction limit of \(limit) PKR"
        case .insufficientBalance(let available, let requested):
            return "token balance \(available) units is less than the requested \(requested) units"
        case .unknownProviderTransaction(let id): return "no ingested provider transaction '\(id)'"
        case .notMintable(let why): return why
        case .demoNotSeeded:
            return
                "no user is set up yet: POST /api/demo/seed in demo mode (pkr serve seeds it at start-up unless PKR_DEMO_SEED_ON_START=0)"
        case .idempotencyKeyReused: return "this Idempotency-Key was already used with a different request body"
        case .idempotencyRequestInFlight: return "a request with this Idempotency-Key is still being processed; retry later"
        case .invalidIdempotencyKey: return "the Idempotency-Key header must be 1 to 255 printable ASCII characters"
        case .csrfFailed(let why): return "CSRF verification failed: \(why)"
        case .webhookRejected(let reason):
            switch reason {
            case .missingHeaders: return "webhook-id, webhook-timestamp and webhook-signature headers are required"
            case .malformedMessageID: return "webhook-id must be 1 to 256 printable ASCII characters"
            case .malformedTimestamp: return "webhook-timestamp must be integer Unix seconds"
            case .timestampTooOld: return "webhook-timestamp is older than the tolerance window"
            case .timestampTooNew: return "webhook-timestamp is further in the future than the tolerance window"
            case .malformedSignature: return "webhook-signature has no well-formed v1 signature"
            case .signatureMismatch: return "no signature matches any active secret"
            }
        case .unknownAccount(let account): return "no customer is bound to wallet account '\(account)'"
        case .unknownCustomer(let id): return "no customer '\(id)'"
        case .customerConflict(let why): return why
        case .webhookConflict(let id, let fields):
            return
                "provider transaction '\(id)' was already received with different \(fields.joined(separator: ", ")); quarantined for an operator"
        case .payloadTooLarge(let max):
            return max > 0 ? "the request body is larger than \(max) bytes" : "the request body is larger than this endpoint accepts"
        case .notFound(let what): return what
        case .unauthorized(let why): return why
        case .forbidden(let why): return why
        case .rateLimited: return "too many requests from this address; slow down"
        case .requestTimeout(let millis): return "the request body did not arrive within \(millis) ms"
        case .disallowedHost(let host): return "host '\(host)' is not in ALLOWED_HOSTS"
        case .providerUnavailable(let why): return "the wallet provider is unavailable: \(why)"
        case .payoutNotConfirmed(let reference):
            return "the provider's payout '\(reference)' does not match this debit (account, amount or transaction id)"
        case .storeUnavailable(let why): return "the database is unavailable: \(why)"
        }
    }
}
