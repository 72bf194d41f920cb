import PKRCore

/// A provider transaction to record, as the gateway first saw it.
public struct TransactionDraft: Sendable {
    public var tx: ProviderTransaction
    /// Nil when no customer is bound to the account.
    public var customerID: String?
    public var path: ArrivalPath
    public var recordedAtMicros: Int64
    /// `recordedAtMicros` as text, formatted once.
    public var recordedAt: String

    /// The record the row holds once written under `id`.
    func record(id: Int64) -> ExternalTransactionRecord {
        ExternalTransactionRecord(
            id: id, tx: tx, customerID: customerID, recordedAt: recordedAt, firstSeenVia: path,
            seenViaWebhook: path == .webhook, seenViaPoll: path == .poll,
            lagMicros: recordedAtMicros - tx.occurredAtMicros, mintJobID: nil, matchedJobID: nil, flag: nil)
    }
}

/// Why a recorded transaction waits for an operator (the `flag` column).
public enum TransactionFlag: String, Sendable {
    case aboveMintLimit = "above_mint_limit"
    case failedPayout = "failed_payout"
    case unmatchedDebit = "unmatched_debit"
}

/// An operation on the chain: a mint, a hold of redeemed tokens, their burn or their release.
public struct ChainTransfer: Sendable {
    public var op: ChainOperation
    public var address: String
    public var amountUnits: Int64
    /// The job that asked for it.
    public var reference: String
    public var createdAt: String
    public var nowMicros: Int64
}

/// A chain job row: a mint of a recorded credit, or a burn whose payout is requested.
public struct JobRow: Sendable {
    public var job: ChainJob
    public var customerID: String
    /// A mint's credit: its row id and provider id.
    public var creditRowID: Int64?
    public var creditProviderTxID: String?
    public var idempotencyKey: String?
    public var memo: String

    /// A burn starts with its payout requested; a mint has no payout.
    public var payoutState: String? { job.jobType == .burn ? "requested" : nil }
}

/// A redemption's hold: the redeemed tokens wait at the redemption address until the payout ends, then are burnt
/// (paid) or moved back to the customer (failed). A redemption accepted before holds existed has none: it was
/// burnt when it was accepted.
public struct RedemptionHold: Sendable, Equatable {
    public enum State: String, Sendable {
        case held
        case burnt
        case released
    }

    public var jobID: String
    public var customerID: String
    /// The customer's chain address, where a release sends the tokens back.
    public var chainAddress: String
    public var amountUnits: Int64
    public var state: State

    public init(jobID: String, customerID: String, chainAddress: String, amountUnits: Int64, state: State) {
        precondition(amountUnits > 0 && amountUnits % Money.unitsPerPaisa == 0, "a hold is a whole number of paisa")
        self.jobID = jobID
        self.customerID = customerID
        self.chainAddress = chainAddress
        self.amountUnits = amountUnits
        self.state = state
    }

    /// The chain receipts of a hold's end are referenced by the job id and what ended it, one each.
    public static func burnReference(jobID: String) -> String { jobID + ":burn" }
    public static func releaseReference(jobID: String) -> String { jobID + ":release" }
}

/// What a payout's answer did to its redemption's hold.
public enum HoldOutcome: Sendable, Equatable {
    /// The payout has not ended: the tokens stay held.
    case held
    /// Paid: the held tokens were burnt now.
    case burnt
    /// Ended before any money moved: the tokens are the customer's again.
    case released
    /// The hold had already ended (`state`) by an earlier answer or debit: nothing changed.
    case alreadyEnded(RedemptionHold.State)
    /// The redemption has no hold (accepted before holds existed, or unknown).
    case noHold
}

/// A job's postings, to be chained after the ledger head.
public struct LedgerAppend: Sendable {
    public var refType: ChainJobType
    public var refID: String
    public var customerID: String
    public var amountUnits: Int64
    public var createdAt: String

    public init(refType: ChainJobType, refID: String, customerID: String, amountUnits: Int64, createdAt: String) {
        self.refType = refType
        self.refID = refID
        self.customerID = customerID
        self.amountUnits = amountUnits
        self.createdAt = createdAt
    }

    /// The entries of `appends`, in order, chained after `head`, and the head after the last of them. Engines store
    /// what this computes; the posting rules and the hash are the core's.
    public static func entries(after head: LedgerHead, _ appends: [LedgerAppend]) -> (entries: [LedgerEntry], head: LedgerHead) {
        precondition(!appends.isEmpty, "an append posts at least one job")
        var head = head
        var entries: [LedgerEntry] = []
        entries.reserveCapacity(appends.count * 2)
        for append in appends {
            for posting in PostingRules.postings(for: append.refType, amountUnits: append.amountUnits) {
                let entry = LedgerEntry.next(
                    after: head, userID: posting.account == .userToken ? append.customerID : nil,
                    posting: posting, refType: append.refType, refID: append.refID,
                    createdAt: append.createdAt)
                entries.append(entry)
                head = LedgerHead(entry)
            }
        }
        return (entries, head)
    }
}

/// A request's claim on its idempotency key (IETF httpapi idempotency-key semantics).
public struct IdempotencyClaim: Sendable {
    public enum Result: Sendable, Equatable {
        /// The key is this request's until its transaction ends.
        case claimed
        /// An earlier request holds the key: its fingerprint, and its answer unless it is still being served.
        case taken(fingerprint: String, answer: BurnReceipt?)
    }

    public static let redeemEndpoint = "POST /api/redeem"

    public var customerID: String
    public var endpoint: String
    public var key: String
    public var fingerprint: String
    public var createdAt: String
}

/// A webhook delivery's inbound-log row.
public struct InboundRow: Sendable {
    public var draft: InboundDraft
    /// `ApplyOutcome.code`, or "rejected".
    public var outcome: String
    public var errorCode: String?
    public var jobID: String?
    /// `ApplyOutcome.logKeepsBody`; a rejected delivery's body is kept.
    public var keepsBody: Bool

    public init(draft: InboundDraft, outcome: ApplyOutcome, errorCode: String?, jobID: String?) {
        self.draft = draft
        self.outcome = outcome.code
        self.errorCode = errorCode
        self.jobID = jobID
        self.keepsBody = outcome.logKeepsBody
    }

    private init(rejected draft: InboundDraft) {
        self.draft = draft
        self.outcome = "rejected"
        self.errorCode = draft.errorCode
        self.jobID = nil
        self.keepsBody = true
    }

    public static func rejected(_ draft: InboundDraft) -> InboundRow { InboundRow(rejected: draft) }

    public var keptBody: [UInt8]? { keepsBody ? draft.body : nil }
}

/// A conflicting transaction kept for an operator, with the bytes it arrived as.
public struct QuarantineRow: Sendable {
    public var inboundID: Int64?
    public var providerTxID: String
    public var via: ArrivalPath
    public var differingFields: [String]
    public var body: [UInt8]
    public var createdAt: String
}

/// What the flows need besides their input: the time of the change and the money ceilings.
public struct SettlementContext: Sendable {
    public let nowMicros: Int64
    public let limits: MoneyLimits
    /// `nowMicros` as text, the time every row of the change is stamped with.
    public let createdAt: String

    public init(nowMicros: Int64, limits: MoneyLimits) {
        self.nowMicros = nowMicros
        self.limits = limits
        self.createdAt = Timestamp.format(micros: nowMicros)
    }
}
