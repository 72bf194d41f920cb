/// What the gateway needs from a wallet provider, which is another system: the gateway reaches it only through an
/// implementation of this over HTTP (`HTTPWalletProvider`), never by a function call into the provider's store.
public protocol WalletProvider: Sendable {
    /// Opens an account (idempotent).
    func openAccount(_ accountNo: String) async throws
    /// A customer pays PKR in: the demo's deposit, which the provider then announces by webhook.
    func deposit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction
    /// Transactions that occurred at or after `sinceMicros`, in provider order, after `cursor` (exclusive).
    func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage
    /// Pays PKR out of a wallet. Idempotent per `request.idempotencyKey`: asking again with the same key and request
    /// answers the same payout.
    func payout(_ request: PayoutRequest) async throws -> Payout
    /// The payout made under a reference, if any: how an unknown outcome is resolved without a new key.
    func payout(reference: String) async throws -> Payout?
    /// The sum of all wallet balances: the PKR reserve backing the token supply.
    func reservePaisa() async throws -> Int64
}

public struct ProviderPage: Sendable {
    public var transactions: [ProviderTransaction]
    /// Pass back as `cursor` to continue; equal to the input cursor when nothing new was found.
    public var nextCursor: Int64
    /// Each transaction's own cursor, where the store knows them (the provider's side); empty otherwise.
    public var cursors: [Int64]

    public init(transactions: [ProviderTransaction], nextCursor: Int64, cursors: [Int64] = []) {
        precondition(cursors.isEmpty || cursors.count == transactions.count, "one cursor per transaction")
        self.transactions = transactions
        self.nextCursor = nextCursor
        self.cursors = cursors
    }
}

public struct PayoutRequest: Sendable, Equatable {
    public var account: String
    public var amountPaisa: Int64
    public var memo: String
    /// The gateway's redemption this pays; unique at the provider.
    public var reference: String
    public var idempotencyKey: String

    public init(account: String, amountPaisa: Int64, memo: String, reference: String, idempotencyKey: String) {
        precondition(amountPaisa > 0, "a payout moves a positive amount")
        self.account = account
        self.amountPaisa = amountPaisa
        self.memo = memo
        self.reference = reference
        self.idempotencyKey = idempotencyKey
    }

    /// The key a redemption's payout is made under: derived from the redemption, so every retry, by any instance,
    /// after any restart, sends the same one.
    public static func idempotencyKey(reference: String) -> String { "payout-" + reference }

    /// What makes two requests under one key the same request.
    public var fingerprint: String {
        IdempotencyKey.fingerprint([account, String(amountPaisa), memo, reference])
    }
}

public enum PayoutStatus: String, Sendable, Codable, CaseIterable {
    case pending
    case processing
    case paid
    case returned
    case failed
    case canceled
}

extension Payout {
    /// What a payout's state means for the redemption it pays.
    public enum Outcome: Sendable, Equatable {
        /// Not ended yet: the tokens stay held.
        case inFlight
        /// The money left the account (paid, or failed or returned after its debit, when the provider credits it back
        /// and that credit is minted): the held tokens are burnt.
        case debited
        /// Ended without the money leaving the account (refused, or cancelled while pending): the held tokens go
        /// back to the customer.
        case endedBeforeDebit
    }

    /// A payout that failed after its debit settled is credited back by a reversal; one whose debit was still
    /// pending (or that never had one) simply ended, its debit failed with it.
    public var outcome: Outcome {
        switch status {
        case .pending, .processing: return .inFlight
        case .paid, .returned: return .debited
        case .failed, .canceled: return reversalProviderTxID == nil ? .endedBeforeDebit : .debited
        }
    }
}

extension PayoutStatus {
    /// The lifecycle: `pending` → `processing` → `paid` (→ `returned`), `failed` from `pending` or `processing`, and
    /// `canceled` while `pending`.
    public func canMove(to next: PayoutStatus) -> Bool {
        switch (self, next) {
        case (.pending, .processing), (.pending, .paid), (.pending, .failed), (.pending, .canceled): return true
        case (.processing, .paid), (.processing, .failed): return true
        case (.paid, .returned): return true
        default: return false
        }
    }

    /// The status of the payout's debit on the listing while the payout is in this status.
    public var debitStatus: TransactionStatus {
        switch self {
        case .pending, .processing: return .pending
        case .paid, .returned: return .settled
        case .failed, .canceled: return .failed
        }
    }
}

public struct Payout: Sendable, Equatable {
    public var id: String
    public var status: PayoutStatus
    public var account: String
    public var amountPaisa: Int64
    public var memo: String
    public var reference: String
    public var failureCode: String?
    /// The debit on the account's transaction listing, once the money has left it.
    public var providerTxID: String?
    /// The credit that put the money back on the account when the payout failed or was returned.
    public var reversalProviderTxID: String?
    public var createdAtMicros: Int64
    public var updatedAtMicros: Int64

    public init(
        id: String, status: PayoutStatus, account: String, amountPaisa: Int64, memo: String, reference: String,
        failureCode: String?, providerTxID: String?, reversalProviderTxID: String? = nil, createdAtMicros: Int64,
        updatedAtMicros: Int64
    ) {
        precondition(amountPaisa > 0, "a payout moves a positive amount")
        self.id = id
        self.status = status
        self.account = account
        self.amountPaisa = amountPaisa
        self.memo = memo
        self.reference = reference
        self.failureCode = failureCode
        self.providerTxID = providerTxID
        self.reversalProviderTxID = reversalProviderTxID
        self.createdAtMicros = createdAtMicros
        self.updatedAtMicros = updatedAtMicros
    }
}

/// Why a payout failed, as providers report it.
public enum PayoutFailureCode: String, Sendable, CaseIterable {
    case accountClosed = "account_closed"
    case invalidAccount = "invalid_account"
    case limitExceeded = "limit_exceeded"
    case railRejected = "rail_rejected"
}

/// How a payout is to fail (a provider stub's test control): refused before any money moves, or after its debit,
/// when the provider credits the money back with a reversal.
public struct PayoutFailure: Sendable, Equatable {
    public var code: PayoutFailureCode
    public var afterDebit: Bool

    public init(code: PayoutFailureCode, afterDebit: Bool) {
        self.code = code
        self.afterDebit = afterDebit
    }
}

/// A payout's money coming back: when a payout fails after its debit, or is returned after it was paid, the
/// provider credits the account with a reversal whose reference is the payout's reference and the outcome
/// (`<reference>:failed`, `<reference>:returned`), so that the gateway can tell it from a deposit.
public enum PayoutReversal {
    public static func reference(payoutReference: String, status: PayoutStatus) -> String {
        precondition(status == .failed || status == .returned, "only a failed or returned payout is reversed")
        return payoutReference + ":" + status.rawValue
    }

    /// The payout reference and outcome a reversal credit names, or nil for any other reference.
    public static func parse(_ reference: String) -> (payoutReference: String, status: PayoutStatus)? {
        guard let colon = reference.lastIndex(of: ":") else { return nil }
        let payoutReference = String(reference[..<colon])
        guard !payoutReference.isEmpty, let status = PayoutStatus(rawValue: String(reference[reference.index(after: colon)...])),
            status == .failed || status == .returned
        else { return nil }
        return (payoutReference, status)
    }
}

public enum ProviderError: Error, Equatable, Sendable {
    case unknownAccount(String)
    case insufficientFunds(account: String)
    /// The reference is already paid under another idempotency key.
    case referenceConflict(String)
    /// The idempotency key was used before with another request.
    case idempotencyKeyReused(String)
    /// A request with this idempotency key is still being served.
    case requestInFlight(String)
    case corruptRow(String)
    /// The provider could not be reached or kept failing; what it did, if anything, is unknown.
    case unavailable(String)
    /// The provider refused the request as malformed: a bug on one side of the wire.
    case rejected(status: Int, code: String)
    case unknownPayout(String)
    /// The payout is not in a state that allows this (only a paid payout can be returned).
    case payoutState(id: String, status: PayoutStatus)
}
