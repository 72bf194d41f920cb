import PKRCore

/// The gateway's persistence. Every method that changes state is one database transaction.
public protocol GatewayStore: Sendable {
    func migrate() async throws

    /// Creates a customer bound to a provider account, with a new chain address and an empty balance. Idempotent
    /// per account: the customer already bound to it is returned.
    func createCustomer(_ draft: CustomerDraft) async throws -> Customer
    func customer(email: String) async throws -> Customer?
    func customer(id: String) async throws -> Customer?
    func hasCustomers() async throws -> Bool

    /// Records a provider transaction that arrived by webhook or poll and, for a settled credit, mints it —
    /// all in one transaction. A webhook's inbound-log row is written in the same transaction.
    func apply(_ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?) async throws -> ApplyOutcome
    /// Applies one page of polled transactions; the outcomes are in the order given. SQLite applies the page in
    /// one transaction (group commit for the reconciler); PostgreSQL commits each transaction on its own so that
    /// row locks are held briefly. After a failure the cursor has not moved, so the page is read again and what
    /// was already applied comes back as duplicates.
    func applyPolled(_ txs: [ProviderTransaction]) async throws -> [ApplyOutcome]
    /// Logs a delivery that was rejected before it reached `apply`.
    func logRejectedInbound(_ inbound: InboundDraft) async throws

    /// Mints an ingested settled credit; returns the existing job if it was already minted.
    func mint(providerTxID: String) async throws -> ChainJob

    /// Holds tokens and requests a payout, replaying the original receipt for a repeated idempotency key.
    func redeem(_ command: RedeemCommand) async throws -> RedeemResult
    /// Whether the provider's payout answer for this redemption already named this debit as paid (`payoutAnswered`:
    /// its hold is burnt, or it has none), for this amount from this customer's account.
    func payoutAnswered(jobID: String, providerTxID: String, amountUnits: Int64, account: String) async throws -> Bool
    /// Redemptions made before `olderThanMicros` whose payout waits, oldest first: to be accepted by the provider
    /// (the reconciler resubmits it), or, accepted, to end (the reconciler asks the provider how it did).
    func payouts(awaiting: PendingPayout.Awaiting, olderThanMicros: Int64, limit: Int) async throws -> [PendingPayout]
    /// Records the provider's answer to a redemption's payout, burning or releasing its hold as the answer says
    /// (`Settlement.payoutAnswered`).
    func payoutAnswered(jobID: String, providerTxID: String, outcome: Payout.Outcome) async throws -> HoldOutcome

    func tokenBalanceUnits(customerID: String) async throws -> Int64
    /// Newest first; with `customerID`, both sides of that customer's jobs only.
    func ledgerEntries(customerID: String?, limit: Int, beforeID: Int64?) async throws -> [LedgerEntry]
    func externalTransactions(limit: Int, beforeID: Int64?) async throws -> [ExternalTransactionRecord]
    /// A burn and the provider transactions that settled it: its debit and any reversal credits. Nil when the id is
    /// not a burn's.
    func redemption(jobID: String) async throws -> RedemptionRows?
    func inboundLog(limit: Int, beforeID: Int64?) async throws -> [InboundRecord]
    func quarantine(limit: Int, beforeID: Int64?) async throws -> [QuarantineRecord]
    func quarantineCount() async throws -> Int

    /// Retention, one small transaction each: deletes up to `rowsMax` inbound-log rows received before `cutoff`
    /// (never one a quarantine entry points at), answering how many went.
    func pruneInbound(receivedBefore cutoff: String, rowsMax: Int) async throws -> Int
    /// Deletes up to `rowsMax` idempotency records made before `cutoff`, and forgets their keys on the burns they
    /// answered, so that the key is new again on every engine. Answers how many records went.
    func pruneIdempotencyRecords(createdBefore cutoff: String, rowsMax: Int) async throws -> Int

    /// A consistent snapshot of every figure the reconciliation needs. `.recent` reads the running totals and what
    /// is in flight, at a cost that does not grow with history; `.full` recounts every figure from the rows.
    func reconciliationSnapshot(_ scope: ReconciliationScope) async throws -> ReconciliationSnapshot
    /// Walks the hash chain in id order from `checkpoint` (genesis for the whole chain), recounting `confirming` on
    /// the way when given, and telling `progress` how many entries it has read.
    func verifyLedger(
        from checkpoint: LedgerCheckpoint, confirming: LedgerCheckpoint?, progress: @escaping @Sendable (Int) -> Void
    ) async throws -> LedgerChainVerifier
    /// Folds the running totals' pending changes where an engine appends them (PostgreSQL), so that their rows stay
    /// as few as one reconciler interval leaves.
    func compactRunningTotals() async throws
    /// The last verified prefix of the ledger (genesis until a verification stores one).
    func ledgerCheckpoint() async throws -> LedgerCheckpoint
    /// Stores a verified prefix, unless one at least as far along is already stored.
    func saveLedgerCheckpoint(_ checkpoint: LedgerCheckpoint) async throws

    /// Moves everything written so far into the main database file where the engine keeps a log beside it, so
    /// that a timed figure after a bulk load does not share the machine with the load's own checkpoint.
    func checkpoint() async throws
    /// Bytes on disk by table, its indexes included, for sizing: what each table costs per transaction.
    func bytesByTable() async throws -> [String: Int64]

    func cursor(named name: String) async throws -> Int64
    func setCursor(named name: String, to value: Int64) async throws
}

extension GatewayStore {
    /// The whole chain from genesis, confirming the stored checkpoint on the way.
    public func verifyLedger(progress: @escaping @Sendable (Int) -> Void = { _ in }) async throws -> LedgerChainVerifier {
        try await verifyLedger(from: .genesis, confirming: try await ledgerCheckpoint(), progress: progress)
    }

    public func reconciliationSnapshot() async throws -> ReconciliationSnapshot { try await reconciliationSnapshot(.full) }
}

/// How much a reconciliation rereads.
public enum ReconciliationScope: Sendable, Equatable {
    /// Running totals, the ledger after `ledgerFrom`, and what is in flight; the arrivals of the latest
    /// `arrivalsWindow` provider transactions.
    case recent(ledgerFrom: LedgerCheckpoint)
    /// Every figure recounted from the rows, and the running totals read beside them to be compared.
    case full

    public static let arrivalsWindow = 10_000
}

/// Totals the schema keeps up to date in the same transaction as each change (by triggers), so that a
/// reconciliation need not add up the whole history. `.full` recounts them.
public struct RunningTotals: Sendable, Equatable {
    public var mintedUnits: Int64
    /// Every redemption's units, including released ones.
    public var redeemedUnits: Int64
    public var releasedUnits: Int64
    public var mintJobs: Int64
    /// Credits that are settled, bound to a customer and not held for an operator: each must have one mint.
    public var mintableCredits: Int64

    public init(mintedUnits: Int64, redeemedUnits: Int64, releasedUnits: Int64, mintJobs: Int64, mintableCredits: Int64) {
        self.mintedUnits = mintedUnits
        self.redeemedUnits = redeemedUnits
        self.releasedUnits = releasedUnits
        self.mintJobs = mintJobs
        self.mintableCredits = mintableCredits
    }

    /// The names the schema stores them under.
    public static let names = ["minted_units", "redeemed_units", "released_units", "mint_jobs", "mintable_credits"]

    public init(named values: [String: Int64]) {
        self.init(
            mintedUnits: values["minted_units"] ?? 0, redeemedUnits: values["redeemed_units"] ?? 0,
            releasedUnits: values["released_units"] ?? 0, mintJobs: values["mint_jobs"] ?? 0,
            mintableCredits: values["mintable_credits"] ?? 0)
    }
}

/// A customer: bound to one provider account (where their PKR is) and one chain address (where their tokens are).
public struct Customer: Sendable, Equatable {
    public var id: String
    public var email: String
    public var displayName: String
    public var walletAccount: String
    public var chainAddress: String

    public init(id: String, email: String, displayName: String, walletAccount: String, chainAddress: String) {
        self.id = id
        self.email = email
        self.displayName = displayName
        self.walletAccount = walletAccount
        self.chainAddress = chainAddress
    }
}

/// What it takes to create a customer; the store gives the id and the chain address.
public struct CustomerDraft: Sendable, Equatable {
    public var email: String
    public var displayName: String
    public var walletAccount: String

    public init(email: String, displayName: String, walletAccount: String) {
        self.email = email
        self.displayName = displayName
        self.walletAccount = walletAccount
    }
}

/// A newest-first page of a listing: at most `limit` rows, with ids below `beforeID` when given.
public struct Page: Sendable, Equatable {
    public static let limitMax = 500

    public var limit: Int
    public var beforeID: Int64?

    public init(limit: Int, beforeID: Int64? = nil) {
        precondition((1...Self.limitMax).contains(limit), "a page is bounded")
        self.limit = limit
        self.beforeID = beforeID
    }
}

public enum ArrivalPath: String, Sendable {
    case webhook
    case poll
}

public struct ChainJob: Sendable, Equatable {
    public var id: String
    public var jobType: ChainJobType
    public var amountUnits: Int64
    public var txHash: String
    public var createdAt: String

    public init(id: String, jobType: ChainJobType, amountUnits: Int64, txHash: String, createdAt: String) {
        self.id = id
        self.jobType = jobType
        self.amountUnits = amountUnits
        self.txHash = txHash
        self.createdAt = createdAt
    }
}

/// What applying one provider transaction did.
public enum ApplyOutcome: Sendable, Equatable {
    /// New (or newly settled) credit, minted now.
    case minted(ChainJob)
    /// Recorded without a mint: a debit, a pending or failed credit, or a credit held above the mint ceiling.
    case recorded(note: String)
    /// Already known with the same content; nothing changed.
    case duplicate(jobID: String?)
    /// Known with different content; quarantined, nothing changed.
    case conflict(fields: [String])
    static func unboundNote(_ account: String) -> String {
        "recorded, not minted: no customer is bound to account \(account); bind it (POST /api/users) and mint it"
    }

    static let heldNote = "held: above the single-mint limit; an operator must review it"
    static let failedPayoutNote = "payout failed at the provider; flagged for an operator"
    static func releasedNote(_ jobID: String) -> String { "payout failed before its money left; redemption \(jobID) released" }
    static func holdEndedNote(_ jobID: String, _ state: RedemptionHold.State) -> String {
        "payout failed; redemption \(jobID) was already \(state.rawValue)"
    }
    static let unmatchedDebitNote = "debit matches no burn; flagged for reconciliation"
    public static func payoutConfirmedNote(_ jobID: String) -> String { "payout confirmed for burn \(jobID)" }

    public var code: String {
        switch self {
        case .minted: return "minted"
        case .recorded: return "recorded"
        case .duplicate: return "duplicate"
        case .conflict: return "conflict"
        }
    }

    /// Whether the inbound log keeps the delivery's body: not once the books hold what it said (recorded, minted or
    /// found again), since the transaction's row keeps every field that counts; a conflict's, which an operator
    /// diagnoses from.
    public var logKeepsBody: Bool {
        switch self {
        case .minted, .recorded, .duplicate: return false
        case .conflict: return true
        }
    }
}

/// A webhook delivery as received, before or after verification.
public struct InboundDraft: Sendable {
    public var receivedAtMicros: Int64
    public var messageID: String?
    public var webhookTimestamp: String?
    public var sourceAddress: String?
    public var scheme: WebhookScheme?
    /// "verified" or the rejection code.
    public var verification: String
    /// For a rejection: the error code answered.
    public var errorCode: String?
    public var providerTxID: String?
    public var body: [UInt8]

    public init(
        receivedAtMicros: Int64, messageID: String?, webhookTimestamp: String?, sourceAddress: String?,
        scheme: WebhookScheme?, verification: String, errorCode: String?, providerTxID: String?, body: [UInt8]
    ) {
        self.receivedAtMicros = receivedAtMicros
        self.messageID = messageID
        self.webhookTimestamp = webhookTimestamp
        self.sourceAddress = sourceAddress
        self.scheme = scheme
        self.verification = verification
        self.errorCode = errorCode
        self.providerTxID = providerTxID
        self.body = body
    }
}

public struct InboundRecord: Sendable, Codable {
    public var id: Int64
    public var received_at: String
    public var message_id: String?
    public var webhook_timestamp: String?
    public var source_address: String?
    public var scheme: String?
    public var verification: String
    public var outcome: String
    public var error: String?
    public var provider_tx_id: String?
    public var job_id: String?
    public var body_bytes: Int

    public init(
        id: Int64, received_at: String, message_id: String?, webhook_timestamp: String?, source_address: String?, scheme: String?,
        verification: String, outcome: String, error: String?, provider_tx_id: String?, job_id: String?, body_bytes: Int
    ) {
        self.id = id
        self.received_at = received_at
        self.message_id = message_id
        self.webhook_timestamp = webhook_timestamp
        self.source_address = source_address
        self.scheme = scheme
        self.verification = verification
        self.outcome = outcome
        self.error = error
        self.provider_tx_id = provider_tx_id
        self.job_id = job_id
        self.body_bytes = body_bytes
    }
}

public struct QuarantineRecord: Sendable, Codable {
    public var id: Int64
    public var inbound_id: Int64?
    public var provider_tx_id: String
    public var arrived_via: String
    public var differing_fields: [String]
    public var body: String
    public var created_at: String

    public init(
        id: Int64, inbound_id: Int64?, provider_tx_id: String, arrived_via: String, differing_fields: [String], body: String,
        created_at: String
    ) {
        self.id = id
        self.inbound_id = inbound_id
        self.provider_tx_id = provider_tx_id
        self.arrived_via = arrived_via
        self.differing_fields = differing_fields
        self.body = body
        self.created_at = created_at
    }
}

extension ExternalTransactionRecord {
    /// Why an operator should look at the transaction: its stored flag, `unbound_account` for one recorded on an
    /// account no customer held, or `payout_failed` / `payout_returned` for a payout's reversal (both derived, never
    /// stored).
    public var operatorFlag: String? {
        if let flag { return flag }
        if customerID == nil { return "unbound_account" }
        // A failed or returned payout's money back: minted like any credit, shown to an operator.
        if tx.direction == .credit, let (_, status) = tx.reference.flatMap(PayoutReversal.parse) { return "payout_\(status.rawValue)" }
        return nil
    }
}

public struct ExternalTransactionRecord: Sendable {
    public var id: Int64
    public var tx: ProviderTransaction
    /// The customer bound to the account when the transaction was recorded (or later, by a manual mint).
    public var customerID: String?
    public var recordedAt: String
    public var firstSeenVia: ArrivalPath
    public var seenViaWebhook: Bool
    public var seenViaPoll: Bool
    public var lagMicros: Int64
    public var mintJobID: String?
    public var matchedJobID: String?
    public var flag: String?

    public init(
        id: Int64, tx: ProviderTransaction, customerID: String?, recordedAt: String, firstSeenVia: ArrivalPath, seenViaWebhook: Bool,
        seenViaPoll: Bool, lagMicros: Int64, mintJobID: String?, matchedJobID: String?, flag: String?
    ) {
        self.id = id
        self.tx = tx
        self.customerID = customerID
        self.recordedAt = recordedAt
        self.firstSeenVia = firstSeenVia
        self.seenViaWebhook = seenViaWebhook
        self.seenViaPoll = seenViaPoll
        self.lagMicros = lagMicros
        self.mintJobID = mintJobID
        self.matchedJobID = matchedJobID
        self.flag = flag
    }
}

public struct RedeemCommand: Sendable {
    public var customerID: String
    public var amountUnits: Int64
    public var memo: String
    public var idempotencyKey: String?
    public var requestFingerprint: String

    public init(customerID: String, amountUnits: Int64, memo: String, idempotencyKey: String?, requestFingerprint: String) {
        precondition(amountUnits > 0, "a redeem moves a positive amount")
        self.customerID = customerID
        self.amountUnits = amountUnits
        self.memo = memo
        self.idempotencyKey = idempotencyKey
        self.requestFingerprint = requestFingerprint
    }
}

public enum RedeemResult: Sendable, Equatable {
    /// A new burn, whose payout the customer's provider account is to receive.
    case burned(BurnReceipt, walletAccount: String)
    /// A replay of an earlier request with the same key and body: its receipt, unchanged.
    case replayed(BurnReceipt)

    public var receipt: BurnReceipt {
        switch self {
        case .burned(let receipt, _), .replayed(let receipt): return receipt
        }
    }

    public var isReplay: Bool {
        if case .replayed = self { return true }
        return false
    }
}

/// What a redeem answers, now and on every replay of its idempotency key.
public struct BurnReceipt: Sendable, Equatable {
    public var jobID: String
    public var txHash: String
    public var amountUnits: Int64

    public init(jobID: String, txHash: String, amountUnits: Int64) {
        precondition(amountUnits > 0, "a burn moves a positive amount")
        self.jobID = jobID
        self.txHash = txHash
        self.amountUnits = amountUnits
    }

    public init(_ job: ChainJob) {
        precondition(job.jobType == .burn, "a burn receipt is a burn's")
        self.init(jobID: job.id, txHash: job.txHash, amountUnits: job.amountUnits)
    }

    /// The receipt as stored with its idempotency key (the seed's redeem answer, as JSON text).
    public var storedForm: String {
        JSONText.object([
            ("job_id", .string(jobID)), ("tx_hash", .string(txHash)),
            ("amount_units", .string(String(amountUnits))),
        ])
    }

    /// Reads a stored receipt back; nil for text that `storedForm` did not write.
    public init?(storedForm: String) {
        guard let value = try? JSONReader.parse(Array(storedForm.utf8)),
            case .string(let jobID)? = value["job_id"], case .string(let txHash)? = value["tx_hash"],
            case .string(let amount)? = value["amount_units"], let units = Int64(amount), units > 0
        else { return nil }
        self.init(jobID: jobID, txHash: txHash, amountUnits: units)
    }
}

public struct PendingPayout: Sendable {
    public enum Awaiting: Sendable {
        /// Requested, not yet accepted by the provider.
        case submission
        /// Accepted, its redemption still held.
        case outcome
    }

    public var jobID: String
    public var walletAccount: String
    public var amountUnits: Int64
    public var memo: String

    public init(jobID: String, walletAccount: String, amountUnits: Int64, memo: String) {
        self.jobID = jobID
        self.walletAccount = walletAccount
        self.amountUnits = amountUnits
        self.memo = memo
    }
}

/// Raw figures for the reconciliation report, all read in one transaction.
public struct ReconciliationSnapshot: Sendable {
    public var mintedUnits: Int64
    /// Redemptions accepted and not released: held ones and burnt ones.
    public var burnedUnits: Int64
    public var tokenBalanceUnits: Int64
    /// The customers' chain addresses; the redemption address is `redemptionAddressUnits`.
    public var chainStubUnits: Int64
    /// Redemptions whose tokens are held until their payout ends, and the part of that the provider has accepted.
    public var heldUnits: Int64 = 0
    public var heldSubmittedUnits: Int64 = 0
    public var redemptionAddressUnits: Int64 = 0
    /// Paid payouts that came back and were minted to their customers again, for an operator.
    public var returnedUnits: Int64 = 0
    public var settledCreditsUnminted: [String]
    /// Summed in paisa: in units, a few extreme held credits could pass Int64.
    public var heldCreditPaisa: Int64
    /// Settled credits on accounts no customer is bound to: money in the reserve that waits for an operator.
    public var unboundCreditPaisa: Int64
    public var creditsMintedMoreThanOnce: [String]
    public var payoutRequestedUnits: Int64
    public var burnsAwaitingDebit: [String]
    public var burnsWithSeveralDebits: [String]
    public var unmatchedDebits: [String]
    public var ledgerUserNetUnits: Int64
    public var latest: [ExternalTransactionRecord]
    public var arrivals: ArrivalStats
    /// The running totals as stored.
    public var runningTotals: RunningTotals?
    /// With `.full`: the running totals recounted from the rows, to be compared with the stored ones.
    public var recountedTotals: RunningTotals?

    public init(
        mintedUnits: Int64, burnedUnits: Int64, tokenBalanceUnits: Int64, chainStubUnits: Int64, settledCreditsUnminted: [String],
        heldCreditPaisa: Int64, unboundCreditPaisa: Int64, creditsMintedMoreThanOnce: [String], payoutRequestedUnits: Int64,
        burnsAwaitingDebit: [String],
        burnsWithSeveralDebits: [String], unmatchedDebits: [String], ledgerUserNetUnits: Int64, latest: [ExternalTransactionRecord],
        arrivals: ArrivalStats
    ) {
        self.mintedUnits = mintedUnits
        self.burnedUnits = burnedUnits
        self.tokenBalanceUnits = tokenBalanceUnits
        self.chainStubUnits = chainStubUnits
        self.settledCreditsUnminted = settledCreditsUnminted
        self.heldCreditPaisa = heldCreditPaisa
        self.unboundCreditPaisa = unboundCreditPaisa
        self.creditsMintedMoreThanOnce = creditsMintedMoreThanOnce
        self.payoutRequestedUnits = payoutRequestedUnits
        self.burnsAwaitingDebit = burnsAwaitingDebit
        self.burnsWithSeveralDebits = burnsWithSeveralDebits
        self.unmatchedDebits = unmatchedDebits
        self.ledgerUserNetUnits = ledgerUserNetUnits
        self.latest = latest
        self.arrivals = arrivals
    }
}

/// How provider transactions first arrived, as the database counts them (`ReconciliationReads.arrivalsSQL`).
public struct ArrivalFigures: Sendable, Equatable {
    public var webhookOnly: Int64 = 0
    /// Seen by the poll and never by a webhook.
    public var pollOnly: Int64 = 0
    public var both: Int64 = 0
    /// Nearest-rank percentiles of the lag from provider time to first sight; nil when there is no transaction.
    public var lagMicros: LagPercentiles?

    public init() {}

    public init(webhookOnly: Int64, pollOnly: Int64, both: Int64, lagMicros: LagPercentiles?) {
        self.webhookOnly = webhookOnly
        self.pollOnly = pollOnly
        self.both = both
        self.lagMicros = lagMicros
    }

    /// Counts arrivals one at a time and ranks their lags at the end: nearest rank, the lag at rank ceil(n * p / 100).
    public struct Counter: Sendable {
        private var figures = ArrivalFigures()
        private var lags: [Int64] = []

        public init() {}

        public mutating func add(webhook: Bool, poll: Bool, lagMicros: Int64) {
            if webhook && poll {
                figures.both += 1
            } else if webhook {
                figures.webhookOnly += 1
            } else {
                figures.pollOnly += 1
            }
            lags.append(max(0, lagMicros))
        }

        public var counted: ArrivalFigures {
            var counted = figures
            let sorted = lags.sorted()
            func rank(_ p: Int) -> Int64 { sorted[(sorted.count * p + 99) / 100 - 1] }
            if let last = sorted.last { counted.lagMicros = LagPercentiles(p50: rank(50), p90: rank(90), p99: rank(99), max: last) }
            return counted
        }
    }
}

public struct LagPercentiles: Sendable, Equatable {
    public var p50: Int64
    public var p90: Int64
    public var p99: Int64
    public var max: Int64

    public init(p50: Int64, p90: Int64, p99: Int64, max: Int64) {
        precondition(0 <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "percentiles rise")
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
        self.max = max
    }
}

public struct ArrivalStats: Sendable {
    public var webhookOnly: Int
    public var pollOnly: Int
    public var both: Int
    public var lagMicros: LagPercentiles?
    public var foundByPollFirst: [String]
    /// The latest provider transactions these figures cover; nil for all of them.
    public var window: Int?

    public init(_ figures: ArrivalFigures, foundByPollFirst: [String], window: Int? = nil) {
        self.window = window
        self.webhookOnly = Int(figures.webhookOnly)
        self.pollOnly = Int(figures.pollOnly)
        self.both = Int(figures.both)
        self.lagMicros = figures.lagMicros
        self.foundByPollFirst = foundByPollFirst
    }
}
