import PKRCore

/// A burn and the provider transactions that settled it, as the store holds them.
public struct RedemptionRows: Sendable {
    public var job: ChainJob
    public var customerID: String
    /// `requested` (not yet accepted by the provider), `submitted`, or `confirmed` (its debit arrived).
    public var payoutState: String
    public var payoutProviderTxID: String?
    /// The debit that took the money out of the customer's account.
    public var debit: ExternalTransactionRecord?
    /// Credits that put it back: a failed payout's or a returned one's (`<job id>:failed`, `<job id>:returned`).
    public var reversals: [ExternalTransactionRecord]
    /// The hold of the redeemed tokens; nil for a redemption accepted before holds existed (burnt at once).
    public var hold: Hold?

    public struct Hold: Sendable {
        public var state: RedemptionHold.State
        public var closedAt: String?

        public init(state: RedemptionHold.State, closedAt: String?) {
            self.state = state
            self.closedAt = closedAt
        }
    }

    public init(
        job: ChainJob, customerID: String, payoutState: String, payoutProviderTxID: String?,
        debit: ExternalTransactionRecord?, reversals: [ExternalTransactionRecord]
    ) {
        self.job = job
        self.customerID = customerID
        self.payoutState = payoutState
        self.payoutProviderTxID = payoutProviderTxID
        self.debit = debit
        self.reversals = reversals
    }
}

/// Where a redemption stands. The tokens are held when the redeem is accepted (the balance drops at once) and
/// burnt when the provider's debit pays it; a payout that ends before any money moved releases them to the customer
/// once. A payout that fails after its debit, or comes back after it was paid, is credited back to the account by
/// the provider and minted to the customer once, as any credit is.
public struct Redemption: Sendable, Equatable {
    public enum State: String, Sendable {
        /// Accepted and held; the provider has not accepted the payout yet (the reconciler resubmits it).
        case held
        /// The provider accepted the payout; its debit has not arrived.
        case submitted
        /// The money left the customer's account; the tokens are burnt.
        case paid
        /// The payout failed or was cancelled: the tokens are the customer's again.
        case released
        /// The payout was returned after it was paid: the tokens are the customer's again, and an operator is told.
        case returned
    }

    public struct Event: Sendable, Equatable {
        public var state: State
        public var at: String?
        public var providerTxID: String?
        public var mintJobID: String?
    }

    public var jobID: String
    public var customerID: String
    public var amountUnits: Int64
    public var state: State
    public var history: [Event]

    public init(_ rows: RedemptionRows) {
        jobID = rows.job.id
        customerID = rows.customerID
        amountUnits = rows.job.amountUnits
        var history = [Event(state: .held, at: rows.job.createdAt, providerTxID: nil, mintJobID: nil)]
        if rows.payoutState != "requested" {
            history.append(Event(state: .submitted, at: nil, providerTxID: rows.payoutProviderTxID, mintJobID: nil))
        }
        // Paid once its debit arrived, or once the provider's answer said so and the hold was burnt.
        if let debit = rows.debit {
            history.append(
                Event(
                    state: .paid, at: Timestamp.format(micros: debit.tx.occurredAtMicros), providerTxID: debit.tx.providerTxID,
                    mintJobID: nil))
        } else if let hold = rows.hold, hold.state == .burnt {
            history.append(Event(state: .paid, at: hold.closedAt, providerTxID: rows.payoutProviderTxID, mintJobID: nil))
        }
        if let hold = rows.hold, hold.state == .released {
            history.append(Event(state: .released, at: hold.closedAt, providerTxID: nil, mintJobID: nil))
        }
        // A reversal counts once its credit is minted: until then the tokens are not the customer's.
        for reversal in rows.reversals where reversal.mintJobID != nil {
            guard let (_, status) = reversal.tx.reference.flatMap(PayoutReversal.parse) else { continue }
            history.append(
                Event(
                    state: status == .returned ? .returned : .released, at: Timestamp.format(micros: reversal.tx.occurredAtMicros),
                    providerTxID: reversal.tx.providerTxID, mintJobID: reversal.mintJobID))
        }
        self.history = history
        state = history.last!.state
    }
}

extension Gateway {
    /// A redemption by its burn's job id; nil for an unknown one.
    public func redemption(jobID: String) async throws -> Redemption? {
        try await store.redemption(jobID: jobID).map(Redemption.init)
    }
}
