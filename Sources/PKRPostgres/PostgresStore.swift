import ChainStub
import Foundation
import Logging
import NIOCore
import PKRApplication
import PKRCore
import PostgresNIO
import PostgresSupport
import Synchronization
import WalletStub

/// The production store: PostgreSQL through PostgresNIO. The same rules as `SQLiteStore` (the pure
/// `SettlementPolicy` decides; this executes), with row locks where SQLite relies on its single writer, so
/// several gateway instances can share one database.
public final class PostgresStore: GatewayStore {
    public let client: PostgresClient
    public let availability: PostgresAvailability
    private let runTasks: [Task<Void, Never>]
    let mintBatch: PostgresMintBatch
    /// Redeems held by `pkr_hold_batch`, for tests that must know which path ran.
    let holdOneCallCount = Atomic<Int>(0)
    /// Paid answers burnt by `pkr_burn_held_batch`.
    let burnOneCallCount = Atomic<Int>(0)
    /// Paid debits confirmed by `pkr_pair_debit`.
    let pairOneCallCount = Atomic<Int>(0)
    /// New settled credits waiting for the next mint batch: those that arrive while one is written go in the next.
    let mintQueue: PostgresCallBatch<PostgresMintBatch.Credit, ChainJob?>
    /// Concurrent redeems, and concurrent paid answers, each batch one statement (`pkr_hold_batch`, `pkr_burn_held_batch`).
    let holdBatch: PostgresCallBatch<HoldCall, HoldAnswer>
    let burnBatch: PostgresCallBatch<BurnCall, BurnAnswer>
    private let limits: MoneyLimits
    private let nowMicros: @Sendable () -> Int64
    private let logger: Logger

    /// How the mint batches since start-up were written, for the bench: a refused one-call batch redid its work
    /// in a transaction.
    public struct MintBatchCounts: Sendable {
        public var oneCall: Int
        public var refused: Int
        public var rolledBack: Int
    }

    public var mintBatchCounts: MintBatchCounts {
        MintBatchCounts(
            oneCall: mintBatch.oneCallCount.load(ordering: .relaxed),
            refused: mintBatch.oneCallMissCount.load(ordering: .relaxed),
            rolledBack: mintBatch.rolledBackCount.load(ordering: .relaxed))
    }

    /// Connects once up front so that a wrong host or password fails start-up at once with a clear message,
    /// instead of the pool retrying in the background for a minute.
    public static func connect(
        settings: PostgresSettings, limits: MoneyLimits, nowMicros: @escaping @Sendable () -> Int64,
        logger: Logger
    ) async throws -> PostgresStore {
        let configuration = PostgresConnection.Configuration(
            host: settings.host, port: settings.port, username: settings.user,
            password: settings.password, database: settings.database, tls: .disable)
        do {
            let probe = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            try await probe.close()
        } catch {
            throw ConfigError.refused(
                "cannot connect to PostgreSQL at \(settings.host):\(settings.port) as \(settings.user) "
                    + "to database \(settings.database): \(Self.describe(error))")
        }
        var clientConfiguration = PostgresClient.Configuration(
            host: settings.host, port: settings.port, username: settings.user,
            password: settings.password, database: settings.database, tls: .disable)
        // Mints and burns all queue on the same few rows (one balance, one ledger head), so more sessions only add
        // lock waiters competing for the CPU with the lock holder: at 64 requests in flight, 8 connections gave
        // the same rate as 32 and less than half the p99. No code path holds one connection while taking another.
        clientConfiguration.options.maximumConnections = 8
        // The pool's own chatter (including a harmless race with its start-up) stays below the error level.
        var backgroundLogger = logger
        backgroundLogger.logLevel = .error
        return PostgresStore(
            client: PostgresClient(configuration: clientConfiguration, backgroundLogger: backgroundLogger),
            availability: PostgresAvailability(configuration: configuration, logger: logger), limits: limits,
            nowMicros: nowMicros, logger: logger)
    }

    init(
        client: PostgresClient, availability: PostgresAvailability, limits: MoneyLimits,
        nowMicros: @escaping @Sendable () -> Int64, logger: Logger
    ) {
        self.client = client
        self.availability = availability
        self.runTasks = [Task { await client.run() }, Task { await availability.run() }]
        let mintBatch = PostgresMintBatch(client: client, logger: logger)
        self.mintBatch = mintBatch
        self.mintQueue = PostgresCallBatch(batchSizeMax: PostgresMintBatch.batchSizeMax) { await mintBatch.write($0) }
        self.holdBatch = PostgresCallBatch { [availability] calls in
            try await Self.holdBatch(calls, try availability.checked(client), logger: logger)
        }
        self.burnBatch = PostgresCallBatch { [availability] calls in
            try await Self.burnBatch(calls, try availability.checked(client), logger: logger)
        }
        self.limits = limits
        self.nowMicros = nowMicros
        self.logger = logger
    }

    deinit { runTasks.forEach { $0.cancel() } }

    private var pg: PostgresClient { get throws { try availability.checked(client) } }

    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return error.underlying.map { "\($0)" } ?? "\(error.code)"
        }
        return "\(error)"
    }

    public func migrate() async throws {
        try await PostgresSchema.migrate(client, logger: logger)
    }

    static let transactionAttemptsMax = 3

    /// One business transaction. A deadlock or serialization failure rolled everything back, so it is retried
    /// from the start (a bounded number of times) instead of surfacing as a server error.
    private func transaction<T: Sendable>(_ body: @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await pg.transaction(logger: logger) { connection in try await body(connection) }
            } catch let error as PSQLError where attempt < Self.transactionAttemptsMax && Self.isRetryable(error) {
                logger.notice(
                    "transaction retried", metadata: ["sqlstate": "\(error.serverInfo?[.sqlState] ?? "")", "attempt": "\(attempt)"])
                attempt += 1
            }
        }
    }

    static func isRetryable(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "40P01" || state == "40001"
    }

    // MARK: - Customers

    public func createCustomer(_ draft: CustomerDraft) async throws -> Customer {
        let createdAt = Timestamp.format(micros: nowMicros())
        let logger = self.logger
        return try await transaction { connection in
            // Instances creating the same customer at once queue on this lock; the second finds the first's.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Int64(0x706b_725f_7365_6564)))", logger: logger)
            if let existing = try await PostgresPrimitives.customer(connection, walletAccount: draft.walletAccount, logger: logger) {
                return existing
            }
            let customer = Customer(
                id: Identifiers.uuid(), email: draft.email, displayName: draft.displayName,
                walletAccount: draft.walletAccount, chainAddress: "0x" + Crypto.hex(Crypto.randomBytes(20)))
            try await connection.query(
                """
                INSERT INTO core_user (id, email, display_name, wallet_account, chain_address, created_at)
                VALUES (\(customer.id), \(customer.email), \(customer.displayName), \(customer.walletAccount),
                        \(customer.chainAddress), \(createdAt))
                """, logger: logger)
            try await connection.query("INSERT INTO core_tokenbalance (user_id, balance_units) VALUES (\(customer.id), 0)", logger: logger)
            try await PostgresChainStub.openAddress(connection, customer.chainAddress, logger: logger)
            return customer
        }
    }

    public func customer(email: String) async throws -> Customer? {
        let logger = self.logger
        return try await pg.withConnection { try await PostgresPrimitives.customer($0, email: email, logger: logger) }
    }

    public func hasCustomers() async throws -> Bool {
        for try await exists in try await pg.query("SELECT EXISTS (SELECT 1 FROM core_user)", logger: logger).decode(Bool.self) {
            return exists
        }
        return false
    }

    public func customer(id: String) async throws -> Customer? {
        let logger = self.logger
        return try await pg.withConnection { try await PostgresPrimitives.customer($0, id: id, logger: logger) }
    }

    // MARK: - Settlement (the flows decide; `PostgresPrimitives` executes)

    /// Runs a settlement flow in one transaction.
    private func run<T: Sendable>(_ makeFlow: @escaping @Sendable () throws -> Flow<T>) async throws -> T {
        let logger = self.logger
        return try await transaction { connection in
            try await makeFlow().run { try await PostgresPrimitives.execute($0, connection, logger: logger) }
        }
    }

    public func apply(_ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?) async throws -> ApplyOutcome {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        if mintBatchEnabled.load(ordering: .relaxed), let credit = Self.mintCandidate(tx, via: path, inbound: inbound, context) {
            _ = try pg  // An unreachable database fails at once rather than through the batch and then the fallback.
            // The batch's write never throws: a credit it does not mint comes back nil.
            if let job = try await mintQueue.call(credit) { return .minted(job) }
        }
        if callFunctionsEnabled.load(ordering: .relaxed), let jobID = try await pairDebitInOneCall(tx, via: path, inbound: inbound, context)
        {
            return .recorded(note: ApplyOutcome.payoutConfirmedNote(jobID))
        }
        return try await run { try Settlement.apply(tx, via: path, inbound: inbound, context) }
    }

    /// A settled debit paying a redemption that is burnt already, in one call to `pkr_pair_debit`
    /// (`Settlement.matchDebit`'s path for it, with the inbound-log row `Settlement.log` writes for its outcome);
    /// nil when the function left it to the flow, having written nothing, or lost a deadlock, which the flow's
    /// transaction retries. `FastPathEquivalenceTests` pins it to the flow.
    private func pairDebitInOneCall(
        _ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?, _ context: SettlementContext
    ) async throws -> String? {
        guard case .matchPayout? = try? SettlementPolicy.action(for: tx, maxMintUnits: context.limits.maxMintUnits),
            let units = try? Money.paisaToUnits(tx.amountPaisa)
        else { return nil }
        let logged = inbound.map {
            InboundRow(draft: $0, outcome: .recorded(note: ""), errorCode: $0.errorCode, jobID: nil)
        }
        precondition(logged?.keptBody == nil, "a recorded debit's body is not kept")
        let pair = PairDebit(tx: tx, amountUnits: units, path: path, recordedAtMicros: context.nowMicros, inbound: logged)
        do {
            for try await jobID in try await pg.execute(pair, logger: logger) {
                guard let jobID = try jobID.decode(String?.self) else { return nil }
                pairOneCallCount.add(1, ordering: .relaxed)
                return jobID
            }
            return nil
        } catch let error as PSQLError where Self.isRetryable(error) {
            return nil
        }
    }

    /// Polled mint batches written at once. The backend orders them anyway, and three were slower than two on
    /// two cores (BENCHMARKS.md).
    static let polledBatchesInFlightMax = 2

    public func applyPolled(_ txs: [ProviderTransaction]) async throws -> [ApplyOutcome] {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        _ = try pg
        // New settled credits are minted in batches; everything else, and any credit a batch handed back, is
        // applied in a transaction of its own: a page-long transaction would hold the balance and ledger-head row
        // locks for seconds and stall every webhook and redeem behind a backlog.
        var outcomes = [ApplyOutcome?](repeating: nil, count: txs.count)
        let credits =
            !mintBatchEnabled.load(ordering: .relaxed)
            ? []
            : txs.indices.compactMap { index in
                Self.mintCandidate(txs[index], via: .poll, inbound: nil, context).map { (index, $0) }
            }
        // Two batches in flight: while one holds the contended locks and commits, the next writes its uncontended
        // rows on another connection, then waits for the first to end (`pkr_mint_batch`).
        let mintBatch = self.mintBatch
        await withTaskGroup(of: (start: Int, jobs: [ChainJob?]).self) { group in
            // A chunk's jobs land at its credits' places in the page; a nil job is left to the loop below.
            func record(_ written: (start: Int, jobs: [ChainJob?])) {
                for ((index, _), job) in zip(credits[written.start...], written.jobs) {
                    outcomes[index] = job.map(ApplyOutcome.minted)
                }
            }
            var inFlight = 0
            for start in stride(from: 0, to: credits.count, by: PostgresMintBatch.batchSizeMax) {
                if inFlight == Self.polledBatchesInFlightMax, let written = await group.next() {
                    record(written)
                    inFlight -= 1
                }
                let chunk = credits[start..<min(start + PostgresMintBatch.batchSizeMax, credits.count)].map(\.1)
                group.addTask { (start, await mintBatch.write(chunk)) }
                inFlight += 1
            }
            for await written in group { record(written) }
        }
        for index in txs.indices where outcomes[index] == nil {
            let tx = txs[index]
            outcomes[index] = try await run { try Settlement.apply(tx, via: .poll, inbound: nil, context) }
        }
        return outcomes.map { $0! }
    }

    /// A transaction the batch may mint: a settled credit within the mint ceiling. Whether it is new is only known
    /// inside the batch's transaction.
    private static func mintCandidate(
        _ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?,
        _ context: SettlementContext
    ) -> PostgresMintBatch.Credit? {
        guard case .mint(let units)? = try? SettlementPolicy.action(for: tx, maxMintUnits: context.limits.maxMintUnits) else {
            return nil
        }
        return PostgresMintBatch.Credit(tx: tx, path: path, amountUnits: units, inbound: inbound, nowMicros: context.nowMicros)
    }

    public func logRejectedInbound(_ inbound: InboundDraft) async throws {
        let logger = self.logger
        try await pg.withConnection { connection in
            _ = try await PostgresPrimitives.insertInbound(connection, .rejected(inbound), logger: logger)
        }
    }

    public func mint(providerTxID: String) async throws -> ChainJob {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        return try await run { Settlement.manualMint(providerTxID: providerTxID, context) }
    }

    /// Whether new redeems go to `pkr_hold_batch` (paid answers to `pkr_burn_held_batch`, paid debits to
    /// `pkr_pair_debit`), and new settled credits to the mint batch; tests turn them off to pin each fast path to the
    /// flow it implements.
    let callFunctionsEnabled = Atomic<Bool>(true)
    let mintBatchEnabled = Atomic<Bool>(true)

    public func redeem(_ command: RedeemCommand) async throws -> RedeemResult {
        precondition(command.amountUnits > 0 && command.amountUnits % Money.unitsPerPaisa == 0, "validated by the caller")
        if callFunctionsEnabled.load(ordering: .relaxed), let held = try await holdInOneCall(command) { return held }
        // A key already taken (a replay, or one still in flight), or the function turned off: the flow decides.
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        return try await run { Settlement.redeem(command, context) }
    }

    /// A new redeem through `pkr_hold_batch`, the redeem flow as a PL/pgSQL function: the balance and chain locks
    /// are held while the server runs it and commits, not across this process's round trips, which is what let only
    /// a few hundred concurrent redeems a second through. Concurrent redeems share a statement and its commit
    /// (`holdBatch`). Answers nil when the idempotency key is taken; the flow then replays the stored answer or
    /// refuses the key as in flight. `PostgresBurnTests` pins it to the flow.
    private func holdInOneCall(_ command: RedeemCommand) async throws -> RedeemResult? {
        let now = nowMicros()
        let createdAt = Timestamp.format(micros: now)
        let job = ChainJob(
            id: Identifiers.timeOrderedUUID(unixMillis: now / 1000), jobType: .burn, amountUnits: command.amountUnits,
            txHash: Identifiers.chainTxHash(unixMillis: now / 1000), createdAt: createdAt)
        let receipt = BurnReceipt(job)
        let answer = try await holdBatch.call(HoldCall(command: command, job: job, responseBody: receipt.storedForm))
        switch answer.outcome {
        case 1:
            guard let walletAccount = answer.walletAccount else {
                throw GatewayError.storeUnavailable("pkr_hold_batch answered no wallet account")
            }
            holdOneCallCount.add(1, ordering: .relaxed)
            return .burned(receipt, walletAccount: walletAccount)
        case 0:
            return nil
        case -1:
            throw GatewayError.insufficientBalance(availableUnits: answer.availableUnits ?? 0, requestedUnits: command.amountUnits)
        case -2:
            let logger = self.logger
            let customer = try await pg.withConnection {
                try await PostgresPrimitives.customer($0, id: command.customerID, logger: logger)
            }
            throw ChainStubError.rejected(address: customer?.chainAddress ?? "", op: .hold)
        case -3:
            throw GatewayError.demoNotSeeded
        default:
            throw GatewayError.storeUnavailable("pkr_hold_batch answered \(answer.outcome)")
        }
    }

    struct HoldCall: Sendable {
        var command: RedeemCommand
        var job: ChainJob
        var responseBody: String
    }

    struct HoldAnswer: Sendable {
        var outcome: Int32
        var availableUnits: Int64?
        var walletAccount: String?
    }

    /// The calls in one statement, `pkr_hold_batch`: it decides them by customer, then by arrival, as the mint batch
    /// takes the balance rows, so that the two never wait on each other in a cycle.
    static func holdBatch(_ calls: [HoldCall], _ connection: PostgresClient, logger: Logger) async throws -> [HoldAnswer] {
        let rows = try await connection.query(
            """
            SELECT h.n, h.outcome, h.available_units, h.wallet_account
            FROM pkr_hold_batch(
              \(calls.map(\.command.customerID)), \(calls.map(\.command.amountUnits)), \(calls.map(\.job.id)),
              \(calls.map(\.job.txHash)), \(NullableTextArray(values: calls.map(\.command.idempotencyKey))),
              \(IdempotencyClaim.redeemEndpoint), \(calls.map(\.command.requestFingerprint)), \(calls.map(\.responseBody)),
              \(calls.map(\.command.memo)), \(calls.map(\.job.createdAt)), \(ChainOperation.redemptionAddress)) h
            """, logger: logger)
        var answered: [(Int64, HoldAnswer)] = []
        for try await (n, outcome, availableUnits, walletAccount) in rows.decode((Int64, Int32, Int64?, String?).self) {
            answered.append((n, HoldAnswer(outcome: outcome, availableUnits: availableUnits, walletAccount: walletAccount)))
        }
        return try inCallOrder(answered, count: calls.count, function: "pkr_hold_batch")
    }

    /// Appends the jobs' postings, in order, after `head`, which the caller read and locked in this transaction.
    /// Returns the new head. The entries and the new head go in one statement, one round trip under the head's lock.
    @discardableResult
    static func appendLedger(
        _ connection: PostgresConnection, after head: LedgerHead, _ appends: [LedgerAppend],
        logger: Logger
    ) async throws -> LedgerHead {
        let (entries, newHead) = LedgerAppend.entries(after: head, appends)
        _ = try await connection.execute(AppendLedgerEntries(entries: LedgerEntryColumns(entries), head: newHead), logger: logger)
        return newHead
    }

    public func payoutAnswered(jobID: String, providerTxID: String, amountUnits: Int64, account: String) async throws -> Bool {
        let query = PayoutAnsweredQuery(jobID: jobID, providerTxID: providerTxID, amountUnits: amountUnits, account: account)
        for try await _ in try await pg.execute(query, logger: logger) { return true }
        return false
    }

    public func payouts(awaiting: PendingPayout.Awaiting, olderThanMicros: Int64, limit: Int) async throws -> [PendingPayout] {
        let cutoff = Timestamp.format(micros: olderThanMicros)
        let query: PostgresQuery =
            switch awaiting {
            case .submission:
                """
                SELECT j.id, u.wallet_account, j.amount_units, j.memo FROM core_chainjob j JOIN core_user u ON u.id = j.user_id
                WHERE j.job_type = 'burn' AND j.payout_state = 'requested' AND j.created_at <= \(cutoff)
                ORDER BY j.created_at LIMIT \(limit)
                """
            case .outcome:
                """
                SELECT j.id, u.wallet_account, j.amount_units, j.memo
                FROM core_redemptionhold h JOIN core_chainjob j ON j.id = h.job_id JOIN core_user u ON u.id = j.user_id
                WHERE h.state = 'held' AND j.payout_state = 'submitted' AND h.created_at <= \(cutoff)
                ORDER BY h.created_at LIMIT \(limit)
                """
            }
        var out: [PendingPayout] = []
        for try await (id, account, amount, memo) in try await pg.query(query, logger: logger).decode((String, String, Int64, String).self)
        {
            out.append(PendingPayout(jobID: id, walletAccount: account, amountUnits: amount, memo: memo))
        }
        return out
    }

    public func payoutAnswered(jobID: String, providerTxID: String, outcome: Payout.Outcome) async throws -> HoldOutcome {
        if outcome == .debited && callFunctionsEnabled.load(ordering: .relaxed) {
            return try await burnHeldInOneCall(jobID: jobID, providerTxID: providerTxID)
        }
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        return try await run { Settlement.payoutAnswered(jobID: jobID, providerTxID: providerTxID, outcome: outcome, context) }
    }

    /// A paid answer's burn through `pkr_burn_held_batch` (`Settlement.payoutAnswered` for a debited payout): the
    /// redemption address's row and the ledger head, which every redeem shares, are held while the server runs it
    /// and commits, not across round trips, and concurrent answers share a statement and its commit (`burnBatch`).
    /// `FastPathEquivalenceTests` pins it to the flow.
    private func burnHeldInOneCall(jobID: String, providerTxID: String) async throws -> HoldOutcome {
        let now = nowMicros()
        let answer = try await burnBatch.call(
            BurnCall(
                jobID: jobID, providerTxID: providerTxID, txHash: Identifiers.chainTxHash(unixMillis: now / 1000),
                createdAt: Timestamp.format(micros: now)))
        burnOneCallCount.add(1, ordering: .relaxed)
        switch answer.outcome {
        case 1: return .burnt
        case 0: return .noHold
        case 2:
            guard let state = answer.holdState.flatMap(RedemptionHold.State.init) else {
                throw GatewayError.storeUnavailable("pkr_burn_held_batch answered no hold state")
            }
            return .alreadyEnded(state)
        default: throw GatewayError.storeUnavailable("pkr_burn_held_batch answered \(answer.outcome)")
        }
    }

    struct BurnCall: Sendable {
        var jobID: String
        var providerTxID: String
        var txHash: String
        var createdAt: String
    }

    struct BurnAnswer: Sendable {
        var outcome: Int32
        var holdState: String?
    }

    /// The calls in one statement, `pkr_burn_held_batch`, which is its own transaction: it locks every call's job
    /// and hold in id order before the redemption address's balance, the order the plain flow takes them in, and
    /// posts the burnt calls' entries after the head, in call order.
    static func burnBatch(_ calls: [BurnCall], _ client: PostgresClient, logger: Logger) async throws -> [BurnAnswer] {
        let postings = PostingRules.postings(for: .burn, amountUnits: Money.unitsPerPaisa)
        let rows = try await client.query(
            """
            SELECT b.n, b.outcome, b.hold_state
            FROM pkr_burn_held_batch(
              \(calls.map(\.jobID)), \(calls.map(\.providerTxID)), \(calls.map(\.txHash)), \(calls.map(\.createdAt)),
              \(ChainOperation.redemptionAddress), \(postings.map(\.side.rawValue)), \(postings.map(\.account.rawValue))) b
            """, logger: logger)
        var answered: [(Int64, BurnAnswer)] = []
        for try await (n, outcome, state) in rows.decode((Int64, Int32, String?).self) {
            answered.append((n, BurnAnswer(outcome: outcome, holdState: state)))
        }
        return try inCallOrder(answered, count: calls.count, function: "pkr_burn_held_batch")
    }

    /// A batch statement's answers, each tagged with its call's ordinal (`WITH ORDINALITY`, from 1), in call order.
    /// A call answered twice, not at all, or out of range means the statement is not the one written here.
    static func inCallOrder<Answer>(_ answered: [(Int64, Answer)], count: Int, function: String) throws -> [Answer] {
        var answers = [Answer?](repeating: nil, count: count)
        for (ordinal, answer) in answered {
            guard (1...Int64(count)).contains(ordinal), answers[Int(ordinal) - 1] == nil else {
                throw GatewayError.storeUnavailable("\(function) answered call \(ordinal) of \(count) unexpectedly")
            }
            answers[Int(ordinal) - 1] = answer
        }
        return try answers.map { answer in
            guard let answer else { throw GatewayError.storeUnavailable("\(function) answered no row for a call") }
            return answer
        }
    }

    // MARK: - Reads

    public func tokenBalanceUnits(customerID: String) async throws -> Int64 {
        // The hottest read: prepared once per connection, so each call skips the parse and the plan.
        for try await balance in try await pg.execute(TokenBalanceQuery(userID: customerID), logger: logger) {
            return balance
        }
        return 0
    }

    public func ledgerEntries(customerID: String?, limit: Int, beforeID: Int64?) async throws -> [LedgerEntry] {
        let before = beforeID ?? Int64.max
        // A customer's page takes its jobs from the customer's own entries, as SQLiteStore's does (the reasoning is
        // there): one job more than the page holds, newest first, through the customer index.
        let query: PostgresQuery =
            if let customerID {
                """
                SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
                FROM core_ledgerentry
                WHERE id < \(before) AND ref_id IN (
                  SELECT c.ref_id FROM core_ledgerentry c
                  WHERE c.user_id = \(customerID) AND c.id <= \(before) ORDER BY c.id DESC LIMIT \(limit + 1))
                ORDER BY id DESC LIMIT \(limit)
                """
            } else {
                """
                SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
                FROM core_ledgerentry WHERE id < \(before) ORDER BY id DESC LIMIT \(limit)
                """
            }
        let rows = try await pg.query(query, logger: logger)
        var out: [LedgerEntry] = []
        for try await row in rows { out.append(try Self.decodeLedger(row)) }
        return out
    }

    private static func decodeLedger(_ row: PostgresRow) throws -> LedgerEntry {
        let (id, userID, side, account, amount, refType, refID, createdAt, prevHash, entryHash) =
            try row.decode((Int64, String?, String, String, Int64, String, String, String, String, String).self)
        guard let side = LedgerSide(rawValue: side), let account = LedgerAccount(rawValue: account),
            let refType = ChainJobType(rawValue: refType)
        else {
            throw GatewayError.storeUnavailable("core_ledgerentry row \(id) is corrupt")
        }
        return LedgerEntry(
            id: id, userID: userID, side: side, account: account, amountUnits: amount, refType: refType,
            refID: refID, createdAt: createdAt, prevHash: prevHash, entryHash: entryHash)
    }

    public func externalTransactions(limit: Int, beforeID: Int64?) async throws -> [ExternalTransactionRecord] {
        let rows = try await pg.query(
            """
            SELECT \(unescaped: PostgresPrimitives.externalColumns) FROM core_externaltransaction e
            WHERE e.id < \(beforeID ?? Int64.max) ORDER BY e.id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [ExternalTransactionRecord] = []
        for try await row in rows { out.append(try PostgresPrimitives.decodeExternal(row)) }
        return out
    }

    public func redemption(jobID: String) async throws -> RedemptionRows? {
        var found: RedemptionRows?
        for try await (id, userID, amount, createdAt, payoutState, payoutTxID, txHash) in try await pg.query(
            """
            SELECT id, user_id, amount_units, created_at, payout_state, payout_provider_tx_id, tx_hash
            FROM core_chainjob WHERE id = \(jobID) AND job_type = 'burn'
            """, logger: logger
        ).decode((String, String, Int64, String, String, String?, String).self) {
            found = RedemptionRows(
                job: ChainJob(id: id, jobType: .burn, amountUnits: amount, txHash: txHash, createdAt: createdAt),
                customerID: userID, payoutState: payoutState, payoutProviderTxID: payoutTxID, debit: nil, reversals: [])
        }
        guard var rows = found else { return nil }
        let failed = PayoutReversal.reference(payoutReference: jobID, status: .failed)
        let returned = PayoutReversal.reference(payoutReference: jobID, status: .returned)
        for try await row in try await pg.query(
            """
            SELECT \(unescaped: PostgresPrimitives.externalColumns) FROM core_externaltransaction e
            WHERE e.matched_job_id = \(jobID) OR (e.reference IN (\(failed), \(returned)) AND e.direction = 'credit')
            ORDER BY e.id
            """, logger: logger)
        {
            let record = try PostgresPrimitives.decodeExternal(row)
            if record.matchedJobID == jobID { rows.debit = record } else { rows.reversals.append(record) }
        }
        for try await (state, closedAt) in try await pg.query(
            "SELECT state, closed_at FROM core_redemptionhold WHERE job_id = \(jobID)", logger: logger
        ).decode((String, String?).self) {
            rows.hold = RedemptionRows.Hold(state: RedemptionHold.State(rawValue: state) ?? .held, closedAt: closedAt)
        }
        return rows
    }

    public func inboundLog(limit: Int, beforeID: Int64?) async throws -> [InboundRecord] {
        let rows = try await pg.query(
            """
            SELECT id, received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                   provider_tx_id, job_id, body_bytes
            FROM core_webhookinbound WHERE id < \(beforeID ?? Int64.max) ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [InboundRecord] = []
        for try await (id, received, messageID, timestamp, source, scheme, verification, outcome, error, txID, jobID, bytes)
            in rows.decode((Int64, String, String?, String?, String?, String?, String, String, String?, String?, String?, Int).self)
        {
            out.append(
                InboundRecord(
                    id: id, received_at: received, message_id: messageID, webhook_timestamp: timestamp,
                    source_address: source, scheme: scheme, verification: verification, outcome: outcome,
                    error: error, provider_tx_id: txID, job_id: jobID, body_bytes: bytes))
        }
        return out
    }

    public func pruneInbound(receivedBefore cutoff: String, rowsMax: Int) async throws -> Int {
        precondition(rowsMax > 0, "a prune batch is bounded")
        let rows = try await pg.query(
            """
            WITH gone AS (
              DELETE FROM core_webhookinbound WHERE id IN (
                SELECT i.id FROM core_webhookinbound i
                WHERE i.received_at < \(cutoff)
                  AND NOT EXISTS (SELECT 1 FROM core_webhookquarantine q WHERE q.inbound_id = i.id)
                ORDER BY i.id LIMIT \(rowsMax))
              RETURNING 1)
            SELECT count(*) FROM gone
            """, logger: logger)
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    public func pruneIdempotencyRecords(createdBefore cutoff: String, rowsMax: Int) async throws -> Int {
        precondition(rowsMax > 0, "a prune batch is bounded")
        // The burn's key is unique here, so it is forgotten with its record; else a key past the window could not
        // be used again.
        let rows = try await pg.query(
            """
            WITH gone AS (
              DELETE FROM core_idempotencyrecord WHERE (user_id, endpoint, idempotency_key) IN (
                SELECT user_id, endpoint, idempotency_key FROM core_idempotencyrecord WHERE created_at < \(cutoff)
                LIMIT \(rowsMax))
              RETURNING user_id, idempotency_key),
            cleared AS (
              UPDATE core_chainjob j SET idempotency_key = NULL FROM gone
              WHERE j.user_id = gone.user_id AND j.idempotency_key = gone.idempotency_key AND j.job_type = 'burn'
              RETURNING 1)
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM cleared)
            """, logger: logger)
        for try await (count, _) in rows.decode((Int64, Int64).self) { return Int(count) }
        return 0
    }

    public func quarantineCount() async throws -> Int {
        let rows = try await pg.query("SELECT COUNT(*) FROM core_webhookquarantine", logger: logger)
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    public func quarantine(limit: Int, beforeID: Int64?) async throws -> [QuarantineRecord] {
        let rows = try await pg.query(
            """
            SELECT id, inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at
            FROM core_webhookquarantine WHERE id < \(beforeID ?? Int64.max) ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [QuarantineRecord] = []
        for try await (id, inboundID, txID, via, fields, body, created)
            in rows.decode((Int64, Int64?, String, String, String, ByteBuffer, String).self)
        {
            out.append(
                QuarantineRecord(
                    id: id, inbound_id: inboundID, provider_tx_id: txID, arrived_via: via,
                    differing_fields: fields.split(separator: ",").map(String.init),
                    body: String(buffer: body), created_at: created))
        }
        return out
    }

    public func reconciliationSnapshot(_ scope: ReconciliationScope) async throws -> ReconciliationSnapshot {
        let logger = self.logger
        let reads = ReconciliationReads(scope, dialect: .postgres)
        try await compactRunningTotals()
        // One REPEATABLE READ transaction: every figure comes from the same snapshot.
        return try await readOnlySnapshot { connection in
            var answers = ReconciliationReads.Answers()
            for (key, sql) in reads.integers {
                for try await value in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(Int64.self) {
                    answers.integers[key] = value
                }
            }
            for try await (name, value) in try await connection.query(PostgresQuery(unsafeSQL: reads.totalsSQL), logger: logger)
                .decode((String, Int64).self)
            {
                answers.totals[name] = value
            }
            for (key, sql) in reads.lists + reads.listsAfter(totals: answers.totals) {
                var values: [String] = []
                for try await value in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(String.self) {
                    values.append(value)
                }
                answers.lists[key] = values
            }
            for try await (webhookOnly, pollOnly, both, p50, p90, p99, lagMax) in try await connection.query(
                PostgresQuery(unsafeSQL: reads.arrivalFiguresSQL), logger: logger
            ).decode((Int64, Int64, Int64, Int64?, Int64?, Int64?, Int64?).self) {
                var lags: LagPercentiles?
                if let p50, let p90, let p99, let lagMax { lags = LagPercentiles(p50: p50, p90: p90, p99: p99, max: lagMax) }
                answers.arrivals = ArrivalFigures(webhookOnly: webhookOnly, pollOnly: pollOnly, both: both, lagMicros: lags)
            }
            for try await row in try await connection.query(
                """
                SELECT \(unescaped: PostgresPrimitives.externalColumns) FROM core_externaltransaction e
                ORDER BY e.id DESC LIMIT \(reads.latestLimit)
                """, logger: logger)
            {
                answers.latest.append(try PostgresPrimitives.decodeExternal(row))
            }
            return reads.snapshot(answers)
        }
    }

    /// Writers append their running-total changes as rows (no writer waits on another's row); this folds them into
    /// one row per name. Rows a writer commits during the fold are not seen by its delete and stay for the next.
    public func compactRunningTotals() async throws {
        try await pg.query(
            """
            WITH folded AS (DELETE FROM core_runningtotal RETURNING name, value)
            INSERT INTO core_runningtotal (name, value) SELECT name, SUM(value)::BIGINT FROM folded GROUP BY name
            """, logger: logger)
    }

    public func ledgerCheckpoint() async throws -> LedgerCheckpoint {
        for try await (lastID, lastHash, entries, debits, credits, userNet) in try await pg.query(
            """
            SELECT last_id, last_hash, entries, debit_units, credit_units, user_net_units
            FROM core_ledgercheckpoint WHERE singleton = 1
            """, logger: logger
        ).decode((Int64, String, Int64, Int64, Int64, Int64).self) {
            return LedgerCheckpoint(
                head: LedgerHead(lastID: lastID, lastHash: lastHash), entries: entries, debitUnits: debits, creditUnits: credits,
                userNetUnits: userNet)
        }
        return .genesis
    }

    public func saveLedgerCheckpoint(_ c: LedgerCheckpoint) async throws {
        try await pg.query(
            """
            UPDATE core_ledgercheckpoint
            SET last_id = \(c.head.lastID), last_hash = \(c.head.lastHash), entries = \(c.entries), debit_units = \(c.debitUnits),
                credit_units = \(c.creditUnits), user_net_units = \(c.userNetUnits)
            WHERE singleton = 1 AND last_id < \(c.head.lastID)
            """, logger: logger)
    }

    /// Runs `body` in one read-only REPEATABLE READ transaction, ending it however `body` ends, so a failed read
    /// never hands a connection back to the pool with a transaction still open.
    private func readOnlySnapshot<T: Sendable>(_ body: @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let logger = self.logger
        return try await pg.withConnection { connection in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            do {
                let value = try await body(connection)
                try await connection.query("COMMIT", logger: logger)
                return value
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    public func verifyLedger(
        from checkpoint: LedgerCheckpoint, confirming: LedgerCheckpoint?, progress: @escaping @Sendable (Int) -> Void
    ) async throws -> LedgerChainVerifier {
        let logger = self.logger
        return try await readOnlySnapshot { connection in
            var verifier = LedgerChainVerifier(resumingFrom: checkpoint, confirming: confirming)
            var read = 0
            var batch: [LedgerEntry] = []
            batch.reserveCapacity(LedgerChainVerifier.batchSize)
            var after = checkpoint.head.lastID
            // A batch at a time in id order, each bounded by its LIMIT: memory stays flat however long the ledger
            // is, and the planner reads the primary key's order instead of sorting what a stale estimate takes for
            // a third of the table. Entries past the stored head are read too: `finish` reports them.
            while verifier.firstBreak == nil {
                for try await row in try await connection.query(
                    """
                    SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
                    FROM core_ledgerentry WHERE id > \(unescaped: String(after)) ORDER BY id
                    LIMIT \(unescaped: String(LedgerChainVerifier.batchSize))
                    """, logger: logger)
                {
                    let entry = try Self.decodeLedger(row)
                    after = entry.id
                    batch.append(entry)
                }
                let full = batch.count == LedgerChainVerifier.batchSize
                read += batch.count
                _ = verifier.check(batch)
                batch.removeAll(keepingCapacity: true)
                guard full else { break }
                progress(read)
            }
            var head = LedgerHead.genesis
            for try await (lastID, lastHash) in try await connection.query(
                "SELECT last_id, last_hash FROM core_ledgerhead WHERE singleton = 1", logger: logger
            ).decode((Int64, String).self) {
                head = LedgerHead(lastID: lastID, lastHash: lastHash)
            }
            verifier.finish(storedHead: head)
            return verifier
        }
    }

    /// PostgreSQL checkpoints on its own schedule; a forced one needs a superuser.
    public func checkpoint() async throws {}

    public func bytesByTable() async throws -> [String: Int64] {
        var bytes: [String: Int64] = [:]
        for try await (table, size) in try await pg.query(
            """
            SELECT c.relname::TEXT, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind = 'r'
            """, logger: logger
        ).decode((String, Int64).self) {
            bytes[table] = size
        }
        return bytes
    }

    public func cursor(named name: String) async throws -> Int64 {
        for try await value in try await pg.query("SELECT value FROM core_cursor WHERE name = \(name)", logger: logger).decode(Int64.self) {
            return value
        }
        return 0
    }

    public func setCursor(named name: String, to value: Int64) async throws {
        try await pg.query(
            """
            INSERT INTO core_cursor (name, value) VALUES (\(name), \(value))
            ON CONFLICT (name) DO UPDATE SET value = GREATEST(core_cursor.value, excluded.value)
            """, logger: logger)
    }
}

/// Ledger entries, one array per column.
struct LedgerEntryColumns: Sendable {
    var id: [Int64] = [], userID = NullableTextArray(), side: [String] = [], account: [String] = []
    var amountUnits: [Int64] = [], refType: [String] = [], refID: [String] = [], createdAt: [String] = []
    var prevHash: [String] = [], entryHash: [String] = []

    init() {}

    init(_ entries: [LedgerEntry]) {
        for entry in entries { append(entry) }
    }

    mutating func append(_ entry: LedgerEntry) {
        id.append(entry.id)
        userID.values.append(entry.userID)
        side.append(entry.side.rawValue)
        account.append(entry.account.rawValue)
        amountUnits.append(entry.amountUnits)
        refType.append(entry.refType.rawValue)
        refID.append(entry.refID)
        createdAt.append(entry.createdAt)
        prevHash.append(entry.prevHash)
        entryHash.append(entry.entryHash)
    }

    /// The ten columns, in the table's order, as array parameters.
    func appendBindings(to binds: inout PostgresBindings) {
        binds.append(id)
        binds.append(userID)
        binds.append(side)
        binds.append(account)
        binds.append(amountUnits)
        binds.append(refType)
        binds.append(refID)
        binds.append(createdAt)
        binds.append(prevHash)
        binds.append(entryHash)
    }
}

/// Inserts ledger entries and moves the head past them. Its text never changes, so it is prepared once per
/// connection.
private struct AppendLedgerEntries: PostgresPreparedStatement {
    static let sql = """
        WITH entries AS (
          INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
          SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
                               $9::text[], $10::text[])
        )
        UPDATE core_ledgerhead SET last_id = $11, last_hash = $12 WHERE singleton = 1
        """
    typealias Row = ()

    var entries: LedgerEntryColumns
    var head: LedgerHead

    func makeBindings() -> PostgresBindings {
        var binds = PostgresBindings(capacity: 12)
        entries.appendBindings(to: &binds)
        binds.append(head.lastID)
        binds.append(head.lastHash)
        return binds
    }

    func decodeRow(_ row: PostgresRow) throws {}
}

private struct TokenBalanceQuery: PostgresPreparedStatement {
    static let sql = "SELECT balance_units FROM core_tokenbalance WHERE user_id = $1"

    var userID: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(userID)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode(Int64.self) }
}
