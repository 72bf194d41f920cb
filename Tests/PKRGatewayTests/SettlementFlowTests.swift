import PKRCore
import Testing

@testable import PKRApplication

/// The settlement flows on their own, against a scripted executor: which primitives they ask for, in which order
/// (the order is PostgreSQL's lock order), and what they make of the answers. No database.
@Suite("Settlement flows, primitive by primitive")
struct SettlementFlowTests {
    static let context = SettlementContext(
        nowMicros: 1_800_000_000_000_000, limits: MoneyLimits(maxMintUnits: 1_000_000_000_000, maxPayoutUnits: 1_000_000_000_000))
    static let customer = Customer(
        id: "c-1", email: "c@example.com", displayName: "C", walletAccount: "WALLET-9", chainAddress: "0xabc")

    /// Runs a flow, answering each primitive with `answer` and recording its name.
    static func run<T>(_ flow: Flow<T>, answer: (Primitive) throws -> PrimitiveAnswer) throws -> (T, [String]) {
        var asked: [String] = []
        let outcome = try flow.runSynchronously { primitive in
            asked.append(String(describing: primitive).prefix { $0 != "(" }.description)
            return try answer(primitive)
        }
        return (outcome, asked)
    }

    static func credit(status: TransactionStatus = .settled) -> ProviderTransaction {
        ProviderTransaction(
            providerTxID: "TX-flow-1", account: customer.walletAccount, direction: .credit, amountPaisa: 12_345,
            status: status, occurredAtMicros: context.nowMicros - 1_000, memo: "flow")
    }

    @Test("a new settled credit: customer, record, balance, chain, job, ledger, inbound log, in that order")
    func newCreditMints() throws {
        let inbound = InboundDraft(
            receivedAtMicros: Self.context.nowMicros, messageID: "msg_1", webhookTimestamp: "1800000000", sourceAddress: nil,
            scheme: .standardV1, verification: "verified", errorCode: nil, providerTxID: "TX-flow-1", body: [1, 2, 3])
        var movedUnits: Int64?
        let (outcome, asked) = try Self.run(Settlement.apply(Self.credit(), via: .webhook, inbound: inbound, Self.context)) {
            switch $0 {
            case .findCustomer: return .customer(Self.customer)
            case .recordTransaction: return .rowID(7)
            case .moveTokenBalance(_, let delta):
                movedUnits = delta
                return .moved(true)
            case .chainTransfer(let transfer):
                #expect(transfer.op == .mint && transfer.address == Self.customer.chainAddress)
                return .txHash("0xhash")
            case .logInbound(let row):
                #expect(row.outcome == "minted" && row.jobID != nil && row.errorCode == nil)
                return .rowID(1)
            default: return .none
            }
        }
        #expect(
            asked == [
                "findCustomer", "recordTransaction", "moveTokenBalance", "chainTransfer", "insertJob", "appendLedger",
                "logInbound",
            ])
        #expect(movedUnits == 12_345 * Money.unitsPerPaisa)
        guard case .minted(let job) = outcome else {
            Issue.record("expected a mint, got \(outcome)")
            return
        }
        #expect(job.amountUnits == 12_345 * Money.unitsPerPaisa && job.txHash == "0xhash" && job.jobType == .mint)
    }

    @Test("a credit on an account no customer holds is recorded without one, and nothing moves")
    func unboundCreditIsRecorded() throws {
        var recordedCustomer: String?? = .none
        let (outcome, asked) = try Self.run(Settlement.apply(Self.credit(), via: .poll, inbound: nil, Self.context)) {
            switch $0 {
            case .findCustomer: return .customer(nil)
            case .recordTransaction(let draft):
                recordedCustomer = .some(draft.customerID)
                return .rowID(3)
            default: return .none
            }
        }
        #expect(asked == ["findCustomer", "recordTransaction"])
        #expect(recordedCustomer == .some(nil))
        guard case .recorded(let note) = outcome else {
            Issue.record("expected a recorded credit, got \(outcome)")
            return
        }
        #expect(note.contains(Self.customer.walletAccount))
    }

    @Test("an operator's mint of a credit recorded unbound binds it to the customer first, then mints")
    func manualMintBindsAnUnboundCredit() throws {
        let record = ExternalTransactionRecord(
            id: 3, tx: Self.credit(), customerID: nil, recordedAt: "", firstSeenVia: .poll, seenViaWebhook: false,
            seenViaPoll: true, lagMicros: 0, mintJobID: nil, matchedJobID: nil, flag: nil)
        var bound: (Int64, String)?
        let (job, asked) = try Self.run(Settlement.manualMint(providerTxID: "TX-flow-1", Self.context)) {
            switch $0 {
            case .findTransaction: return .transaction(record)
            case .findCustomer: return .customer(Self.customer)
            case .bindCustomer(let rowID, let customerID):
                bound = (rowID, customerID)
                return .none
            case .moveTokenBalance: return .moved(true)
            case .chainTransfer: return .txHash("0xhash")
            default: return .none
            }
        }
        #expect(
            asked == [
                "findTransaction", "findCustomer", "clearHold", "bindCustomer", "moveTokenBalance", "chainTransfer", "insertJob",
                "appendLedger",
            ])
        #expect(bound?.0 == 3 && bound?.1 == Self.customer.id)
        #expect(job.amountUnits == 12_345 * Money.unitsPerPaisa)
    }

    @Test("a polled id already recorded with other content is a conflict, quarantined, nothing minted")
    func knownIDWithOtherContentConflicts() throws {
        var recorded = Self.credit()
        recorded.amountPaisa = 99
        let record = ExternalTransactionRecord(
            id: 7, tx: recorded, customerID: Self.customer.id, recordedAt: "", firstSeenVia: .webhook, seenViaWebhook: true,
            seenViaPoll: false, lagMicros: 0,
            mintJobID: "job-1", matchedJobID: nil, flag: nil)
        let (outcome, asked) = try Self.run(Settlement.apply(Self.credit(), via: .poll, inbound: nil, Self.context)) {
            switch $0 {
            case .findCustomer: return .customer(Self.customer)
            case .recordTransaction: return .rowID(nil)
            case .findTransaction: return .transaction(record)
            default: return .none
            }
        }
        #expect(outcome == .conflict(fields: ["amount_pkr"]))
        #expect(asked == ["findCustomer", "recordTransaction", "findTransaction", "quarantine"])
    }

    @Test("a redeem the balance does not cover reads the balance, refuses, and writes nothing else")
    func refusedRedeemWritesNothing() throws {
        let command = RedeemCommand(
            customerID: Self.customer.id, amountUnits: 50 * Money.unitsPerPaisa, memo: "", idempotencyKey: "k",
            requestFingerprint: "f")
        #expect(throws: GatewayError.insufficientBalance(availableUnits: 10, requestedUnits: 50 * Money.unitsPerPaisa)) {
            _ = try Self.run(Settlement.redeem(command, Self.context)) {
                switch $0 {
                case .claimIdempotencyKey: return .claim(.claimed)
                case .findCustomerByID: return .customer(Self.customer)
                case .moveTokenBalance: return .moved(false)
                case .tokenBalance: return .units(10)
                default:
                    Issue.record("a refused redeem asked for \($0)")
                    return .none
                }
            }
        }
    }

    @Test("an engine answering the wrong kind for a primitive fails the change, naming both")
    func wrongAnswerIsAnError() throws {
        #expect(throws: PrimitiveAnswer.Mismatch.self) {
            _ = try Self.run(Settlement.apply(Self.credit(), via: .poll, inbound: nil, Self.context)) { _ in .units(1) }
        }
    }

    static let hold = RedemptionHold(
        jobID: "job-1", customerID: customer.id, chainAddress: customer.chainAddress, amountUnits: 200 * Money.unitsPerPaisa,
        state: .held)

    @Test("a redeem holds: balance, a hold transfer to the redemption address, job, hold row; no ledger entry")
    func redeemHolds() throws {
        let command = RedeemCommand(
            customerID: Self.customer.id, amountUnits: 200 * Money.unitsPerPaisa, memo: "", idempotencyKey: nil,
            requestFingerprint: "f")
        let (outcome, asked) = try Self.run(Settlement.redeem(command, Self.context)) {
            switch $0 {
            case .findCustomerByID: return .customer(Self.customer)
            case .moveTokenBalance(_, let delta):
                #expect(delta == -200 * Money.unitsPerPaisa)
                return .moved(true)
            case .chainTransfer(let transfer):
                #expect(transfer.op == .hold && transfer.address == Self.customer.chainAddress)
                return .txHash("0xhold")
            default: return .none
            }
        }
        #expect(asked == ["findCustomerByID", "moveTokenBalance", "chainTransfer", "insertJob", "openHold"])
        guard case .burned(let receipt, _) = outcome else {
            Issue.record("expected an accepted redeem, got \(outcome)")
            return
        }
        #expect(receipt.txHash == "0xhold")
    }

    @Test("a paid answer burns the held tokens from the redemption address and posts the burn; a second changes nothing")
    func paidAnswerBurns() throws {
        let (outcome, asked) = try Self.run(
            Settlement.payoutAnswered(jobID: "job-1", providerTxID: "TX-d", outcome: .debited, Self.context)
        ) {
            switch $0 {
            case .findHold: return .hold(Self.hold)
            case .chainTransfer(let transfer):
                #expect(transfer.op == .burn && transfer.address == ChainOperation.redemptionAddress)
                #expect(transfer.reference == "job-1:burn" && transfer.amountUnits == Self.hold.amountUnits)
                return .txHash("0xburn")
            case .closeHold(_, let state, let txHash, _):
                #expect(state == .burnt && txHash == "0xburn")
                return .none
            case .appendLedger(let append):
                #expect(append.refType == .burn && append.refID == "job-1" && append.customerID == Self.customer.id)
                return .none
            default: return .none
            }
        }
        #expect(outcome == .burnt)
        #expect(asked == ["markPayoutSubmitted", "findHold", "chainTransfer", "closeHold", "appendLedger"])
        var burnt = Self.hold
        burnt.state = .burnt
        let (again, askedAgain) = try Self.run(
            Settlement.payoutAnswered(jobID: "job-1", providerTxID: "TX-d", outcome: .debited, Self.context)
        ) { if case .findHold = $0 { return .hold(burnt) } else { return .none } }
        #expect(again == .alreadyEnded(.burnt) && askedAgain == ["markPayoutSubmitted", "findHold"])
    }

    @Test("a payout ended before its debit releases the tokens once, with no ledger entry; one in flight keeps them held")
    func refusedAnswerReleases() throws {
        let (outcome, asked) = try Self.run(
            Settlement.payoutAnswered(jobID: "job-1", providerTxID: "PO-1", outcome: .endedBeforeDebit, Self.context)
        ) {
            switch $0 {
            case .findHold: return .hold(Self.hold)
            case .moveTokenBalance(let customerID, let delta):
                #expect(customerID == Self.customer.id && delta == Self.hold.amountUnits)
                return .moved(true)
            case .chainTransfer(let transfer):
                #expect(transfer.op == .release && transfer.address == Self.customer.chainAddress)
                #expect(transfer.reference == "job-1:release")
                return .txHash("0xrelease")
            default: return .none
            }
        }
        #expect(outcome == .released)
        #expect(asked == ["markPayoutSubmitted", "findHold", "moveTokenBalance", "chainTransfer", "closeHold"])
        var released = Self.hold
        released.state = .released
        let (again, _) = try Self.run(
            Settlement.payoutAnswered(jobID: "job-1", providerTxID: "PO-1", outcome: .endedBeforeDebit, Self.context)
        ) { if case .findHold = $0 { return .hold(released) } else { return .none } }
        #expect(again == .alreadyEnded(.released))
        let (pending, askedPending) = try Self.run(
            Settlement.payoutAnswered(jobID: "job-1", providerTxID: "PO-1", outcome: .inFlight, Self.context)
        ) { _ in .none }
        #expect(pending == .held && askedPending == ["markPayoutSubmitted"])
    }

    @Test("a settled debit for a released redemption is not paired with it: money left with no tokens burnt, so it is flagged")
    func debitOfReleasedRedemptionIsFlagged() throws {
        let debit = ProviderTransaction(
            providerTxID: "TX-late", account: Self.customer.walletAccount, direction: .debit, amountPaisa: 200,
            status: .settled, occurredAtMicros: Self.context.nowMicros, memo: "", reference: "job-1")
        var released = Self.hold
        released.state = .released
        var flagged: TransactionFlag?
        let (outcome, asked) = try Self.run(Settlement.apply(debit, via: .poll, inbound: nil, Self.context)) {
            switch $0 {
            case .findCustomer: return .customer(Self.customer)
            case .recordTransaction: return .rowID(9)
            case .findUnmatchedBurn: return .jobID("job-1")
            case .findHold: return .hold(released)
            case .flag(_, let flag):
                flagged = flag
                return .none
            default: return .none
            }
        }
        #expect(flagged == .unmatchedDebit && outcome.code == "recorded")
        #expect(!asked.contains("confirmPayout") && !asked.contains("chainTransfer"))
    }
}
