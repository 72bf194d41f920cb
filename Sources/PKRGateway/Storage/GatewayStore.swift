import PKRCore

/// The gateway's persistence. Every method that changes state is one database transaction.
public protocol GatewayStore: Sendable {
    func migrate() async throws

    /// Creates the demo user (idempotent) linked to a wallet account and a chain address.
    func seedDemoUser(walletAccount: String) async throws -> DemoUser
    func demoUser() async throws -> DemoUser?

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

    /// Burns tokens and requests a payout, replaying the original response for a repeated idempotency key.
    func redeem(_ command: RedeemCommand) async throws -> RedeemResult
    func markPayoutSubmitted(jobID: String, providerTxID: String) async throws
    /// Burns whose payout was requested but not yet accepted by the provider, oldest first.
    func payoutsAwaitingSubmission(olderThanMicros: Int64, limit: Int) async throws -> [PendingPayout]

    func tokenBalanceUnits(userID: String) async throws -> Int64
    func ledgerEntries(limit: Int, beforeID: Int64?) async throws -> [LedgerEntry]
    func externalTransactions(limit: Int, beforeID: Int64?) async throws -> [ExternalTransactionRecord]
    func inboundLog(limit: Int, beforeID: Int64?) async throws -> [InboundRecord]
    func quarantine(limit: Int, beforeID: Int64?) async throws -> [QuarantineRecord]

    /// A consistent snapshot of every figure the reconciliation needs.
    func reconciliationSnapshot() async throws -> ReconciliationSnapshot
    /// Walks the whole hash chain in id order.
    func verifyLedger() async throws -> LedgerChainVerifier

    func cursor(named name: String) async throws -> Int64
    func setCursor(named name: String, to value: Int64) async throws
}

public struct DemoUser: Sendable, Equatable {
    public var id: String
    public var email: String
    public var displayName: String
    public var walletAccount: String
    public var chainAddress: String
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
    /// A polled transaction for an account no user is linked to; skipped.
    case ignoredUnknownAccount

    static let heldNote = "held: above the single-mint limit; an operator must review it"
    static let failedPayoutNote = "payout failed at the provider; flagged for an operator"
    static let unmatchedDebitNote = "debit matches no burn; flagged for reconciliation"
    static func payoutConfirmedNote(_ jobID: String) -> String { "payout confirmed for burn \(jobID)" }

    public var code: String {
        switch self {
        case .minted: return "minted"
        case .recorded: return "recorded"
        case .duplicate: return "duplicate"
        case .conflict: return "conflict"
        case .ignoredUnknownAccount: return "ignored"
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

    public init(receivedAtMicros: Int64, messageID: String?, webhookTimestamp: String?, sourceAddress: String?,
                scheme: WebhookScheme?, verification: String, errorCode: String?, providerTxID: String?, body: [UInt8]) {
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
}

public struct QuarantineRecord: Sendable, Codable {
    public var id: Int64
    public var inbound_id: Int64?
    public var provider_tx_id: String
    public var arrived_via: String
    public var differing_fields: [String]
    public var body: String
    public var created_at: String
}

public struct ExternalTransactionRecord: Sendable {
    public var id: Int64
    public var tx: ProviderTransaction
    public var recordedAt: String
    public var firstSeenVia: ArrivalPath
    public var seenViaWebhook: Bool
    public var seenViaPoll: Bool
    public var lagMicros: Int64
    public var mintJobID: String?
    public var matchedJobID: String?
    public var flag: String?
}

public struct RedeemCommand: Sendable {
    public var userID: String
    public var amountUnits: Int64
    public var memo: String
    public var idempotencyKey: String?
    public var requestFingerprint: String

    public init(userID: String, amountUnits: Int64, memo: String, idempotencyKey: String?, requestFingerprint: String) {
        self.userID = userID
        self.amountUnits = amountUnits
        self.memo = memo
        self.idempotencyKey = idempotencyKey
        self.requestFingerprint = requestFingerprint
    }
}

public enum RedeemResult: Sendable {
    /// A new burn; `responseBody` is what the client gets now and on every replay.
    case burned(ChainJob, walletAccount: String, responseBody: String)
    /// A replay of an earlier request with the same key and body.
    case replayed(status: Int, responseBody: String)
}

extension RedeemResult {
    /// The seed's redeem answer; stored with the idempotency key so a replay returns it byte for byte.
    static func responseBody(_ job: ChainJob) -> String {
        JSONText.object([("job_id", .string(job.id)), ("tx_hash", .string(job.txHash)),
                         ("amount_units", .string(String(job.amountUnits)))])
    }
}

public struct PendingPayout: Sendable {
    public var jobID: String
    public var walletAccount: String
    public var amountUnits: Int64
    public var memo: String
}

/// Raw figures for the reconciliation report, all read in one transaction.
public struct ReconciliationSnapshot: Sendable {
    public var mintedUnits: Int64
    public var burnedUnits: Int64
    public var tokenBalanceUnits: Int64
    public var chainStubUnits: Int64
    public var settledCreditsUnminted: [String]
    /// Summed in paisa: in units, a few extreme held credits could pass Int64.
    public var heldCreditPaisa: Int64
    public var creditsMintedMoreThanOnce: [String]
    public var payoutRequestedUnits: Int64
    public var burnsAwaitingDebit: [String]
    public var burnsWithSeveralDebits: [String]
    public var unmatchedDebits: [String]
    public var ledgerUserNetUnits: Int64
    public var latest: [ExternalTransactionRecord]
    public var arrivals: ArrivalStats
}

public struct ArrivalStats: Sendable {
    public var webhookOnly: Int
    public var pollOnly: Int
    public var both: Int
    /// Lags from provider time to first sight, sorted ascending.
    public var lagsMicros: [Int64]
    public var foundByPollFirst: [String]
}
