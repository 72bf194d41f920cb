import PKRCore
import ServiceLifecycle

/// The simulated provider's own store, behind its HTTP API (`ProviderRouter`) and never called by the gateway: the
/// gateway reaches the provider only through `WalletProvider` over HTTP. One implementation per database engine.
public protocol WalletStubStore: Sendable {
    /// Opens an account; false when it was already open.
    @discardableResult func openAccount(_ accountNo: String) async throws -> Bool
    func account(_ accountNo: String) async throws -> ProviderAccount?
    /// A deposit arrives at the provider; with push on, its webhook is queued in the same transaction.
    func credit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction
    /// Deposits whose webhooks are lost: recorded in one transaction and never pushed, so that only the polling
    /// reconciler finds them; they happened a millisecond apart, ending now. For bulk loads (`pkr bench`) and tests
    /// of the fallback.
    func recordUnannouncedDeposits(account: String, amountsPaisa: [Int64], memo: String) async throws
    /// The listing, oldest first; `limit` may be one more than a page to learn whether more follow.
    func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage
    /// Makes a payout once per idempotency key, in one transaction with its debit and webhook. A replay of the same
    /// request answers the first payout (`replayed`); the key with another request, or the reference under another
    /// key, is refused. `failing` (a test control) makes a new payout fail: refused with no debit, or after its
    /// debit, whose money is then credited back with a reversal in the same transaction.
    func payout(_ request: PayoutRequest, failing: PayoutFailure?, pending: Bool) async throws -> (payout: Payout, replayed: Bool)
    /// Moves a payout along its lifecycle (`PayoutStatus.canMove`): a change of its debit's status (settled when
    /// paid, failed when it fails or is cancelled, its money back on the account) is a new entry on the listing and
    /// a webhook, in one transaction.
    func advancePayout(id: String, to status: PayoutStatus, failureCode: PayoutFailureCode?) async throws -> Payout
    /// A paid payout comes back (the receiving bank returned it): the money is credited back with a reversal, in one
    /// transaction with its webhook.
    func returnPayout(id: String) async throws -> Payout
    func payout(id: String) async throws -> Payout?
    func payout(reference: String) async throws -> Payout?
    func balancePaisa(account: String) async throws -> Int64?
    /// The sum of all wallet balances: the PKR reserve backing the token supply.
    func reservePaisa() async throws -> Int64
}

/// The provider stub run in this process (demo mode): its store, its webhook outbox, its test controls, and the
/// loopback listener through which the gateway reaches it.
public struct LocalProvider: Sendable {
    public let store: any WalletStubStore
    public let outbox: any OutboxStore
    public let controls: ProviderControls
    /// Wakes its webhook dispatcher when a write queued a delivery.
    package let dispatchSignal: WakeSignal
    /// Its HTTP listener, to run beside whatever uses the gateway.
    public let listener: any Service

    package init(
        store: any WalletStubStore, outbox: any OutboxStore, controls: ProviderControls, dispatchSignal: WakeSignal,
        listener: any Service
    ) {
        self.store = store
        self.outbox = outbox
        self.controls = controls
        self.dispatchSignal = dispatchSignal
        self.listener = listener
    }
}

extension WalletStubStore {
    /// A payout that does not fail on purpose.
    public func payout(_ request: PayoutRequest) async throws -> (payout: Payout, replayed: Bool) {
        try await payout(request, failing: nil, pending: false)
    }

    /// A payout settled at once, or failed as `failing` says.
    public func payout(_ request: PayoutRequest, failing: PayoutFailure?) async throws -> (payout: Payout, replayed: Bool) {
        try await payout(request, failing: failing, pending: false)
    }
}

public struct ProviderAccount: Sendable, Equatable {
    public var accountNo: String
    public var balancePaisa: Int64
    public var createdAtMicros: Int64

    public init(accountNo: String, balancePaisa: Int64, createdAtMicros: Int64) {
        self.accountNo = accountNo
        self.balancePaisa = balancePaisa
        self.createdAtMicros = createdAtMicros
    }
}

public enum ProviderLimits {
    /// The largest page of the transaction listing.
    public static let pageSizeMax = 1000
}

/// The wallet stub's webhook outbox, drained by the dispatcher.
public protocol OutboxStore: Sendable {
    /// Claims due deliveries under a lease so that two dispatchers never send the same attempt at once.
    func claimDue(nowMicros: Int64, limit: Int) async throws -> [OutboxDelivery]
    /// Records a batch's attempts and what follows each, in one transaction.
    func recordAttempts(_ attempts: [OutboxAttempt]) async throws
    /// An operator's redelivery: due now with a fresh retry schedule. False if the id is unknown.
    func redeliver(id: Int64, nowMicros: Int64) async throws -> Bool
    /// When the next pending delivery falls due, so the dispatcher can sleep exactly that long.
    func nextDueMicros() async throws -> Int64?
    func list(limit: Int, beforeID: Int64?, state: String?) async throws -> [DeliveryView]
    func attempts(deliveryID: Int64) async throws -> [AttemptView]?
    func countByState() async throws -> [String: Int]
    /// Retention: deletes up to `rowsMax` deliveries delivered before `cutoff`, with their attempts, in one
    /// transaction. Pending and dead deliveries are kept whatever their age.
    func pruneDelivered(deliveredBefore cutoff: String, rowsMax: Int) async throws -> (deliveries: Int, attempts: Int)
}

public enum OutboxLimits {
    public static let listLimitMax = 500
    /// How long a claimed delivery is hidden from other dispatchers; a crash mid-send is retried after it.
    public static let leaseMicros: Int64 = 30 * Timestamp.microsPerSecond
}

public struct OutboxDelivery: Sendable {
    public var id: Int64
    public var messageID: String
    public var providerTxID: String
    public var payload: [UInt8]
    /// Attempts made since the delivery was created or last redelivered by an operator.
    public var roundAttempts: Int

    public init(id: Int64, messageID: String, providerTxID: String, payload: [UInt8], roundAttempts: Int) {
        self.id = id
        self.messageID = messageID
        self.providerTxID = providerTxID
        self.payload = payload
        self.roundAttempts = roundAttempts
    }
}

/// One attempt of a claimed delivery: what the receiver answered, and what happens next.
public struct OutboxAttempt: Sendable {
    public var delivery: OutboxDelivery
    public var httpStatus: Int?
    public var error: String?
    public var durationMicros: Int64
    public var outcome: AttemptOutcome
    public var finishedAtMicros: Int64

    public init(
        delivery: OutboxDelivery, httpStatus: Int?, error: String?, durationMicros: Int64, outcome: AttemptOutcome,
        finishedAtMicros: Int64
    ) {
        self.delivery = delivery
        self.httpStatus = httpStatus
        self.error = error
        self.durationMicros = durationMicros
        self.outcome = outcome
        self.finishedAtMicros = finishedAtMicros
    }
}

public enum AttemptOutcome: Sendable {
    case delivered
    case retry(atMicros: Int64)
    case dead
}

public struct DeliveryView: Sendable, Codable {
    public var id: Int64
    public var message_id: String
    public var provider_tx_id: String
    public var state: String
    public var attempts: Int
    public var next_attempt_at: String?
    public var last_http_status: Int?
    public var last_error: String?
    public var created_at: String
    public var delivered_at: String?

    public init(
        id: Int64, message_id: String, provider_tx_id: String, state: String, attempts: Int, next_attempt_at: String?,
        last_http_status: Int?, last_error: String?, created_at: String, delivered_at: String?
    ) {
        self.id = id
        self.message_id = message_id
        self.provider_tx_id = provider_tx_id
        self.state = state
        self.attempts = attempts
        self.next_attempt_at = next_attempt_at
        self.last_http_status = last_http_status
        self.last_error = last_error
        self.created_at = created_at
        self.delivered_at = delivered_at
    }
}

public struct AttemptView: Sendable, Codable {
    public var attempt_no: Int
    public var attempted_at: String
    public var http_status: Int?
    public var error: String?
    public var duration_ms: String

    public init(attempt_no: Int, attempted_at: String, http_status: Int?, error: String?, duration_ms: String) {
        self.attempt_no = attempt_no
        self.attempted_at = attempted_at
        self.http_status = http_status
        self.error = error
        self.duration_ms = duration_ms
    }
}

/// The outbox on SQLite: rows are enqueued with the transaction they announce.
