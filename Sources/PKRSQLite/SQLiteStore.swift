import ChainStub
import Foundation
import GRDB
import PKRApplication
import PKRCore
import SQLiteSupport

/// The embedded store: SQLite in WAL mode through GRDB. One write transaction per business change.
public final class SQLiteStore: GatewayStore {
    /// `PRAGMA synchronous` reads back 2 for FULL.
    static let synchronousFull = 2

    public let database: DatabasePool
    let groupCommit: GroupCommit<WriteScope>
    private let checkpointer: WALCheckpointer
    private let limits: MoneyLimits
    private let nowMicros: @Sendable () -> Int64

    /// Opens (creating if needed) the database file. `synchronous = FULL` makes every commit durable before
    /// it returns, which is what a 2xx promises.
    public init(path: String, limits: MoneyLimits, nowMicros: @escaping @Sendable () -> Int64) throws {
        SQLiteProcess.configure()
        var checkpointConfiguration = Configuration()
        checkpointConfiguration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        let checkpointer = WALCheckpointer(path: path, configuration: checkpointConfiguration)
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
            // The writer gets 16 MiB of page cache (the default is 2 MiB) so that the unique indexes on random ids
            // stay in memory; readers make point lookups and keep the default 2 MiB each, which bounds the pool's
            // memory (five readers at 4 MiB put the server at 99 MiB under the benchmark).
            try db.execute(sql: db.configuration.readonly ? "PRAGMA cache_size = -2048" : "PRAGMA cache_size = -16384")
            if !db.configuration.readonly {
                checkpointer.install(on: db)
                // Group commit gives every job a savepoint, and SQLite saves each page a savepoint changes in a
                // statement journal; past 64 KiB that journal spilled to a temporary file, a pwrite per page on
                // the writer. Kept in memory it holds at most one batch's pages and is freed at the commit.
                try db.execute(sql: "PRAGMA temp_store = MEMORY")
            }
        }
        self.database = try DatabasePool(path: path, configuration: configuration)
        // GRDB's pool switches its writer to `synchronous = NORMAL` when it sets up WAL mode, after
        // `prepareDatabase` has run: NORMAL syncs the WAL only at checkpoints, so a commit could be lost to a power
        // failure after its 2xx. FULL is set again here, once the pool is open, and checked.
        try database.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            let level = try Int.fetchOne(db, sql: "PRAGMA synchronous")
            guard level == Self.synchronousFull else {
                throw DatabaseError(message: "the writer runs with PRAGMA synchronous = \(String(describing: level)), not FULL")
            }
        }
        self.checkpointer = checkpointer
        self.groupCommit = GroupCommit(database: database)
        self.limits = limits
        self.nowMicros = nowMicros
    }

    public func migrate() async throws {
        try SQLiteSchema.migrate(database)
    }

    // MARK: - Customers

    public func createCustomer(_ draft: CustomerDraft) async throws -> Customer {
        let createdAt = Timestamp.format(micros: nowMicros())
        return try await database.write { db in
            if let existing = try Self.customer(db, where: "wallet_account = ?", draft.walletAccount) { return existing }
            let customer = Customer(
                id: Identifiers.uuid(), email: draft.email, displayName: draft.displayName,
                walletAccount: draft.walletAccount, chainAddress: "0x" + Crypto.hex(Crypto.randomBytes(20)))
            try db.cachedStatement(
                sql: """
                    INSERT INTO core_user (id, email, display_name, wallet_account, chain_address, created_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """
            ).execute(arguments: [
                customer.id, customer.email, customer.displayName, customer.walletAccount,
                customer.chainAddress, createdAt,
            ])
            try db.cachedStatement(sql: "INSERT INTO core_tokenbalance (user_id, balance_units) VALUES (?, 0)").execute(arguments: [
                customer.id
            ])
            try ChainStub.openAddress(db, customer.chainAddress)
            return customer
        }
    }

    public func customer(email: String) async throws -> Customer? {
        try await database.read { db in try Self.customer(db, where: "email = ?", email) }
    }

    public func hasCustomers() async throws -> Bool {
        try await database.read { db in try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM core_user)")) ?? false }
    }

    public func customer(id: String) async throws -> Customer? {
        try await database.read { db in try Self.customer(db, where: "id = ?", id) }
    }

    static func customer(_ db: Database, where condition: String, _ value: String) throws -> Customer? {
        try db.cachedStatement(
            sql: """
                SELECT id, email, display_name, wallet_account, chain_address FROM core_user WHERE \(condition)
                """
        ).first(value) { row in
            Customer(
                id: row.string(0), email: row.string(1), displayName: row.string(2), walletAccount: row.string(3),
                chainAddress: row.string(4))
        }
    }

    // MARK: - Settlement (the flows decide; `SQLitePrimitives` executes)

    public func apply(_ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?) async throws -> ApplyOutcome {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        return try await groupCommit.write { db, scope in
            try Settlement.apply(tx, via: path, inbound: inbound, context).runSynchronously { try SQLitePrimitives.execute($0, db, scope) }
        }
    }

    /// A polled page is one transaction on the single writer (group commit for the reconciler).
    public func applyPolled(_ txs: [ProviderTransaction]) async throws -> [ApplyOutcome] {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        return try await database.write { db in
            let scope = WriteScope()
            let outcomes = try txs.map { tx in
                try Settlement.apply(tx, via: .poll, inbound: nil, context).runSynchronously { try SQLitePrimitives.execute($0, db, scope) }
            }
            try scope.flush(db)
            return outcomes
        }
    }

    public func logRejectedInbound(_ inbound: InboundDraft) async throws {
        try await groupCommit.write { db, _ in
            _ = try SQLitePrimitives.insertInbound(db, .rejected(inbound))
        }
    }

    public func mint(providerTxID: String) async throws -> ChainJob {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        return try await database.write { db in
            let scope = WriteScope()
            let job = try Settlement.manualMint(providerTxID: providerTxID, context).runSynchronously {
                try SQLitePrimitives.execute($0, db, scope)
            }
            try scope.flush(db)
            return job
        }
    }

    public func redeem(_ command: RedeemCommand) async throws -> RedeemResult {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        return try await groupCommit.write { db, scope in
            try Settlement.redeem(command, context).runSynchronously { try SQLitePrimitives.execute($0, db, scope) }
        }
    }

    static let externalColumns = """
        e.id, e.provider_tx_id, e.account, e.direction, e.amount_paisa, e.status, e.occurred_at_micros, e.memo, e.reference,
        e.recorded_at, e.first_seen_via, e.seen_via_webhook, e.seen_via_poll, e.recorded_at_micros, e.matched_job_id, e.flag,
        (SELECT j.id FROM core_chainjob j WHERE j.external_tx_row_id = e.id), e.user_id
        """

    static func decodeExternal(_ row: some ColumnReader) throws -> ExternalTransactionRecord {
        guard let direction = TransactionDirection(rawValue: row.string(3)), let status = TransactionStatus(rawValue: row.string(5)),
            let path = ArrivalPath(rawValue: row.string(10))
        else {
            throw DatabaseError(message: "core_externaltransaction row \(row.int64(0)) is corrupt")
        }
        let amountPaisa = row.int64(4)
        guard amountPaisa > 0 else { throw DatabaseError(message: "core_externaltransaction has a non-positive amount") }
        let occurred = row.int64(6)
        let recorded = row.int64(13)
        let tx = ProviderTransaction(
            providerTxID: row.string(1), account: row.string(2), direction: direction,
            amountPaisa: amountPaisa, status: status, occurredAtMicros: occurred, memo: row.string(7),
            reference: row.optionalString(8))
        return ExternalTransactionRecord(
            id: row.int64(0), tx: tx, customerID: row.optionalString(17), recordedAt: row.string(9), firstSeenVia: path,
            seenViaWebhook: row.bool(11), seenViaPoll: row.bool(12), lagMicros: recorded - occurred,
            mintJobID: row.optionalString(16), matchedJobID: row.optionalString(14),
            flag: row.optionalString(15))
    }

    public func payoutAnswered(jobID: String, providerTxID: String, amountUnits: Int64, account: String) async throws -> Bool {
        try await database.read { db in
            try Bool.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT 1 FROM core_chainjob j JOIN core_user u ON u.id = j.user_id
                        WHERE j.id = ? AND j.job_type = 'burn' AND j.payout_provider_tx_id = ? AND j.amount_units = ?
                          AND u.wallet_account = ?
                          AND NOT EXISTS (SELECT 1 FROM core_redemptionhold h WHERE h.job_id = j.id AND h.state <> 'burnt')
                        """), arguments: [jobID, providerTxID, amountUnits, account]) ?? false
        }
    }

    public func payouts(awaiting: PendingPayout.Awaiting, olderThanMicros: Int64, limit: Int) async throws -> [PendingPayout] {
        let cutoff = Timestamp.format(micros: olderThanMicros)
        let sql =
            switch awaiting {
            case .submission:
                """
                SELECT j.id, u.wallet_account, j.amount_units, j.memo FROM core_chainjob j JOIN core_user u ON u.id = j.user_id
                WHERE j.job_type = 'burn' AND j.payout_state = 'requested' AND j.created_at <= ? ORDER BY j.created_at LIMIT ?
                """
            case .outcome:
                """
                SELECT j.id, u.wallet_account, j.amount_units, j.memo
                FROM core_redemptionhold h JOIN core_chainjob j ON j.id = h.job_id JOIN core_user u ON u.id = j.user_id
                WHERE h.state = 'held' AND j.payout_state = 'submitted' AND h.created_at <= ? ORDER BY h.created_at LIMIT ?
                """
            }
        return try await database.read { db in
            try Row.fetchAll(db.cachedStatement(sql: sql), arguments: [cutoff, limit]).map {
                PendingPayout(jobID: $0[0], walletAccount: $0[1], amountUnits: $0[2], memo: $0[3])
            }
        }
    }

    public func payoutAnswered(jobID: String, providerTxID: String, outcome: Payout.Outcome) async throws -> HoldOutcome {
        let context = SettlementContext(nowMicros: nowMicros(), limits: limits)
        // Every redeem ends here: through group commit, concurrent redeems share one commit and its fsync.
        return try await groupCommit.write { db, scope in
            try Settlement.payoutAnswered(jobID: jobID, providerTxID: providerTxID, outcome: outcome, context).runSynchronously {
                try SQLitePrimitives.execute($0, db, scope)
            }
        }
    }

    // MARK: - Reads

    public func tokenBalanceUnits(customerID: String) async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT balance_units FROM core_tokenbalance WHERE user_id = ?"), arguments: [customerID]) ?? 0
        }
    }

    public func ledgerEntries(customerID: String?, limit: Int, beforeID: Int64?) async throws -> [LedgerEntry] {
        try await database.read { db in
            guard let customerID else {
                return try Row.fetchAll(
                    db.cachedStatement(
                        sql: """
                            SELECT \(Self.ledgerColumns)
                            FROM core_ledgerentry e WHERE e.id < ? ORDER BY e.id DESC LIMIT ?
                            """), arguments: [beforeID ?? Int64.max, limit]
                ).map(Self.decodeLedger)
            }
            // A customer's jobs are those of its own entries (each job's postings have one), read newest first
            // through the customer index, a page's worth. A job's entries have adjacent ids, so a job with an entry
            // below `beforeID` has its customer entry at or below it, and every such job but the one that holds
            // entry `beforeID` itself has an entry on the page: one job more than the page holds is enough.
            return try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT \(Self.ledgerColumns)
                        FROM core_ledgerentry e
                        WHERE e.id < :before AND e.job_row IN (
                          SELECT c.job_row FROM core_ledgerentry c
                          WHERE c.user_id = :customer AND c.id <= :before ORDER BY c.id DESC LIMIT :limit + 1)
                        ORDER BY e.id DESC LIMIT :limit
                        """), arguments: ["before": beforeID ?? Int64.max, "customer": customerID, "limit": limit]
            ).map(Self.decodeLedger)
        }
    }

    /// An entry's columns as `decodeLedger` reads them. The link to the entry before is that entry's hash (v6-compact-
    /// ledger): a gap in the ids reads as no link, and `ledger verify` names the missing entry. The job's id is read
    /// from the job's row (v7-compact-rows); a job deleted by hand reads as no id, which the entry's hash exposes.
    static let ledgerColumns = """
        e.id, e.user_id, e.side, e.account, e.amount_units, e.ref_type,
        COALESCE((SELECT j.id FROM core_chainjob j WHERE j.row_id = e.job_row), ''), e.created_at,
        CASE WHEN e.id = 1 THEN '\(LedgerHead.genesisHash)'
             ELSE lower(hex((SELECT p.entry_hash FROM core_ledgerentry p WHERE p.id = e.id - 1))) END,
        lower(hex(e.entry_hash))
        """

    private static func decodeLedger(_ row: some ColumnReader) throws -> LedgerEntry {
        guard let side = LedgerSide(rawValue: row.string(2)), let account = LedgerAccount(rawValue: row.string(3)),
            let refType = ChainJobType(rawValue: row.string(5))
        else {
            throw DatabaseError(message: "core_ledgerentry row \(row.int64(0)) is corrupt")
        }
        return LedgerEntry(
            id: row.int64(0), userID: row.optionalString(1), side: side, account: account,
            amountUnits: row.int64(4), refType: refType, refID: row.string(6), createdAt: row.string(7),
            prevHash: row.string(8), entryHash: row.string(9))
    }

    public func externalTransactions(limit: Int, beforeID: Int64?) async throws -> [ExternalTransactionRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT \(Self.externalColumns) FROM core_externaltransaction e WHERE e.id < ? ORDER BY e.id DESC LIMIT ?
                        """), arguments: [beforeID ?? Int64.max, limit]
            ).map(Self.decodeExternal)
        }
    }

    public func redemption(jobID: String) async throws -> RedemptionRows? {
        try await database.read { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT id, user_id, amount_units, created_at, payout_state, payout_provider_tx_id, tx_hash
                            FROM core_chainjob WHERE id = ? AND job_type = 'burn'
                            """), arguments: [jobID])
            else { return nil }
            func related(_ condition: String, _ value: String) throws -> [ExternalTransactionRecord] {
                try Row.fetchAll(
                    db.cachedStatement(
                        sql: "SELECT \(Self.externalColumns) FROM core_externaltransaction e WHERE \(condition) ORDER BY e.id"),
                    arguments: [value]
                ).map(Self.decodeExternal)
            }
            let reversals = try [PayoutStatus.failed, .returned].flatMap { status in
                try related(
                    "e.reference = ? AND e.direction = 'credit'", PayoutReversal.reference(payoutReference: jobID, status: status))
            }
            var rows = RedemptionRows(
                job: ChainJob(id: row[0], jobType: .burn, amountUnits: row[2], txHash: row[6], createdAt: row[3]),
                customerID: row[1], payoutState: row[4], payoutProviderTxID: row[5],
                debit: try related("e.matched_job_id = ?", jobID).first, reversals: reversals)
            if let hold = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT state, closed_at FROM core_redemptionhold WHERE job_id = ?"), arguments: [jobID])
            {
                rows.hold = RedemptionRows.Hold(state: RedemptionHold.State(rawValue: hold[0]) ?? .held, closedAt: hold[1])
            }
            return rows
        }
    }

    public func inboundLog(limit: Int, beforeID: Int64?) async throws -> [InboundRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT id, received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                               provider_tx_id, job_id, body_bytes
                        FROM core_webhookinbound WHERE id < ? ORDER BY id DESC LIMIT ?
                        """), arguments: [beforeID ?? Int64.max, limit]
            ).map { row in
                InboundRecord(
                    id: row[0], received_at: row[1], message_id: row[2], webhook_timestamp: row[3],
                    source_address: row[4], scheme: row[5], verification: row[6], outcome: row[7], error: row[8],
                    provider_tx_id: row[9], job_id: row[10], body_bytes: row[11])
            }
        }
    }

    public func pruneInbound(receivedBefore cutoff: String, rowsMax: Int) async throws -> Int {
        precondition(rowsMax > 0, "a prune batch is bounded")
        return try await database.write { db in
            // Oldest first by id, which grows with time, so a batch reads only the rows it deletes.
            try db.cachedStatement(
                sql: """
                    DELETE FROM core_webhookinbound WHERE id IN (
                      SELECT i.id FROM core_webhookinbound i
                      WHERE i.received_at < ? AND NOT EXISTS (SELECT 1 FROM core_webhookquarantine q WHERE q.inbound_id = i.id)
                      ORDER BY i.id LIMIT ?)
                    """
            ).execute(arguments: [cutoff, rowsMax])
            return db.changesCount
        }
    }

    public func pruneIdempotencyRecords(createdBefore cutoff: String, rowsMax: Int) async throws -> Int {
        precondition(rowsMax > 0, "a prune batch is bounded")
        return try await database.write { db in
            let keys = try Row.fetchAll(
                db.cachedStatement(
                    sql: "SELECT user_id, endpoint, idempotency_key FROM core_idempotencyrecord WHERE created_at < ? LIMIT ?"),
                arguments: [cutoff, rowsMax])
            for key in keys {
                let userID: String = key[0]
                let idempotencyKey: String = key[2]
                try db.cachedStatement(
                    sql: "DELETE FROM core_idempotencyrecord WHERE user_id = ? AND endpoint = ? AND idempotency_key = ?"
                ).execute(arguments: [userID, key[1] as String, idempotencyKey])
                try db.cachedStatement(
                    sql: "UPDATE core_chainjob SET idempotency_key = NULL WHERE user_id = ? AND idempotency_key = ? AND job_type = 'burn'"
                ).execute(arguments: [userID, idempotencyKey])
            }
            return keys.count
        }
    }

    public func quarantineCount() async throws -> Int {
        try await database.read { db in try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM core_webhookquarantine")) ?? 0 }
    }

    public func quarantine(limit: Int, beforeID: Int64?) async throws -> [QuarantineRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT id, inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at
                        FROM core_webhookquarantine WHERE id < ? ORDER BY id DESC LIMIT ?
                        """), arguments: [beforeID ?? Int64.max, limit]
            ).map { row in
                let fields: String = row[4]
                let body: Data = row[5]
                return QuarantineRecord(
                    id: row[0], inbound_id: row[1], provider_tx_id: row[2], arrived_via: row[3],
                    differing_fields: fields.split(separator: ",").map(String.init),
                    body: String(decoding: body, as: UTF8.self), created_at: row[6])
            }
        }
    }

    public func reconciliationSnapshot(_ scope: ReconciliationScope) async throws -> ReconciliationSnapshot {
        let reads = ReconciliationReads(scope, dialect: .sqlite)
        return try await database.read { db in
            var answers = ReconciliationReads.Answers()
            for (key, sql) in reads.integers { answers.integers[key] = try Int64.fetchOne(db, sql: sql) ?? 0 }
            for row in try Row.fetchAll(db, sql: reads.totalsSQL) { answers.totals[row[0]] = row[1] }
            for (key, sql) in reads.lists + reads.listsAfter(totals: answers.totals) {
                answers.lists[key] = try String.fetchAll(db, sql: sql)
            }
            // Ranked here: SQLite's window functions took longer over the window than reading it.
            var arrivals = ArrivalFigures.Counter()
            try db.makeStatement(sql: reads.arrivalsSQL).forEach { row in
                arrivals.add(webhook: row.bool(0), poll: row.bool(1), lagMicros: row.int64(2))
                return true
            }
            answers.arrivals = arrivals.counted
            answers.latest = try Row.fetchAll(
                db, sql: "SELECT \(Self.externalColumns) FROM core_externaltransaction e ORDER BY e.id DESC LIMIT \(reads.latestLimit)"
            ).map(Self.decodeExternal)
            return reads.snapshot(answers)
        }
    }

    /// SQLite's triggers update each total's one row in place.
    public func compactRunningTotals() async throws {}

    public func ledgerCheckpoint() async throws -> LedgerCheckpoint {
        try await database.read { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT last_id, last_hash, entries, debit_units, credit_units, user_net_units
                        FROM core_ledgercheckpoint WHERE singleton = 1
                        """)
            else { return .genesis }
            return LedgerCheckpoint(
                head: LedgerHead(lastID: row[0], lastHash: row[1]), entries: row[2], debitUnits: row[3], creditUnits: row[4],
                userNetUnits: row[5])
        }
    }

    public func saveLedgerCheckpoint(_ checkpoint: LedgerCheckpoint) async throws {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE core_ledgercheckpoint
                    SET last_id = ?, last_hash = ?, entries = ?, debit_units = ?, credit_units = ?, user_net_units = ?
                    WHERE singleton = 1 AND last_id < ?
                    """,
                arguments: [
                    checkpoint.head.lastID, checkpoint.head.lastHash, checkpoint.entries, checkpoint.debitUnits,
                    checkpoint.creditUnits, checkpoint.userNetUnits, checkpoint.head.lastID,
                ])
        }
    }

    public func verifyLedger(
        from checkpoint: LedgerCheckpoint, confirming: LedgerCheckpoint?, progress: @escaping @Sendable (Int) -> Void
    ) async throws -> LedgerChainVerifier {
        try await database.read { db in
            var read = 0
            // The read runs on GRDB's reader queue, so it can hand each batch to the pipeline and decode the next.
            let pipeline = PipelinedLedgerVerifier(LedgerChainVerifier(resumingFrom: checkpoint, confirming: confirming))
            var batch: [LedgerEntry] = []
            batch.reserveCapacity(LedgerChainVerifier.batchSize)
            // Rows are decoded straight from the statement, without a GRDB `Row` each.
            try db.cachedStatement(
                sql: """
                    SELECT \(Self.ledgerColumns)
                    FROM core_ledgerentry e WHERE e.id > ? ORDER BY e.id
                    """
            ).forEach(checkpoint.head.lastID) { row in
                batch.append(try Self.decodeLedger(row))
                guard batch.count == LedgerChainVerifier.batchSize else { return true }
                read += batch.count
                progress(read)
                guard pipeline.add(batch) else { return false }
                batch.removeAll(keepingCapacity: true)
                return true
            }
            _ = pipeline.add(batch)
            return pipeline.finish(storedHead: try WriteScope.storedHead(db) ?? .genesis)
        }
    }

    public func bytesByTable() async throws -> [String: Int64] {
        try await database.read { try Self.bytesByTable($0) }
    }

    /// The bytes of every table of another database file, its indexes included: the provider stub's, when it has a
    /// file of its own.
    public static func bytesByTable(path: String) throws -> [String: Int64] {
        var configuration = Configuration()
        configuration.readonly = true
        return try DatabaseQueue(path: path, configuration: configuration).read { try bytesByTable($0) }
    }

    static func bytesByTable(_ db: Database) throws -> [String: Int64] {
        var bytes: [String: Int64] = [:]
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT COALESCE(s.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d
                LEFT JOIN sqlite_schema s ON s.name = d.name GROUP BY 1
                """)
        {
            bytes[row[0]] = row[1]
        }
        return bytes
    }

    public func checkpoint() async throws {
        // The background checkpointer may hold the checkpoint lock; SQLite then answers busy at once.
        for attempt in 1...100 {
            do {
                _ = try await database.writeWithoutTransaction { try $0.checkpoint(.truncate) }
                return
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && attempt < 100 {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    public func cursor(named name: String) async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM core_cursor WHERE name = ?"), arguments: [name]) ?? 0
        }
    }

    public func setCursor(named name: String, to value: Int64) async throws {
        try await database.write { db in
            try db.cachedStatement(
                sql: """
                    INSERT INTO core_cursor (name, value) VALUES (?, ?)
                    ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)
                    """
            ).execute(arguments: [name, value])
        }
    }
}
