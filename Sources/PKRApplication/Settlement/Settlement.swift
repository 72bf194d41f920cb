import PKRCore

/// The settlement rules, written once for every engine: what a provider transaction does when it arrives, how a
/// credit is minted, how a redemption burns, and what the inbound log keeps. `SettlementPolicy` (the core) says
/// what a transaction means; these flows say which rows change, in which order. An engine runs a flow inside one
/// of its transactions (`Flow.run`); its fast paths (SQLite's group commit, PostgreSQL's batch and burn
/// functions) are pinned to these flows by tests.
public enum Settlement {
    // MARK: - A provider transaction arrives

    /// Records a transaction that arrived by webhook or poll and carries out what its status asks (a settled credit
    /// mints); a webhook's inbound-log row, and a conflict's quarantine row, are written in the same transaction.
    public static func apply(
        _ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?,
        _ context: SettlementContext
    ) throws -> Flow<ApplyOutcome> {
        try arrive(tx, via: path, context).then { outcome in log(outcome, of: tx, via: path, inbound: inbound, context) }
    }

    /// Most arrivals are new: they are recorded at once, and the provider id's unique key turns a known one away
    /// without writing, to be classified against what is recorded. The customer is looked up first because the row
    /// names them; a transaction on an account no customer is bound to is recorded without one (unbound).
    static func arrive(_ tx: ProviderTransaction, via path: ArrivalPath, _ context: SettlementContext) -> Flow<ApplyOutcome> {
        .findCustomer(walletAccount: tx.account) { customer in
            let draft = TransactionDraft(
                tx: tx, customerID: customer?.id, path: path, recordedAtMicros: context.nowMicros,
                recordedAt: context.createdAt)
            return .recordTransaction(draft) { rowID in
                guard let rowID else { return known(tx, via: path, customer: customer, context) }
                return try settle(draft.record(id: rowID), customer: customer, context)
            }
        }
    }

    /// A transaction whose id is already recorded.
    static func known(
        _ tx: ProviderTransaction, via path: ArrivalPath, customer: Customer?,
        _ context: SettlementContext
    ) -> Flow<ApplyOutcome> {
        .findTransaction(tx.providerTxID) { existing in
            let arrival = SettlementPolicy.classify(recorded: existing?.tx, incoming: tx)
            // A known id with different content is a conflict whatever account it names.
            if case .conflict(let fields) = arrival { return .done(.conflict(fields: fields)) }
            guard let existing else {
                // The insert was turned away by a row that a concurrent writer then rolled back.
                throw GatewayError.storeUnavailable("provider transaction \(tx.providerTxID) vanished; retry")
            }
            return .write(.markSeen(rowID: existing.id, via: path)) {
                guard case .advance(let status) = arrival else {
                    return .done(.duplicate(jobID: existing.mintJobID ?? existing.matchedJobID))
                }
                return .write(.setStatus(rowID: existing.id, status)) {
                    var advanced = existing
                    advanced.tx.status = status
                    return try settle(advanced, customer: customer, context)
                }
            }
        }
    }

    /// Carries out what the transaction's current status asks for. A credit on an unbound account waits, recorded,
    /// until an operator binds the account to a customer and mints it.
    static func settle(
        _ record: ExternalTransactionRecord, customer: Customer?,
        _ context: SettlementContext
    ) throws -> Flow<ApplyOutcome> {
        switch try SettlementPolicy.action(for: record.tx, maxMintUnits: context.limits.maxMintUnits) {
        case .mint(let units):
            guard let customer else { return .done(.recorded(note: ApplyOutcome.unboundNote(record.tx.account))) }
            return try mint(record, customer: customer, amountUnits: units, context).map { .minted($0) }
        case .holdAboveLimit:
            guard customer != nil else { return .done(.recorded(note: ApplyOutcome.unboundNote(record.tx.account))) }
            return .write(.flag(rowID: record.id, .aboveMintLimit)) { .done(.recorded(note: ApplyOutcome.heldNote)) }
        case .matchPayout:
            return try matchDebit(record, context)
        case .releasePayout:
            return try releaseFailedDebit(record, context)
        case .none:
            return .done(.recorded(note: "recorded; nothing to mint while \(record.tx.status.rawValue)"))
        }
    }

    /// A settled debit is the payout of a redemption, named by its reference or by the provider id the payout was
    /// given: it pays the redemption, whose held tokens are burnt now. A debit nobody asked for is never paired: money
    /// left the reserve without a redemption, so it is flagged, as is the payout of a redemption already released.
    static func matchDebit(_ record: ExternalTransactionRecord, _ context: SettlementContext) throws -> Flow<ApplyOutcome> {
        try redemption(paidBy: record, orFlag: .unmatchedDebit, note: ApplyOutcome.unmatchedDebitNote) { jobID, hold, flagged in
            if hold?.state == .released { return flagged }
            return .write(.confirmPayout(rowID: record.id, burnJobID: jobID, providerTxID: record.tx.providerTxID)) {
                // A redemption accepted before holds existed was burnt then; it has no hold to burn.
                guard let hold, hold.state == .held else { return .done(.recorded(note: ApplyOutcome.payoutConfirmedNote(jobID))) }
                return try burnHeld(hold, context).map { .recorded(note: ApplyOutcome.payoutConfirmedNote(jobID)) }
            }
        }
    }

    /// A payout's debit that failed before the money left (the payout failed or was cancelled while pending) releases
    /// its redemption's hold. One that names no held redemption is flagged for an operator.
    static func releaseFailedDebit(_ record: ExternalTransactionRecord, _ context: SettlementContext) throws -> Flow<ApplyOutcome> {
        try redemption(paidBy: record, orFlag: .failedPayout, note: ApplyOutcome.failedPayoutNote) { jobID, hold, flagged in
            guard let hold else { return flagged }
            guard hold.state == .held else { return .done(.recorded(note: ApplyOutcome.holdEndedNote(jobID, hold.state))) }
            // The provider had accepted the payout (it listed its debit), though its answer may never have arrived.
            return .write(.markPayoutSubmitted(jobID: jobID, providerTxID: record.tx.providerTxID)) {
                try release(hold, context).map { _ in .recorded(note: ApplyOutcome.releasedNote(jobID)) }
            }
        }
    }

    /// The redemption a payout's debit names (by reference or by the provider id its payout was given, for its
    /// amount, not yet paired with another debit) and its hold, locked; a debit that names none is flagged.
    static func redemption(
        paidBy record: ExternalTransactionRecord, orFlag flag: TransactionFlag, note: String,
        _ body: @escaping (_ jobID: String, _ hold: RedemptionHold?, _ flagged: Flow<ApplyOutcome>) throws -> Flow<ApplyOutcome>
    ) throws -> Flow<ApplyOutcome> {
        let tx = record.tx
        let units = try Money.paisaToUnits(tx.amountPaisa)
        let flagged: Flow<ApplyOutcome> = .write(.flag(rowID: record.id, flag)) { .done(.recorded(note: note)) }
        return .findUnmatchedBurn(reference: tx.reference, providerTxID: tx.providerTxID, amountUnits: units) { jobID in
            guard let jobID else { return flagged }
            return .findHold(jobID: jobID) { hold in try body(jobID, hold, flagged) }
        }
    }

    /// Burns a paid redemption's held tokens from the redemption address, and posts the burn to the ledger.
    static func burnHeld(_ hold: RedemptionHold, _ context: SettlementContext) throws -> Flow<Void> {
        precondition(hold.state == .held, "only held tokens are burnt")
        let transfer = ChainTransfer(
            op: .burn, address: ChainOperation.redemptionAddress, amountUnits: hold.amountUnits,
            reference: RedemptionHold.burnReference(jobID: hold.jobID), createdAt: context.createdAt,
            nowMicros: context.nowMicros)
        return .chainTransfer(transfer) { txHash in
            .write(.closeHold(jobID: hold.jobID, state: .burnt, txHash: txHash, closedAt: context.createdAt)) {
                let append = LedgerAppend(
                    refType: .burn, refID: hold.jobID, customerID: hold.customerID, amountUnits: hold.amountUnits,
                    createdAt: context.createdAt)
                return .write(.appendLedger(append)) { .done(()) }
            }
        }
    }

    // MARK: - The provider answers a payout

    /// Records the provider's answer to a redemption's payout and acts on it: the provider's own answer is
    /// authoritative (a webhook is only a hint). Paid: the held tokens are burnt now, and the debit, when it arrives,
    /// is paired with the redemption. Ended before any money moved: the tokens go back to the customer, once.
    public static func payoutAnswered(
        jobID: String, providerTxID: String, outcome: Payout.Outcome, _ context: SettlementContext
    ) -> Flow<HoldOutcome> {
        .write(.markPayoutSubmitted(jobID: jobID, providerTxID: providerTxID)) {
            guard outcome != .inFlight else { return .done(.held) }
            return .findHold(jobID: jobID) { hold in
                guard let hold else { return .done(.noHold) }
                guard hold.state == .held else { return .done(.alreadyEnded(hold.state)) }
                switch outcome {
                case .inFlight: return .done(.held)
                case .debited: return try burnHeld(hold, context).map { .burnt }
                case .endedBeforeDebit: return try release(hold, context)
                }
            }
        }
    }

    /// Gives held tokens back to their customer. The ledger is untouched: they were never burnt.
    static func release(_ hold: RedemptionHold, _ context: SettlementContext) throws -> Flow<HoldOutcome> {
        precondition(hold.state == .held, "only held tokens are released")
        return .moveTokenBalance(customerID: hold.customerID, deltaUnits: hold.amountUnits) { moved in
            guard moved else { throw GatewayError.storeUnavailable("token balance row missing for customer \(hold.customerID)") }
            let transfer = ChainTransfer(
                op: .release, address: hold.chainAddress, amountUnits: hold.amountUnits,
                reference: RedemptionHold.releaseReference(jobID: hold.jobID), createdAt: context.createdAt,
                nowMicros: context.nowMicros)
            return .chainTransfer(transfer) { txHash in
                .write(.closeHold(jobID: hold.jobID, state: .released, txHash: txHash, closedAt: context.createdAt)) {
                    .done(.released)
                }
            }
        }
    }

    /// Mints a recorded credit: the customer's balance, the chain, the job, the ledger, in that (lock) order.
    static func mint(
        _ record: ExternalTransactionRecord, customer: Customer, amountUnits: Int64,
        _ context: SettlementContext
    ) throws -> Flow<ChainJob> {
        precondition(amountUnits > 0 && amountUnits <= context.limits.maxMintUnits, "the policy sized the mint")
        let createdAt = context.createdAt
        let jobID = Identifiers.timeOrderedUUID(unixMillis: context.nowMicros / 1000)
        let transfer = ChainTransfer(
            op: .mint, address: customer.chainAddress, amountUnits: amountUnits, reference: jobID,
            createdAt: createdAt, nowMicros: context.nowMicros)
        return .moveTokenBalance(customerID: customer.id, deltaUnits: amountUnits) { moved in
            guard moved else { throw GatewayError.storeUnavailable("token balance row missing for customer \(customer.id)") }
            return .chainTransfer(transfer) { txHash in
                let job = ChainJob(id: jobID, jobType: .mint, amountUnits: amountUnits, txHash: txHash, createdAt: createdAt)
                let row = JobRow(
                    job: job, customerID: customer.id, creditRowID: record.id,
                    creditProviderTxID: record.tx.providerTxID, idempotencyKey: nil, memo: record.tx.memo)
                return .write(.insertJob(row)) {
                    let append = LedgerAppend(
                        refType: .mint, refID: jobID, customerID: customer.id, amountUnits: amountUnits,
                        createdAt: createdAt)
                    return .write(.appendLedger(append)) { .done(job) }
                }
            }
        }
    }

    /// The inbound-log row of a delivery that reached the rules, and the quarantine row of a conflict.
    static func log(
        _ outcome: ApplyOutcome, of tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?,
        _ context: SettlementContext
    ) -> Flow<ApplyOutcome> {
        // The body is made only for a conflict: encoding every polled transaction cost a reconciler pass a third
        // of its time.
        func quarantined(_ inboundID: Int64?, body: () -> [UInt8]) -> Flow<ApplyOutcome> {
            guard case .conflict(let fields) = outcome else { return .done(outcome) }
            let row = QuarantineRow(
                inboundID: inboundID, providerTxID: tx.providerTxID, via: path, differingFields: fields,
                body: body(), createdAt: context.createdAt)
            return .write(.quarantine(row)) { .done(outcome) }
        }
        guard let inbound else { return quarantined(nil, body: { WebhookEvent.encode(tx) }) }
        var jobID: String?
        if case .minted(let job) = outcome { jobID = job.id }
        if case .duplicate(let id) = outcome { jobID = id }
        var errorCode = inbound.errorCode
        // A conflict is logged with the code its sender is answered.
        if case .conflict(let fields) = outcome {
            errorCode = errorCode ?? GatewayError.webhookConflict(providerTxID: tx.providerTxID, fields: fields).code
        }
        let row = InboundRow(draft: inbound, outcome: outcome, errorCode: errorCode, jobID: jobID)
        return .logInbound(row) { inboundID in quarantined(inboundID, body: { inbound.body }) }
    }

    // MARK: - An operator mints a recorded credit

    /// Mints a recorded settled credit (one held above the ceiling included, once the ceiling allows it); a credit
    /// already minted answers its job.
    public static func manualMint(providerTxID: String, _ context: SettlementContext) -> Flow<ChainJob> {
        .findTransaction(providerTxID) { record in
            guard let record else { throw GatewayError.unknownProviderTransaction(providerTxID) }
            guard let jobID = record.mintJobID else { return try mintRecorded(record, context) }
            return .findJob(id: jobID) { job in
                guard let job else { throw GatewayError.storeUnavailable("credit \(providerTxID) names a missing job \(jobID)") }
                return .done(job)
            }
        }
    }

    static func mintRecorded(_ record: ExternalTransactionRecord, _ context: SettlementContext) throws -> Flow<ChainJob> {
        let units = try SettlementPolicy.manualMintUnits(for: record.tx, maxMintUnits: context.limits.maxMintUnits)
        return .findCustomer(walletAccount: record.tx.account) { customer in
            guard let customer else { throw GatewayError.unknownAccount(record.tx.account) }
            // A credit recorded while its account was unbound is the customer's now that it is bound.
            let bind: Flow<ChainJob> =
                record.customerID == nil
                ? .write(.bindCustomer(rowID: record.id, customerID: customer.id)) {
                    try mint(record, customer: customer, amountUnits: units, context)
                } : try mint(record, customer: customer, amountUnits: units, context)
            return .write(.clearHold(rowID: record.id)) { bind }
        }
    }

    // MARK: - A customer redeems

    /// Holds a customer's tokens and requests the payout, or replays the answer stored under the idempotency key.
    /// The balance is checked before anything is written, so a refused redeem writes nothing.
    public static func redeem(_ command: RedeemCommand, _ context: SettlementContext) -> Flow<RedeemResult> {
        precondition(command.amountUnits > 0 && command.amountUnits % Money.unitsPerPaisa == 0, "validated by the use case")
        guard let key = command.idempotencyKey else { return holdClaimed(command, claim: nil, context) }
        let claim = IdempotencyClaim(
            customerID: command.customerID, endpoint: IdempotencyClaim.redeemEndpoint, key: key,
            fingerprint: command.requestFingerprint, createdAt: context.createdAt)
        return .claim(claim) { result in
            switch result {
            case .claimed:
                return holdClaimed(command, claim: claim, context)
            case .taken(let fingerprint, let answer):
                guard fingerprint == command.requestFingerprint else { throw GatewayError.idempotencyKeyReused }
                guard let answer else { throw GatewayError.idempotencyRequestInFlight }
                return .done(.replayed(answer))
            }
        }
    }

    static func holdClaimed(_ command: RedeemCommand, claim: IdempotencyClaim?, _ context: SettlementContext) -> Flow<RedeemResult> {
        let units = command.amountUnits
        let createdAt = context.createdAt
        let jobID = Identifiers.timeOrderedUUID(unixMillis: context.nowMicros / 1000)
        return .findCustomer(id: command.customerID) { customer in
            guard let customer else { throw GatewayError.unknownCustomer(command.customerID) }
            return .moveTokenBalance(customerID: customer.id, deltaUnits: -units) { moved in
                guard moved else {
                    return .tokenBalance(customerID: customer.id) { available in
                        throw GatewayError.insufficientBalance(availableUnits: available, requestedUnits: units)
                    }
                }
                // The tokens move to the redemption address; they are burnt there once the payout is paid.
                let transfer = ChainTransfer(
                    op: .hold, address: customer.chainAddress, amountUnits: units, reference: jobID,
                    createdAt: createdAt, nowMicros: context.nowMicros)
                return .chainTransfer(transfer) { txHash in
                    let job = ChainJob(id: jobID, jobType: .burn, amountUnits: units, txHash: txHash, createdAt: createdAt)
                    let row = JobRow(
                        job: job, customerID: customer.id, creditRowID: nil, creditProviderTxID: nil,
                        idempotencyKey: command.idempotencyKey, memo: command.memo)
                    let receipt = BurnReceipt(job)
                    let burned = RedeemResult.burned(receipt, walletAccount: customer.walletAccount)
                    return .write(.insertJob(row)) {
                        .write(.openHold(jobID: jobID, customerID: customer.id, amountUnits: units, createdAt: createdAt)) {
                            guard let claim else { return .done(burned) }
                            return .write(.storeAnswer(claim, receipt)) { .done(burned) }
                        }
                    }
                }
            }
        }
    }
}
