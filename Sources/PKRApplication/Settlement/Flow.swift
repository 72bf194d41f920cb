import PKRCore

/// A business change as data: the next store primitive to run and what to do with its answer, or the outcome.
///
/// The settlement rules are written once as flows (`Settlement`); each engine runs a flow inside one of its
/// transactions by executing the primitives it asks for, synchronously on SQLite's writer and asynchronously over
/// a PostgreSQL connection. A flow does no I/O of its own and reads no clock: time arrives in its context.
public enum Flow<Outcome> {
    case step(Primitive, (PrimitiveAnswer) throws -> Flow<Outcome>)
    case done(Outcome)

    /// This flow, then the flow `next` makes of its outcome.
    @inlinable
    public func then<Next>(_ next: @escaping (Outcome) throws -> Flow<Next>) throws -> Flow<Next> {
        switch self {
        case .done(let outcome): return try next(outcome)
        case .step(let primitive, let continuation): return .step(primitive) { try continuation($0).then(next) }
        }
    }

    @inlinable
    public func map<Next>(_ transform: @escaping (Outcome) -> Next) throws -> Flow<Next> {
        try then { .done(transform($0)) }
    }

    /// Runs the flow with a synchronous executor (SQLite's writer).
    @inlinable
    public func runSynchronously(_ execute: (Primitive) throws -> PrimitiveAnswer) throws -> Outcome {
        var flow = self
        var steps = 0
        while true {
            switch flow {
            case .done(let outcome): return outcome
            case .step(let primitive, let continuation):
                steps += 1
                precondition(steps <= Self.stepsMax, "a settlement flow is bounded")
                flow = try continuation(try execute(primitive))
            }
        }
    }

    /// Runs the flow with an asynchronous executor (a PostgreSQL connection in a transaction).
    @inlinable
    public func run(_ execute: (Primitive) async throws -> PrimitiveAnswer) async throws -> Outcome {
        var flow = self
        var steps = 0
        while true {
            switch flow {
            case .done(let outcome): return outcome
            case .step(let primitive, let continuation):
                steps += 1
                precondition(steps <= Self.stepsMax, "a settlement flow is bounded")
                flow = try continuation(try await execute(primitive))
            }
        }
    }

    /// No flow takes more primitives than this; a longer one is a loop in the rules.
    @usableFromInline static var stepsMax: Int { 32 }
}

/// One small store operation inside a business transaction. The flow decides which and in what order; the order
/// is also the lock order on PostgreSQL (token balance, chain balance, ledger head), so every flow takes the
/// contended rows in one order and as late as it can.
// Indirect: a flow step then holds a reference, not the largest payload, so moving steps copies a few bytes.
public indirect enum Primitive {
    /// The customer bound to a provider account. Answers `.customer`.
    case findCustomer(walletAccount: String)
    /// The customer with an id. Answers `.customer`.
    case findCustomerByID(String)
    /// Records a provider transaction unless its id is already recorded. Answers `.rowID`, nil when it was.
    case recordTransaction(TransactionDraft)
    /// The recorded transaction with a provider id, locked until the commit where the engine has row locks.
    /// Answers `.transaction`.
    case findTransaction(providerTxID: String)
    /// Notes that the transaction was also seen by `path`. Answers `.none`.
    case markSeen(rowID: Int64, via: ArrivalPath)
    /// Moves a pending transaction to its final status. Answers `.none`.
    case setStatus(rowID: Int64, TransactionStatus)
    /// Flags a transaction for an operator. Answers `.none`.
    case flag(rowID: Int64, TransactionFlag)
    /// Takes back the hold of a credit above the mint ceiling, for an operator's manual mint. Answers `.none`.
    case clearHold(rowID: Int64)
    /// Names the customer of a transaction recorded while its account was unbound. Answers `.none`.
    case bindCustomer(rowID: Int64, customerID: String)
    /// A burn no provider debit has been matched to yet, paid out under `reference` (its job id) or as the provider
    /// transaction, for exactly `amountUnits`. Answers `.jobID`, locked where the engine has row locks.
    case findUnmatchedBurn(reference: String?, providerTxID: String, amountUnits: Int64)
    /// Records that the provider accepted a redemption's payout, as the provider transaction or payout `providerTxID`;
    /// a payout already past `requested` is left as it is. Answers `.none`.
    case markPayoutSubmitted(jobID: String, providerTxID: String)
    /// Pairs a provider debit with the burn it pays out. Answers `.none`.
    case confirmPayout(rowID: Int64, burnJobID: String, providerTxID: String)
    /// Adds to a customer's token balance; a debit moves it only if the balance covers it. Answers `.moved`.
    case moveTokenBalance(customerID: String, deltaUnits: Int64)
    /// A customer's token balance. Answers `.units`.
    case tokenBalance(customerID: String)
    /// Submits a mint or burn to the chain, which records a receipt and moves the address's balance (refusing a
    /// burn it does not cover). Answers `.txHash`.
    case chainTransfer(ChainTransfer)
    /// Records a chain job. Answers `.none`.
    case insertJob(JobRow)
    /// A chain job by id. Answers `.job`.
    case findJob(id: String)
    /// Appends a job's postings to the hash-chained ledger after its head. Answers `.none`.
    case appendLedger(LedgerAppend)
    /// Records a redemption's hold of `amountUnits`, `held`. Answers `.none`.
    case openHold(jobID: String, customerID: String, amountUnits: Int64, createdAt: String)
    /// A redemption's hold, locked until the commit where the engine has row locks. Answers `.hold`.
    case findHold(jobID: String)
    /// Ends a `held` hold as burnt or released by the chain transaction `txHash`; a hold not `held` throws.
    /// Answers `.none`.
    case closeHold(jobID: String, state: RedemptionHold.State, txHash: String, closedAt: String)
    /// Claims an idempotency key for a request, or finds who has it. Answers `.claim`.
    case claimIdempotencyKey(IdempotencyClaim)
    /// Stores the answer under a claimed key, so a replay returns it. Answers `.none`.
    case storeAnswer(IdempotencyClaim, BurnReceipt)
    /// Writes a webhook delivery's inbound-log row. Answers `.rowID`.
    case logInbound(InboundRow)
    /// Keeps a conflicting transaction for an operator. Answers `.none`.
    case quarantine(QuarantineRow)
}

/// What an engine answers for a primitive. Each primitive has one kind of answer; another is a bug in the engine.
public enum PrimitiveAnswer {
    case none
    case customer(Customer?)
    case rowID(Int64?)
    case transaction(ExternalTransactionRecord?)
    case jobID(String?)
    case job(ChainJob?)
    case moved(Bool)
    case units(Int64)
    case txHash(String)
    case claim(IdempotencyClaim.Result)
    case hold(RedemptionHold?)

    struct Mismatch: Error, CustomStringConvertible {
        var answer: String
        var expected: String
        var description: String { "a store primitive answered \(answer) where \(expected) was expected" }
    }

    func mismatch(_ expected: String) -> Mismatch { Mismatch(answer: "\(self)", expected: expected) }
}

// Typed steps: a flow is written with these, so a continuation receives the answer its primitive gives.
extension Flow {
    static func findCustomer(walletAccount: String, _ next: @escaping (Customer?) throws -> Flow) -> Flow {
        .step(.findCustomer(walletAccount: walletAccount)) { try next($0.customer()) }
    }

    static func findCustomer(id: String, _ next: @escaping (Customer?) throws -> Flow) -> Flow {
        .step(.findCustomerByID(id)) { try next($0.customer()) }
    }

    static func recordTransaction(_ draft: TransactionDraft, _ next: @escaping (Int64?) throws -> Flow) -> Flow {
        .step(.recordTransaction(draft)) { try next($0.rowID()) }
    }

    static func findTransaction(_ providerTxID: String, _ next: @escaping (ExternalTransactionRecord?) throws -> Flow) -> Flow {
        .step(.findTransaction(providerTxID: providerTxID)) { try next($0.transaction()) }
    }

    static func findUnmatchedBurn(
        reference: String?, providerTxID: String, amountUnits: Int64,
        _ next: @escaping (String?) throws -> Flow
    ) -> Flow {
        .step(.findUnmatchedBurn(reference: reference, providerTxID: providerTxID, amountUnits: amountUnits)) {
            try next($0.jobID())
        }
    }

    static func findJob(id: String, _ next: @escaping (ChainJob?) throws -> Flow) -> Flow {
        .step(.findJob(id: id)) { try next($0.job()) }
    }

    static func moveTokenBalance(customerID: String, deltaUnits: Int64, _ next: @escaping (Bool) throws -> Flow) -> Flow {
        .step(.moveTokenBalance(customerID: customerID, deltaUnits: deltaUnits)) { try next($0.moved()) }
    }

    static func tokenBalance(customerID: String, _ next: @escaping (Int64) throws -> Flow) -> Flow {
        .step(.tokenBalance(customerID: customerID)) { try next($0.units()) }
    }

    static func chainTransfer(_ transfer: ChainTransfer, _ next: @escaping (String) throws -> Flow) -> Flow {
        .step(.chainTransfer(transfer)) { try next($0.txHash()) }
    }

    static func findHold(jobID: String, _ next: @escaping (RedemptionHold?) throws -> Flow) -> Flow {
        .step(.findHold(jobID: jobID)) { try next($0.hold()) }
    }

    static func claim(_ claim: IdempotencyClaim, _ next: @escaping (IdempotencyClaim.Result) throws -> Flow) -> Flow {
        .step(.claimIdempotencyKey(claim)) { try next($0.claim()) }
    }

    static func logInbound(_ row: InboundRow, _ next: @escaping (Int64) throws -> Flow) -> Flow {
        .step(.logInbound(row)) { answer in
            guard let id = try answer.rowID() else { throw answer.mismatch("the inbound row's id") }
            return try next(id)
        }
    }

    /// A primitive whose only answer is that it ran.
    static func write(_ primitive: Primitive, _ next: @escaping () throws -> Flow) -> Flow {
        .step(primitive) { answer in
            guard case .none = answer else { throw answer.mismatch("none") }
            return try next()
        }
    }
}

extension PrimitiveAnswer {
    func customer() throws -> Customer? {
        guard case .customer(let value) = self else { throw mismatch("a customer") }
        return value
    }

    func rowID() throws -> Int64? {
        guard case .rowID(let value) = self else { throw mismatch("a row id") }
        return value
    }

    func transaction() throws -> ExternalTransactionRecord? {
        guard case .transaction(let value) = self else { throw mismatch("a transaction") }
        return value
    }

    func jobID() throws -> String? {
        guard case .jobID(let value) = self else { throw mismatch("a job id") }
        return value
    }

    func job() throws -> ChainJob? {
        guard case .job(let value) = self else { throw mismatch("a job") }
        return value
    }

    func moved() throws -> Bool {
        guard case .moved(let value) = self else { throw mismatch("whether the balance moved") }
        return value
    }

    func units() throws -> Int64 {
        guard case .units(let value) = self else { throw mismatch("units") }
        return value
    }

    func txHash() throws -> String {
        guard case .txHash(let value) = self else { throw mismatch("a chain transaction hash") }
        return value
    }

    func claim() throws -> IdempotencyClaim.Result {
        guard case .claim(let value) = self else { throw mismatch("an idempotency claim") }
        return value
    }

    func hold() throws -> RedemptionHold? {
        guard case .hold(let value) = self else { throw mismatch("a redemption hold") }
        return value
    }
}
