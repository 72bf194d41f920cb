import ChainStub
import Foundation
import Logging
import NIOCore
import PKRCore
import PostgresNIO
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
    /// Redeems burned by one `pkr_burn` call, for tests that must know which path ran.
    let burnOneCallCount = Atomic<Int>(0)
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
        MintBatchCounts(oneCall: mintBatch.oneCallCount.load(ordering: .relaxed),
                        refused: mintBatch.oneCallMissCount.load(ordering: .relaxed),
                        rolledBack: mintBatch.rolledBackCount.load(ordering: .relaxed))
    }

    /// Connects once up front so that a wrong host or password fails start-up at once with a clear message,
    /// instead of the pool retrying in the background for a minute.
    public static func connect(settings: PostgresSettings, limits: MoneyLimits, nowMicros: @escaping @Sendable () -> Int64,
                               logger: Logger) async throws -> PostgresStore {
        let configuration = PostgresConnection.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                             password: settings.password, database: settings.database, tls: .disable)
        do {
            let probe = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            try await probe.close()
        } catch {
            throw ConfigError.refused("cannot connect to PostgreSQL at \(settings.host):\(settings.port) as \(settings.user) "
                + "to database \(settings.database): \(Self.describe(error))")
        }
        var clientConfiguration = PostgresClient.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                               password: settings.password, database: settings.database, tls: .disable)
        // Mints and burns all queue on the same few rows (one balance, one ledger head), so more sessions only add
        // lock waiters competing for the CPU with the lock holder: at 64 requests in flight, 8 connections gave
        // the same rate as 32 and less than half the p99. No code path holds one connection while taking another.
        clientConfiguration.options.maximumConnections = 8
        // The pool's own chatter (including a harmless race with its start-up) stays below the error level.
        var backgroundLogger = logger
        backgroundLogger.logLevel = .error
        return PostgresStore(client: PostgresClient(configuration: clientConfiguration, backgroundLogger: backgroundLogger),
                             availability: PostgresAvailability(configuration: configuration, logger: logger), limits: limits,
                             nowMicros: nowMicros, logger: logger)
    }

    init(client: PostgresClient, availability: PostgresAvailability, limits: MoneyLimits,
         nowMicros: @escaping @Sendable () -> Int64, logger: Logger) {
        self.client = client
        self.availability = availability
        self.runTasks = [Task { await client.run() }, Task { await availability.run() }]
        self.mintBatch = PostgresMintBatch(client: client, logger: logger)
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
                logger.notice("transaction retried", metadata: ["sqlstate": "\(error.serverInfo?[.sqlState] ?? "")", "attempt": "\(attempt)"])
                attempt += 1
            }
        }
    }

    static func isRetryable(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "40P01" || state == "40001"
    }

    // MARK: - Users

    public func seedDemoUser(walletAccount: String) async throws -> DemoUser {
        let createdAt = Timestamp.format(micros: nowMicros())
        let logger = self.logger
        return try await transaction { connection in
            // Instances seeding at once queue on this lock; the second finds the first's user.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Int64(0x706b_725f_7365_6564)))", logger: logger)
            if let existing = try await Self.user(connection, walletAccount: walletAccount, logger: logger) { return existing }
            let user = DemoUser(id: Identifiers.uuid(), email: SQLiteStore.demoEmail, displayName: SQLiteStore.demoDisplayName,
                                walletAccount: walletAccount, chainAddress: "0x" + Crypto.hex(Crypto.randomBytes(20)))
            try await connection.query("""
                INSERT INTO core_user (id, email, display_name, wallet_account, chain_address, created_at)
                VALUES (\(user.id), \(user.email), \(user.displayName), \(user.walletAccount), \(user.chainAddress), \(createdAt))
                """, logger: logger)
            try await connection.query("INSERT INTO core_tokenbalance (user_id, balance_units) VALUES (\(user.id), 0)", logger: logger)
            try await PostgresChainStub.openAddress(connection, user.chainAddress, logger: logger)
            return user
        }
    }

    public func demoUser() async throws -> DemoUser? {
        let rows = try await pg.query("""
            SELECT id, email, display_name, wallet_account, chain_address FROM core_user WHERE email = \(SQLiteStore.demoEmail)
            """, logger: logger)
        for try await (id, email, name, account, address) in rows.decode((String, String, String, String, String).self) {
            return DemoUser(id: id, email: email, displayName: name, walletAccount: account, chainAddress: address)
        }
        return nil
    }

    private static func user(_ connection: PostgresConnection, walletAccount: String? = nil, id: String? = nil,
                             logger: Logger) async throws -> DemoUser? {
        let rows = try await connection.query("""
            SELECT id, email, display_name, wallet_account, chain_address FROM core_user
            WHERE wallet_account = \(walletAccount) OR id = \(id)
            """, logger: logger)
        for try await (id, email, name, account, address) in rows.decode((String, String, String, String, String).self) {
            return DemoUser(id: id, email: email, displayName: name, walletAccount: account, chainAddress: address)
        }
        return nil
    }

    // MARK: - Provider transactions

    public func apply(_ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?) async throws -> ApplyOutcome {
        let now = nowMicros()
        let limits = self.limits
        let logger = self.logger
        if let credit = Self.mintCandidate(tx, via: path, inbound: inbound, nowMicros: now, limits: limits) {
            _ = try pg // An unreachable database fails at once rather than through the batch and then the fallback.
            if let job = await mintBatch.mint(credit) { return .minted(job) }
        }
        return try await transaction { connection in
            try await Self.applyAndLog(connection, tx, via: path, nowMicros: now, limits: limits, inbound: inbound, logger: logger)
        }
    }

    /// Polled mint batches written at once. The backend orders them anyway, and three were slower than two on
    /// two cores (BENCHMARKS.md).
    static let polledBatchesInFlightMax = 2

    public func applyPolled(_ txs: [ProviderTransaction]) async throws -> [ApplyOutcome] {
        let now = nowMicros()
        let limits = self.limits
        let logger = self.logger
        _ = try pg
        // New settled credits are minted in batches; everything else, and any credit a batch handed back, is
        // applied in a transaction of its own: a page-long transaction would hold the balance and ledger-head row
        // locks for seconds and stall every webhook and redeem behind a backlog.
        var outcomes = [ApplyOutcome?](repeating: nil, count: txs.count)
        let credits = txs.indices.compactMap { index in
            Self.mintCandidate(txs[index], via: .poll, inbound: nil, nowMicros: now, limits: limits).map { (index, $0) }
        }
        // Two batches in flight: while one holds the contended locks and commits, the next writes its uncontended
        // rows on another connection, then waits for the first to end (`pkr_mint_batch`, migration v5).
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
            outcomes[index] = try await transaction { connection in
                try await Self.applyAndLog(connection, tx, via: .poll, nowMicros: now, limits: limits, inbound: nil, logger: logger)
            }
        }
        return outcomes.map { $0! }
    }

    /// A transaction the batch may mint: a settled credit within the mint ceiling. Whether it is new is only known
    /// inside the batch's transaction.
    private static func mintCandidate(_ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?, nowMicros: Int64,
                                      limits: MoneyLimits) -> PostgresMintBatch.Credit? {
        guard case .mint(let units)? = try? SettlementPolicy.action(for: tx, maxMintUnits: limits.maxMintUnits) else { return nil }
        return PostgresMintBatch.Credit(tx: tx, path: path, amountUnits: units, inbound: inbound, nowMicros: nowMicros)
    }

    /// Applies one transaction and writes its inbound-log and quarantine rows, inside the caller's transaction.
    private static func applyAndLog(_ connection: PostgresConnection, _ tx: ProviderTransaction, via path: ArrivalPath,
                                    nowMicros now: Int64, limits: MoneyLimits, inbound: InboundDraft?,
                                    logger: Logger) async throws -> ApplyOutcome {
        let outcome = try await apply(connection, tx, via: path, nowMicros: now, limits: limits, logger: logger)
        if let inbound {
            var jobID: String?
            if case .minted(let job) = outcome { jobID = job.id }
            if case .duplicate(let id) = outcome { jobID = id }
            let inboundID = try await insertInbound(connection, inbound, outcome: outcome.code, jobID: jobID, logger: logger)
            if case .conflict(let fields) = outcome {
                try await quarantine(connection, tx: tx, inboundID: inboundID, via: path, fields: fields, body: inbound.body,
                                     nowMicros: now, logger: logger)
            }
        } else if case .conflict(let fields) = outcome {
            try await quarantine(connection, tx: tx, inboundID: nil, via: path, fields: fields, body: WebhookEvent.encode(tx),
                                 nowMicros: now, logger: logger)
        }
        return outcome
    }

    private static func apply(_ connection: PostgresConnection, _ tx: ProviderTransaction, via path: ArrivalPath, nowMicros: Int64,
                              limits: MoneyLimits, logger: Logger) async throws -> ApplyOutcome {
        let seenColumn = path == .webhook ? "seen_via_webhook" : "seen_via_poll"
        var existing = try await externalTransaction(connection, providerTxID: tx.providerTxID, lock: true, logger: logger)
        if case .conflict(let fields) = SettlementPolicy.classify(recorded: existing?.tx, incoming: tx) {
            return .conflict(fields: fields)
        }
        guard let user = try await user(connection, walletAccount: tx.account, logger: logger) else {
            if path == .poll { return .ignoredUnknownAccount }
            throw GatewayError.unknownAccount(tx.account)
        }
        if existing == nil {
            let recordedAt = Timestamp.format(micros: nowMicros)
            // Another instance may insert the same id at this moment: the loser of the race waits on the unique
            // index, inserts nothing, and then treats the winner's row as the recorded one.
            let inserted = try await connection.query("""
                INSERT INTO core_externaltransaction
                  (provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
                   occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, \(unescaped: seenColumn))
                VALUES (\(tx.providerTxID), \(tx.account), \(user.id), \(tx.direction.rawValue), \(tx.amountPaisa),
                        \(tx.status.rawValue), \(tx.memo), \(tx.reference), \(Timestamp.format(micros: tx.occurredAtMicros)),
                        \(tx.occurredAtMicros), \(recordedAt), \(nowMicros), \(path.rawValue), TRUE)
                ON CONFLICT (provider_tx_id) DO NOTHING RETURNING id
                """, logger: logger).collect()
            if let row = inserted.first {
                let record = ExternalTransactionRecord(id: try row.decode(Int64.self), tx: tx, recordedAt: recordedAt,
                                                       firstSeenVia: path, seenViaWebhook: path == .webhook,
                                                       seenViaPoll: path == .poll, lagMicros: nowMicros - tx.occurredAtMicros,
                                                       mintJobID: nil, matchedJobID: nil, flag: nil)
                return try await settle(connection, record, user: user, nowMicros: nowMicros, limits: limits, logger: logger)
            }
            existing = try await externalTransaction(connection, providerTxID: tx.providerTxID, lock: true, logger: logger)
        }
        guard let existing else { throw GatewayError.storeUnavailable("a concurrent insert vanished; retry") }
        let arrival = SettlementPolicy.classify(recorded: existing.tx, incoming: tx)
        if case .conflict(let fields) = arrival { return .conflict(fields: fields) }
        try await connection.query("UPDATE core_externaltransaction SET \(unescaped: seenColumn) = TRUE WHERE id = \(existing.id)",
                                   logger: logger)
        guard case .advance(let status) = arrival else { return .duplicate(jobID: existing.mintJobID ?? existing.matchedJobID) }
        try await connection.query("UPDATE core_externaltransaction SET status = \(status.rawValue) WHERE id = \(existing.id)",
                                   logger: logger)
        var advanced = existing
        advanced.tx.status = status
        return try await settle(connection, advanced, user: user, nowMicros: nowMicros, limits: limits, logger: logger)
    }

    private static func settle(_ connection: PostgresConnection, _ record: ExternalTransactionRecord, user: DemoUser,
                               nowMicros: Int64, limits: MoneyLimits, logger: Logger) async throws -> ApplyOutcome {
        switch try SettlementPolicy.action(for: record.tx, maxMintUnits: limits.maxMintUnits) {
        case .mint(let units):
            return .minted(try await mint(connection, record, user: user, amountUnits: units, nowMicros: nowMicros, logger: logger))
        case .holdAboveLimit:
            try await connection.query("UPDATE core_externaltransaction SET flag = 'above_mint_limit' WHERE id = \(record.id)",
                                       logger: logger)
            return .recorded(note: ApplyOutcome.heldNote)
        case .matchPayout:
            return .recorded(note: try await matchDebit(connection, record, logger: logger))
        case .flagFailedPayout:
            try await connection.query("UPDATE core_externaltransaction SET flag = 'failed_payout' WHERE id = \(record.id)",
                                       logger: logger)
            return .recorded(note: ApplyOutcome.failedPayoutNote)
        case .none:
            return .recorded(note: "recorded; nothing to mint while \(record.tx.status.rawValue)")
        }
    }

    private static func matchDebit(_ connection: PostgresConnection, _ record: ExternalTransactionRecord, logger: Logger) async throws -> String {
        let tx = record.tx
        let units = try Money.paisaToUnits(tx.amountPaisa)
        let rows = try await connection.query("""
            SELECT id FROM core_chainjob
            WHERE job_type = 'burn' AND (id = \(tx.reference ?? "") OR payout_provider_tx_id = \(tx.providerTxID))
              AND amount_units = \(units)
              AND NOT EXISTS (SELECT 1 FROM core_externaltransaction e WHERE e.matched_job_id = core_chainjob.id)
            FOR UPDATE
            """, logger: logger).collect()
        if let row = rows.first {
            let jobID = try row.decode(String.self)
            try await connection.query("UPDATE core_externaltransaction SET matched_job_id = \(jobID) WHERE id = \(record.id)", logger: logger)
            try await connection.query("""
                UPDATE core_chainjob SET payout_state = 'confirmed', payout_provider_tx_id = \(tx.providerTxID) WHERE id = \(jobID)
                """, logger: logger)
            return ApplyOutcome.payoutConfirmedNote(jobID)
        }
        try await connection.query("UPDATE core_externaltransaction SET flag = 'unmatched_debit' WHERE id = \(record.id)", logger: logger)
        return ApplyOutcome.unmatchedDebitNote
    }

    private static func mint(_ connection: PostgresConnection, _ record: ExternalTransactionRecord, user: DemoUser, amountUnits: Int64,
                             nowMicros: Int64, logger: Logger) async throws -> ChainJob {
        let createdAt = Timestamp.format(micros: nowMicros)
        let jobID = Identifiers.timeOrderedUUID(unixMillis: nowMicros / 1000)
        // The rows nobody else touches first; then the contended rows, as late and as few round trips as possible,
        // since their locks are held until the commit.
        let txHash = try await PostgresChainStub.recordReceipt(connection, op: .mint, address: user.chainAddress,
                                                               amountUnits: amountUnits, reference: jobID, createdAt: createdAt,
                                                               nowMicros: nowMicros, logger: logger)
        try await connection.query("""
            INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, memo, created_at)
            VALUES (\(jobID), 'mint', \(user.id), \(amountUnits), 'confirmed', \(txHash), \(record.tx.providerTxID),
                    \(record.tx.memo), \(createdAt))
            """, logger: logger)
        // Lock order for every mint and burn: token balance, chain stub balance, ledger head. One order, no deadlock.
        let updated = try await connection.query("""
            UPDATE core_tokenbalance SET balance_units = balance_units + \(amountUnits) WHERE user_id = \(user.id) RETURNING 1
            """, logger: logger).collect()
        guard updated.count == 1 else { throw GatewayError.storeUnavailable("token balance row missing for user \(user.id)") }
        try await PostgresChainStub.moveBalance(connection, op: .mint, address: user.chainAddress, amountUnits: amountUnits,
                                                logger: logger)
        try await appendLedger(connection, job: .mint, jobID: jobID, userID: user.id, amountUnits: amountUnits,
                               createdAt: createdAt, logger: logger)
        return ChainJob(id: jobID, jobType: .mint, amountUnits: amountUnits, txHash: txHash, createdAt: createdAt)
    }

    /// One job's amount to post to the ledger.
    struct LedgerAppend: Sendable {
        var job: ChainJobType
        var jobID: String
        var userID: String
        var amountUnits: Int64
        var createdAt: String
    }

    /// Appends a job's postings. The head row's lock orders appends across all instances.
    private static func appendLedger(_ connection: PostgresConnection, job: ChainJobType, jobID: String, userID: String,
                                     amountUnits: Int64, createdAt: String, logger: Logger) async throws {
        var head: LedgerHead?
        for try await (lastID, lastHash) in try await connection.query(
            "SELECT last_id, last_hash FROM core_ledgerhead WHERE singleton = 1 FOR UPDATE", logger: logger).decode((Int64, String).self) {
            head = LedgerHead(lastID: lastID, lastHash: lastHash)
        }
        guard let head else { throw GatewayError.storeUnavailable("ledger head row missing") }
        try await appendLedger(connection, after: head, [LedgerAppend(job: job, jobID: jobID, userID: userID, amountUnits: amountUnits,
                                                                      createdAt: createdAt)], logger: logger)
    }

    /// Appends the jobs' postings, in order, after `head`, which the caller read and locked in this transaction.
    /// Returns the new head.
    @discardableResult
    static func appendLedger(_ connection: PostgresConnection, after head: LedgerHead, _ appends: [LedgerAppend],
                             logger: Logger) async throws -> LedgerHead {
        // The entries and the new head go in one statement, one round trip while the head's lock is held.
        let (entries, newHead) = ledgerEntries(after: head, appends)
        _ = try await connection.execute(AppendLedgerEntries(entries: entries, head: newHead), logger: logger)
        return newHead
    }

    /// The jobs' postings as entries chained after `head`, and the head after the last of them.
    static func ledgerEntries(after head: LedgerHead, _ appends: [LedgerAppend]) -> (LedgerEntryColumns, LedgerHead) {
        precondition(!appends.isEmpty, "an append posts at least one job")
        var head = head
        var entries = LedgerEntryColumns()
        for append in appends {
            for posting in PostingRules.postings(for: append.job, amountUnits: append.amountUnits) {
                let entry = LedgerEntry.next(after: head, userID: posting.account == .userToken ? append.userID : nil,
                                             posting: posting, refType: append.job, refID: append.jobID, createdAt: append.createdAt)
                entries.append(entry)
                head = LedgerHead(entry)
            }
        }
        return (entries, head)
    }

    public func logRejectedInbound(_ inbound: InboundDraft) async throws {
        let logger = self.logger
        try await pg.withConnection { connection in
            _ = try await Self.insertInbound(connection, inbound, outcome: "rejected", jobID: nil, logger: logger)
        }
    }

    private static func insertInbound(_ connection: PostgresConnection, _ inbound: InboundDraft, outcome: String, jobID: String?,
                                      logger: Logger) async throws -> Int64 {
        let error = inbound.errorCode ?? (outcome == "conflict" ? "webhook_conflict" : nil)
        let rows = try await connection.query("""
            INSERT INTO core_webhookinbound
              (received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
               provider_tx_id, job_id, body_bytes, body)
            VALUES (\(Timestamp.format(micros: inbound.receivedAtMicros)), \(inbound.messageID), \(inbound.webhookTimestamp),
                    \(inbound.sourceAddress), \(inbound.scheme?.rawValue), \(inbound.verification), \(outcome), \(error),
                    \(inbound.providerTxID), \(jobID), \(inbound.body.count), \(ByteBuffer(bytes: inbound.body)))
            RETURNING id
            """, logger: logger).collect()
        return try rows[0].decode(Int64.self)
    }

    private static func quarantine(_ connection: PostgresConnection, tx: ProviderTransaction, inboundID: Int64?, via: ArrivalPath,
                                   fields: [String], body: [UInt8], nowMicros: Int64, logger: Logger) async throws {
        try await connection.query("""
            INSERT INTO core_webhookquarantine (inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at)
            VALUES (\(inboundID), \(tx.providerTxID), \(via.rawValue), \(fields.joined(separator: ",")),
                    \(ByteBuffer(bytes: body)), \(Timestamp.format(micros: nowMicros)))
            """, logger: logger)
    }

    private static let externalColumns = """
        e.id, e.provider_tx_id, e.account, e.direction, e.amount_paisa, e.status, e.occurred_at_micros, e.memo, e.reference,
        e.recorded_at, e.first_seen_via, e.seen_via_webhook, e.seen_via_poll, e.recorded_at_micros, e.matched_job_id, e.flag,
        (SELECT j.id FROM core_chainjob j WHERE j.external_tx_id = e.provider_tx_id)
        """

    private static func externalTransaction(_ connection: PostgresConnection, providerTxID: String, lock: Bool,
                                            logger: Logger) async throws -> ExternalTransactionRecord? {
        let rows = try await connection.query("""
            SELECT \(unescaped: externalColumns) FROM core_externaltransaction e WHERE e.provider_tx_id = \(providerTxID)
            \(unescaped: lock ? "FOR UPDATE OF e" : "")
            """, logger: logger).collect()
        return try rows.first.map(decodeExternal)
    }

    private static func decodeExternal(_ row: PostgresRow) throws -> ExternalTransactionRecord {
        let (id, txID, account, direction, amount, status, occurred, memo, reference, recordedAt, firstSeen, viaWebhook, viaPoll,
             recordedMicros, matched, flag, mintJob) =
            try row.decode((Int64, String, String, String, Int64, String, Int64, String, String?, String, String, Bool, Bool,
                            Int64, String?, String?, String?).self)
        guard let direction = TransactionDirection(rawValue: direction), let status = TransactionStatus(rawValue: status),
              let path = ArrivalPath(rawValue: firstSeen), amount > 0 else {
            throw GatewayError.storeUnavailable("core_externaltransaction row \(id) is corrupt")
        }
        let tx = ProviderTransaction(providerTxID: txID, account: account, direction: direction, amountPaisa: amount,
                                     status: status, occurredAtMicros: occurred, memo: memo, reference: reference)
        return ExternalTransactionRecord(id: id, tx: tx, recordedAt: recordedAt, firstSeenVia: path, seenViaWebhook: viaWebhook,
                                         seenViaPoll: viaPoll, lagMicros: recordedMicros - occurred, mintJobID: mintJob,
                                         matchedJobID: matched, flag: flag)
    }

    // MARK: - Mint and redeem

    public func mint(providerTxID: String) async throws -> ChainJob {
        let now = nowMicros()
        let limits = self.limits
        let logger = self.logger
        return try await transaction { connection in
            guard let record = try await Self.externalTransaction(connection, providerTxID: providerTxID, lock: true, logger: logger) else {
                throw GatewayError.unknownProviderTransaction(providerTxID)
            }
            if let jobID = record.mintJobID, let job = try await Self.job(connection, id: jobID, logger: logger) { return job }
            let units = try SettlementPolicy.manualMintUnits(for: record.tx, maxMintUnits: limits.maxMintUnits)
            guard let user = try await Self.user(connection, walletAccount: record.tx.account, logger: logger) else {
                throw GatewayError.unknownAccount(record.tx.account)
            }
            try await connection.query("""
                UPDATE core_externaltransaction SET flag = NULL WHERE id = \(record.id) AND flag = 'above_mint_limit'
                """, logger: logger)
            return try await Self.mint(connection, record, user: user, amountUnits: units, nowMicros: now, logger: logger)
        }
    }

    private static func job(_ connection: PostgresConnection, id: String, logger: Logger) async throws -> ChainJob? {
        let rows = try await connection.query("""
            SELECT id, job_type, amount_units, tx_hash, created_at FROM core_chainjob WHERE id = \(id)
            """, logger: logger)
        for try await (id, type, amount, hash, created) in rows.decode((String, String, Int64, String, String).self) {
            guard let type = ChainJobType(rawValue: type) else { throw GatewayError.storeUnavailable("core_chainjob \(id) is corrupt") }
            return ChainJob(id: id, jobType: type, amountUnits: amount, txHash: hash, createdAt: created)
        }
        return nil
    }

    public func redeem(_ command: RedeemCommand) async throws -> RedeemResult {
        precondition(command.amountUnits > 0 && command.amountUnits % Money.unitsPerPaisa == 0, "validated by the caller")
        if let burned = try await burnInOneCall(command) { return burned }
        return try await redeemInTransaction(command)
    }

    /// A new redeem in one call to `pkr_burn` (migration v4): the balance, chain and head locks are held while the
    /// server runs it and commits, not across this process's round trips, which is what let only a few hundred
    /// concurrent redeems a second through. Answers nil when the idempotency key is taken; the transaction path
    /// then replays the stored answer or refuses the key as in flight.
    private func burnInOneCall(_ command: RedeemCommand) async throws -> RedeemResult? {
        let now = nowMicros()
        let createdAt = Timestamp.format(micros: now)
        let job = ChainJob(id: Identifiers.timeOrderedUUID(unixMillis: now / 1000), jobType: .burn, amountUnits: command.amountUnits,
                           txHash: Identifiers.chainTxHash(unixMillis: now / 1000), createdAt: createdAt)
        let body = RedeemResult.responseBody(job)
        let postings = PostingRules.postings(for: .burn, amountUnits: command.amountUnits)
        let userIDs = NullableTextArray(values: postings.map { $0.account == .userToken ? command.userID : nil })
        let rows = try await pg.query("""
            SELECT outcome, available_units, wallet_account FROM pkr_burn(
              \(command.userID), \(command.amountUnits), \(job.id), \(job.txHash), \(command.idempotencyKey),
              \(SQLiteStore.redeemEndpoint), \(command.requestFingerprint), \(body), \(command.memo), \(createdAt),
              \(userIDs), \(postings.map(\.side.rawValue)), \(postings.map(\.account.rawValue)), \(postings.map(\.amountUnits)))
            """, logger: logger)
        for try await (outcome, availableUnits, walletAccount) in rows.decode((Int32, Int64?, String?).self) {
            switch outcome {
            case 1:
                guard let walletAccount else { throw GatewayError.storeUnavailable("pkr_burn answered no wallet account") }
                burnOneCallCount.add(1, ordering: .relaxed)
                return .burned(job, walletAccount: walletAccount, responseBody: body)
            case 0:
                return nil
            case -1:
                throw GatewayError.insufficientBalance(availableUnits: availableUnits ?? 0, requestedUnits: command.amountUnits)
            case -2:
                let logger = self.logger
                let user = try await pg.withConnection { try await Self.user($0, id: command.userID, logger: logger) }
                throw ChainStubError.rejected(address: user?.chainAddress ?? "", op: .burn)
            case -3:
                throw GatewayError.demoNotSeeded
            default:
                throw GatewayError.storeUnavailable("pkr_burn answered \(outcome)")
            }
        }
        throw GatewayError.storeUnavailable("pkr_burn answered no row")
    }

    /// A redeem in a transaction of round trips: the path for a key already taken (a replay, or one still in flight).
    private func redeemInTransaction(_ command: RedeemCommand) async throws -> RedeemResult {
        let now = nowMicros()
        let logger = self.logger
        return try await transaction { connection in
            let createdAt = Timestamp.format(micros: now)
            if let key = command.idempotencyKey {
                // Claim the key first. A concurrent request with the same key (on any instance) waits here on the
                // primary key until this transaction ends, then finds the stored answer.
                let claimed = try await connection.query("""
                    INSERT INTO core_idempotencyrecord
                      (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
                    VALUES (\(command.userID), \(SQLiteStore.redeemEndpoint), \(key), \(command.requestFingerprint), 0, '', \(createdAt))
                    ON CONFLICT DO NOTHING RETURNING 1
                    """, logger: logger).collect()
                if claimed.isEmpty {
                    let rows = try await connection.query("""
                        SELECT request_fingerprint, response_status, response_body FROM core_idempotencyrecord
                        WHERE user_id = \(command.userID) AND endpoint = \(SQLiteStore.redeemEndpoint) AND idempotency_key = \(key)
                        """, logger: logger)
                    for try await (fingerprint, status, body) in rows.decode((String, Int, String).self) {
                        guard fingerprint == command.requestFingerprint else { throw GatewayError.idempotencyKeyReused }
                        return .replayed(status: status, responseBody: body)
                    }
                    throw GatewayError.idempotencyRequestInFlight
                }
            }
            guard let user = try await Self.user(connection, id: command.userID, logger: logger) else { throw GatewayError.demoNotSeeded }
            // As for a mint: the uncontended rows first, the locked ones last. An insufficient balance below rolls
            // all of it back.
            let jobID = Identifiers.timeOrderedUUID(unixMillis: now / 1000)
            let txHash = try await PostgresChainStub.recordReceipt(connection, op: .burn, address: user.chainAddress,
                                                                   amountUnits: command.amountUnits, reference: jobID,
                                                                   createdAt: createdAt, nowMicros: now, logger: logger)
            try await connection.query("""
                INSERT INTO core_chainjob
                  (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key, memo, payout_state, created_at)
                VALUES (\(jobID), 'burn', \(user.id), \(command.amountUnits), 'confirmed', \(txHash), \(command.idempotencyKey),
                        \(command.memo), 'requested', \(createdAt))
                """, logger: logger)
            let job = ChainJob(id: jobID, jobType: .burn, amountUnits: command.amountUnits, txHash: txHash, createdAt: createdAt)
            let body = RedeemResult.responseBody(job)
            if let key = command.idempotencyKey {
                try await connection.query("""
                    UPDATE core_idempotencyrecord SET response_status = 201, response_body = \(body)
                    WHERE user_id = \(user.id) AND endpoint = \(SQLiteStore.redeemEndpoint) AND idempotency_key = \(key)
                    """, logger: logger)
            }
            let debited = try await connection.query("""
                UPDATE core_tokenbalance SET balance_units = balance_units - \(command.amountUnits)
                WHERE user_id = \(user.id) AND balance_units >= \(command.amountUnits) RETURNING 1
                """, logger: logger).collect()
            guard debited.count == 1 else {
                var available: Int64 = 0
                for try await balance in try await connection.query(
                    "SELECT balance_units FROM core_tokenbalance WHERE user_id = \(user.id)", logger: logger).decode(Int64.self) {
                    available = balance
                }
                throw GatewayError.insufficientBalance(availableUnits: available, requestedUnits: command.amountUnits)
            }
            try await PostgresChainStub.moveBalance(connection, op: .burn, address: user.chainAddress,
                                                    amountUnits: command.amountUnits, logger: logger)
            try await Self.appendLedger(connection, job: .burn, jobID: jobID, userID: user.id, amountUnits: command.amountUnits,
                                        createdAt: createdAt, logger: logger)
            return .burned(job, walletAccount: user.walletAccount, responseBody: body)
        }
    }

    public func markPayoutSubmitted(jobID: String, providerTxID: String) async throws {
        try await pg.query("""
            UPDATE core_chainjob SET payout_state = 'submitted', payout_provider_tx_id = \(providerTxID)
            WHERE id = \(jobID) AND job_type = 'burn' AND payout_state = 'requested'
            """, logger: logger)
    }

    public func payoutsAwaitingSubmission(olderThanMicros: Int64, limit: Int) async throws -> [PendingPayout] {
        let cutoff = Timestamp.format(micros: olderThanMicros)
        let rows = try await pg.query("""
            SELECT j.id, u.wallet_account, j.amount_units, j.memo FROM core_chainjob j JOIN core_user u ON u.id = j.user_id
            WHERE j.job_type = 'burn' AND j.payout_state = 'requested' AND j.created_at <= \(cutoff)
            ORDER BY j.created_at LIMIT \(limit)
            """, logger: logger)
        var out: [PendingPayout] = []
        for try await (id, account, amount, memo) in rows.decode((String, String, Int64, String).self) {
            out.append(PendingPayout(jobID: id, walletAccount: account, amountUnits: amount, memo: memo))
        }
        return out
    }

    // MARK: - Reads

    public func tokenBalanceUnits(userID: String) async throws -> Int64 {
        // The hottest read: prepared once per connection, so each call skips the parse and the plan.
        for try await balance in try await pg.execute(TokenBalanceQuery(userID: userID), logger: logger) {
            return balance
        }
        return 0
    }

    public func ledgerEntries(limit: Int, beforeID: Int64?) async throws -> [LedgerEntry] {
        let rows = try await pg.query("""
            SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
            FROM core_ledgerentry WHERE id < \(beforeID ?? Int64.max) ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [LedgerEntry] = []
        for try await row in rows { out.append(try Self.decodeLedger(row)) }
        return out
    }

    private static func decodeLedger(_ row: PostgresRow) throws -> LedgerEntry {
        let (id, userID, side, account, amount, refType, refID, createdAt, prevHash, entryHash) =
            try row.decode((Int64, String?, String, String, Int64, String, String, String, String, String).self)
        guard let side = LedgerSide(rawValue: side), let account = LedgerAccount(rawValue: account),
              let refType = ChainJobType(rawValue: refType) else {
            throw GatewayError.storeUnavailable("core_ledgerentry row \(id) is corrupt")
        }
        return LedgerEntry(id: id, userID: userID, side: side, account: account, amountUnits: amount, refType: refType,
                           refID: refID, createdAt: createdAt, prevHash: prevHash, entryHash: entryHash)
    }

    public func externalTransactions(limit: Int, beforeID: Int64?) async throws -> [ExternalTransactionRecord] {
        let rows = try await pg.query("""
            SELECT \(unescaped: Self.externalColumns) FROM core_externaltransaction e
            WHERE e.id < \(beforeID ?? Int64.max) ORDER BY e.id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [ExternalTransactionRecord] = []
        for try await row in rows { out.append(try Self.decodeExternal(row)) }
        return out
    }

    public func inboundLog(limit: Int, beforeID: Int64?) async throws -> [InboundRecord] {
        let rows = try await pg.query("""
            SELECT id, received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                   provider_tx_id, job_id, body_bytes
            FROM core_webhookinbound WHERE id < \(beforeID ?? Int64.max) ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [InboundRecord] = []
        for try await (id, received, messageID, timestamp, source, scheme, verification, outcome, error, txID, jobID, bytes)
            in rows.decode((Int64, String, String?, String?, String?, String?, String, String, String?, String?, String?, Int).self) {
            out.append(InboundRecord(id: id, received_at: received, message_id: messageID, webhook_timestamp: timestamp,
                                     source_address: source, scheme: scheme, verification: verification, outcome: outcome,
                                     error: error, provider_tx_id: txID, job_id: jobID, body_bytes: bytes))
        }
        return out
    }

    public func quarantine(limit: Int, beforeID: Int64?) async throws -> [QuarantineRecord] {
        let rows = try await pg.query("""
            SELECT id, inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at
            FROM core_webhookquarantine WHERE id < \(beforeID ?? Int64.max) ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [QuarantineRecord] = []
        for try await (id, inboundID, txID, via, fields, body, created)
            in rows.decode((Int64, Int64?, String, String, String, ByteBuffer, String).self) {
            out.append(QuarantineRecord(id: id, inbound_id: inboundID, provider_tx_id: txID, arrived_via: via,
                                        differing_fields: fields.split(separator: ",").map(String.init),
                                        body: String(buffer: body), created_at: created))
        }
        return out
    }

    public func reconciliationSnapshot() async throws -> ReconciliationSnapshot {
        let logger = self.logger
        // One REPEATABLE READ transaction: every figure comes from the same snapshot.
        return try await readOnlySnapshot { connection in
                func int(_ sql: String) async throws -> Int64 {
                    for try await value in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(Int64.self) {
                        return value
                    }
                    return 0
                }
                func strings(_ sql: String) async throws -> [String] {
                    var out: [String] = []
                    for try await value in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(String.self) {
                        out.append(value)
                    }
                    return out
                }
                var latest: [ExternalTransactionRecord] = []
                for try await row in try await connection.query("""
                    SELECT \(unescaped: Self.externalColumns) FROM core_externaltransaction e ORDER BY e.id DESC LIMIT 10
                    """, logger: logger) {
                    latest.append(try Self.decodeExternal(row))
                }
                var lags: [Int64] = []
                var webhookOnly = 0, pollOnly = 0, both = 0
                for try await (webhook, poll, lag) in try await connection.query("""
                    SELECT seen_via_webhook, seen_via_poll, recorded_at_micros - occurred_at_micros FROM core_externaltransaction
                    """, logger: logger).decode((Bool, Bool, Int64).self) {
                    if webhook && poll { both += 1 } else if webhook { webhookOnly += 1 } else { pollOnly += 1 }
                    lags.append(max(0, lag))
                }
                lags.sort()
                let snapshot = ReconciliationSnapshot(
                    mintedUnits: try await int("SELECT COALESCE(SUM(amount_units), 0)::BIGINT FROM core_chainjob WHERE job_type = 'mint'"),
                    burnedUnits: try await int("SELECT COALESCE(SUM(amount_units), 0)::BIGINT FROM core_chainjob WHERE job_type = 'burn'"),
                    tokenBalanceUnits: try await int("SELECT COALESCE(SUM(balance_units), 0)::BIGINT FROM core_tokenbalance"),
                    chainStubUnits: try await int("SELECT COALESCE(SUM(balance_units), 0)::BIGINT FROM chain_stub_chainstubbalance"),
                    settledCreditsUnminted: try await strings("""
                        SELECT e.provider_tx_id FROM core_externaltransaction e
                        WHERE e.direction = 'credit' AND e.status = 'settled' AND e.flag IS NULL
                          AND NOT EXISTS (SELECT 1 FROM core_chainjob j WHERE j.external_tx_id = e.provider_tx_id)
                        """),
                    heldCreditPaisa: try await int("""
                        SELECT COALESCE(SUM(amount_paisa), 0)::BIGINT FROM core_externaltransaction WHERE flag = 'above_mint_limit'
                        """),
                    creditsMintedMoreThanOnce: try await strings("""
                        SELECT external_tx_id FROM core_chainjob WHERE job_type = 'mint' GROUP BY external_tx_id HAVING COUNT(*) > 1
                        """),
                    payoutRequestedUnits: try await int("""
                        SELECT COALESCE(SUM(amount_units), 0)::BIGINT FROM core_chainjob WHERE job_type = 'burn' AND payout_state = 'requested'
                        """),
                    burnsAwaitingDebit: try await strings("""
                        SELECT id FROM core_chainjob WHERE job_type = 'burn' AND payout_state <> 'confirmed' ORDER BY created_at
                        """),
                    burnsWithSeveralDebits: try await strings("""
                        SELECT matched_job_id FROM core_externaltransaction WHERE matched_job_id IS NOT NULL
                        GROUP BY matched_job_id HAVING COUNT(*) > 1
                        """),
                    unmatchedDebits: try await strings("""
                        SELECT provider_tx_id FROM core_externaltransaction WHERE flag IN ('unmatched_debit', 'failed_payout')
                        """),
                    ledgerUserNetUnits: try await int("""
                        SELECT COALESCE(SUM(CASE side WHEN 'debit' THEN amount_units ELSE -amount_units END), 0)::BIGINT
                        FROM core_ledgerentry WHERE account = 'user_token'
                        """),
                    latest: latest,
                    arrivals: ArrivalStats(webhookOnly: webhookOnly, pollOnly: pollOnly, both: both, lagsMicros: lags,
                                           foundByPollFirst: try await strings("""
                                               SELECT provider_tx_id FROM core_externaltransaction WHERE first_seen_via = 'poll'
                                               ORDER BY id DESC LIMIT 50
                                               """)))
                return snapshot
        }
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

    public func verifyLedger() async throws -> LedgerChainVerifier {
        let logger = self.logger
        return try await readOnlySnapshot { connection in
            var verifier = LedgerChainVerifier()
            var batch: [LedgerEntry] = []
            // Rows stream from the server and are checked a batch at a time; memory stays flat however long the
            // ledger is.
            for try await row in try await connection.query("""
                SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
                FROM core_ledgerentry ORDER BY id
                """, logger: logger) {
                guard verifier.firstBreak == nil else { continue }
                batch.append(try Self.decodeLedger(row))
                if batch.count == LedgerChainVerifier.batchSize {
                    _ = verifier.check(batch)
                    batch.removeAll(keepingCapacity: true)
                }
            }
            _ = verifier.check(batch)
            var head = LedgerHead.genesis
            for try await (lastID, lastHash) in try await connection.query(
                "SELECT last_id, last_hash FROM core_ledgerhead WHERE singleton = 1", logger: logger).decode((Int64, String).self) {
                head = LedgerHead(lastID: lastID, lastHash: lastHash)
            }
            verifier.finish(storedHead: head)
            return verifier
        }
    }

    public func cursor(named name: String) async throws -> Int64 {
        for try await value in try await pg.query("SELECT value FROM core_cursor WHERE name = \(name)", logger: logger).decode(Int64.self) {
            return value
        }
        return 0
    }

    public func setCursor(named name: String, to value: Int64) async throws {
        try await pg.query("""
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
