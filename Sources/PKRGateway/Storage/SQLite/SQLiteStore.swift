import ChainStub
import Foundation
import GRDB
import PKRCore
import SQLiteSupport

/// The embedded store: SQLite in WAL mode through GRDB. One write transaction per business change.
public final class SQLiteStore: GatewayStore {
    public static let demoEmail = "demo@pkr.local"
    public static let demoDisplayName = "Demo User"
    static let redeemEndpoint = "POST /api/redeem"
    /// `PRAGMA synchronous` reads back 2 for FULL.
    static let synchronousFull = 2

    public let database: DatabasePool
    let groupCommit: GroupCommit
    /// Group commit, for other writers on this database (the wallet stub) to share.
    var sharedTransactions: any SQLiteTransactions { groupCommit }
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
        try SQLiteSchema.migrator().migrate(database)
    }

    // MARK: - Users

    public func seedDemoUser(walletAccount: String) async throws -> DemoUser {
        let createdAt = Timestamp.format(micros: nowMicros())
        return try await database.write { db in
            if let existing = try Self.user(db, where: "wallet_account = ?", walletAccount) { return existing }
            let user = DemoUser(id: Identifiers.uuid(), email: Self.demoEmail, displayName: Self.demoDisplayName,
                                walletAccount: walletAccount, chainAddress: "0x" + Crypto.hex(Crypto.randomBytes(20)))
            try db.cachedStatement(sql: """
                INSERT INTO core_user (id, email, display_name, wallet_account, chain_address, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                """).execute(arguments: [user.id, user.email, user.displayName, user.walletAccount, user.chainAddress, createdAt])
            try db.cachedStatement(sql: "INSERT INTO core_tokenbalance (user_id, balance_units) VALUES (?, 0)").execute(arguments: [user.id])
            try ChainStub.openAddress(db, user.chainAddress)
            return user
        }
    }

    public func demoUser() async throws -> DemoUser? {
        try await database.read { db in try Self.user(db, where: "email = ?", Self.demoEmail) }
    }

    private static func user(_ db: Database, where condition: String, _ value: String) throws -> DemoUser? {
        try db.cachedStatement(sql: """
            SELECT id, email, display_name, wallet_account, chain_address FROM core_user WHERE \(condition)
            """).first(value) { row in
            DemoUser(id: row.string(0), email: row.string(1), displayName: row.string(2), walletAccount: row.string(3),
                     chainAddress: row.string(4))
        }
    }

    // MARK: - Provider transactions

    public func apply(_ tx: ProviderTransaction, via path: ArrivalPath, inbound: InboundDraft?) async throws -> ApplyOutcome {
        let now = nowMicros()
        let limits = self.limits
        return try await groupCommit.write { db, scope in
            try Self.applyAndLog(db, scope, tx, via: path, nowMicros: now, limits: limits, inbound: inbound)
        }
    }

    public func applyPolled(_ txs: [ProviderTransaction]) async throws -> [ApplyOutcome] {
        let now = nowMicros()
        let limits = self.limits
        return try await database.write { db in
            let scope = WriteScope()
            let outcomes = try txs.map { try Self.applyAndLog(db, scope, $0, via: .poll, nowMicros: now, limits: limits, inbound: nil) }
            try scope.flush(db)
            return outcomes
        }
    }

    /// Applies one transaction and writes its inbound-log and quarantine rows, inside the caller's transaction.
    private static func applyAndLog(_ db: Database, _ scope: WriteScope, _ tx: ProviderTransaction, via path: ArrivalPath,
                                    nowMicros now: Int64, limits: MoneyLimits, inbound: InboundDraft?) throws -> ApplyOutcome {
        let outcome = try apply(db, scope, tx, via: path, nowMicros: now, limits: limits)
        if let inbound {
            var jobID: String?
            if case .minted(let job) = outcome { jobID = job.id }
            if case .duplicate(let id) = outcome { jobID = id }
            let inboundID = try insertInbound(db, inbound, outcome: outcome.code, jobID: jobID)
            if case .conflict(let fields) = outcome {
                try quarantine(db, tx: tx, inboundID: inboundID, via: path, fields: fields, body: inbound.body, nowMicros: now)
            }
        } else if case .conflict(let fields) = outcome {
            try quarantine(db, tx: tx, inboundID: nil, via: path, fields: fields, body: WebhookEvent.encode(tx), nowMicros: now)
        }
        return outcome
    }

    private static func apply(_ db: Database, _ scope: WriteScope, _ tx: ProviderTransaction, via path: ArrivalPath,
                              nowMicros: Int64, limits: MoneyLimits) throws -> ApplyOutcome {
        let seenColumn = path == .webhook ? "seen_via_webhook" : "seen_via_poll"
        let user = try scope.user(db, walletAccount: tx.account, lookUp: { try Self.user($0, where: "wallet_account = ?", $1) })
        // Most arrivals are new: one statement records them, and the provider id's unique key turns a known one
        // away without writing, to be classified below. The user is looked up first because the row names them.
        if let user {
            let recordedAt = Timestamp.format(micros: nowMicros)
            try db.cachedStatement(sql: """
                INSERT INTO core_externaltransaction
                  (provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
                   occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, \(seenColumn))
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                ON CONFLICT (provider_tx_id) DO NOTHING
                """).run(tx.providerTxID, tx.account, user.id, tx.direction.rawValue, tx.amountPaisa, tx.status.rawValue,
                                 tx.memo, tx.reference, Timestamp.format(micros: tx.occurredAtMicros), tx.occurredAtMicros,
                                 recordedAt, nowMicros, path.rawValue)
            if db.changesCount == 1 {
                let record = ExternalTransactionRecord(id: db.lastInsertedRowID, tx: tx, recordedAt: recordedAt,
                                                       firstSeenVia: path, seenViaWebhook: path == .webhook,
                                                       seenViaPoll: path == .poll, lagMicros: nowMicros - tx.occurredAtMicros,
                                                       mintJobID: nil, matchedJobID: nil, flag: nil)
                return try settle(db, scope, record, user: user, nowMicros: nowMicros, limits: limits)
            }
        }
        let existing = try externalTransaction(db, providerTxID: tx.providerTxID)
        let arrival = SettlementPolicy.classify(recorded: existing?.tx, incoming: tx)
        // A known id with different content is a conflict whatever account it names.
        if case .conflict(let fields) = arrival { return .conflict(fields: fields) }
        guard let user else {
            if path == .poll { return .ignoredUnknownAccount }
            throw GatewayError.unknownAccount(tx.account)
        }
        // With a user, a transaction the insert turned away is one already recorded.
        guard let existing else { throw DatabaseError(message: "core_externaltransaction refused \(tx.providerTxID) but holds no row for it") }
        try db.cachedStatement(sql: "UPDATE core_externaltransaction SET \(seenColumn) = 1 WHERE id = ?").run(existing.id)
        guard case .advance(let status) = arrival else { return .duplicate(jobID: existing.mintJobID ?? existing.matchedJobID) }
        try db.cachedStatement(sql: "UPDATE core_externaltransaction SET status = ? WHERE id = ?").run(status.rawValue, existing.id)
        var advanced = existing
        advanced.tx.status = status
        return try settle(db, scope, advanced, user: user, nowMicros: nowMicros, limits: limits)
    }

    /// Carries out what the transaction's current status asks for (SettlementPolicy decides).
    private static func settle(_ db: Database, _ scope: WriteScope, _ record: ExternalTransactionRecord, user: DemoUser,
                               nowMicros: Int64, limits: MoneyLimits) throws -> ApplyOutcome {
        switch try SettlementPolicy.action(for: record.tx, maxMintUnits: limits.maxMintUnits) {
        case .mint(let units):
            return .minted(try mint(db, scope, record, user: user, amountUnits: units, nowMicros: nowMicros))
        case .holdAboveLimit:
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET flag = 'above_mint_limit' WHERE id = ?").run(record.id)
            return .recorded(note: ApplyOutcome.heldNote)
        case .matchPayout:
            return .recorded(note: try matchDebit(db, record))
        case .flagFailedPayout:
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET flag = 'failed_payout' WHERE id = ?").run(record.id)
            return .recorded(note: ApplyOutcome.failedPayoutNote)
        case .none:
            return .recorded(note: "recorded; nothing to mint while \(record.tx.status.rawValue)")
        }
    }

    private static func matchDebit(_ db: Database, _ record: ExternalTransactionRecord) throws -> String {
        let tx = record.tx
        let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT id, amount_units FROM core_chainjob
            WHERE job_type = 'burn' AND (id = ? OR payout_provider_tx_id = ?)
              AND id NOT IN (SELECT matched_job_id FROM core_externaltransaction WHERE matched_job_id IS NOT NULL)
            """), arguments: [tx.reference ?? "", tx.providerTxID])
        if let row, (row[1] as Int64) == (try Money.paisaToUnits(tx.amountPaisa)) {
            let jobID: String = row[0]
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET matched_job_id = ? WHERE id = ?").run(jobID, record.id)
            try db.cachedStatement(sql: """
                UPDATE core_chainjob SET payout_state = 'confirmed', payout_provider_tx_id = ? WHERE id = ?
                """).run(tx.providerTxID, jobID)
            return ApplyOutcome.payoutConfirmedNote(jobID)
        }
        // A debit nobody asked for is never auto-burned: money left the reserve without a burn.
        try db.cachedStatement(sql: "UPDATE core_externaltransaction SET flag = 'unmatched_debit' WHERE id = ?").run(record.id)
        return ApplyOutcome.unmatchedDebitNote
    }

    private static func mint(_ db: Database, _ scope: WriteScope, _ record: ExternalTransactionRecord, user: DemoUser,
                             amountUnits: Int64, nowMicros: Int64) throws -> ChainJob {
        let createdAt = Timestamp.format(micros: nowMicros)
        let jobID = Identifiers.timeOrderedUUID(unixMillis: nowMicros / 1000)
        // The balances move once per transaction, at the scope's flush.
        try scope.credit(db, user, amountUnits: amountUnits)
        let txHash = try ChainStub.recordReceipt(db, op: .mint, address: user.chainAddress, amountUnits: amountUnits,
                                                 reference: jobID, createdAt: createdAt, nowMicros: nowMicros)
        try db.cachedStatement(sql: """
            INSERT INTO core_chainjob
              (id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, external_tx_id, memo, created_at)
            VALUES (?, 'mint', ?, ?, 'confirmed', ?, ?, ?, ?, ?)
            """).run(jobID, user.id, amountUnits, txHash, record.id, record.tx.providerTxID, record.tx.memo, createdAt)
        try appendLedger(db, scope, job: .mint, jobID: jobID, userID: user.id, amountUnits: amountUnits, createdAt: createdAt)
        return ChainJob(id: jobID, jobType: .mint, amountUnits: amountUnits, txHash: txHash, createdAt: createdAt)
    }

    /// Appends the job's postings to the hash chain. The head moves in `scope`; `WriteScope.flush` stores it.
    private static func appendLedger(_ db: Database, _ scope: WriteScope, job: ChainJobType, jobID: String, userID: String,
                                     amountUnits: Int64, createdAt: String) throws {
        var head = try scope.head(db)
        for posting in PostingRules.postings(for: job, amountUnits: amountUnits) {
            let entry = LedgerEntry.next(after: head, userID: posting.account == .userToken ? userID : nil, posting: posting,
                                         refType: job, refID: jobID, createdAt: createdAt)
            try db.cachedStatement(sql: """
                INSERT INTO core_ledgerentry
                  (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """).run(entry.id, entry.userID, entry.side.rawValue, entry.account.rawValue, entry.amountUnits,
                                 entry.refType.rawValue, entry.refID, entry.createdAt, entry.prevHash, entry.entryHash)
            head = LedgerHead(entry)
        }
        scope.advance(to: head)
    }

    public func logRejectedInbound(_ inbound: InboundDraft) async throws {
        try await groupCommit.write { db, _ in
            _ = try Self.insertInbound(db, inbound, outcome: "rejected", jobID: nil)
        }
    }

    private static func insertInbound(_ db: Database, _ inbound: InboundDraft, outcome: String, jobID: String?) throws -> Int64 {
        try db.cachedStatement(sql: """
            INSERT INTO core_webhookinbound
              (received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
               provider_tx_id, job_id, body_bytes, body)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).run(Timestamp.format(micros: inbound.receivedAtMicros), inbound.messageID, inbound.webhookTimestamp,
                             inbound.sourceAddress, inbound.scheme?.rawValue, inbound.verification, outcome,
                             inbound.errorCode ?? (outcome == "conflict" ? "webhook_conflict" : nil), inbound.providerTxID,
                             jobID, inbound.body.count, SQLiteBlob(inbound.body))
        return db.lastInsertedRowID
    }

    private static func quarantine(_ db: Database, tx: ProviderTransaction, inboundID: Int64?, via: ArrivalPath,
                                   fields: [String], body: [UInt8], nowMicros: Int64) throws {
        try db.cachedStatement(sql: """
            INSERT INTO core_webhookquarantine (inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at)
            VALUES (?, ?, ?, ?, ?, ?)
            """).run(inboundID, tx.providerTxID, via.rawValue, fields.joined(separator: ","), SQLiteBlob(body),
                             Timestamp.format(micros: nowMicros))
    }

    private static let externalColumns = """
        e.id, e.provider_tx_id, e.account, e.direction, e.amount_paisa, e.status, e.occurred_at_micros, e.memo, e.reference,
        e.recorded_at, e.first_seen_via, e.seen_via_webhook, e.seen_via_poll, e.recorded_at_micros, e.matched_job_id, e.flag,
        (SELECT j.id FROM core_chainjob j WHERE j.external_tx_row_id = e.id)
        """

    private static func externalTransaction(_ db: Database, providerTxID: String) throws -> ExternalTransactionRecord? {
        try db.cachedStatement(sql: "SELECT \(externalColumns) FROM core_externaltransaction e WHERE e.provider_tx_id = ?")
            .first(providerTxID, decode: decodeExternal)
    }

    private static func decodeExternal(_ row: some ColumnReader) throws -> ExternalTransactionRecord {
        guard let direction = TransactionDirection(rawValue: row.string(3)), let status = TransactionStatus(rawValue: row.string(5)),
              let path = ArrivalPath(rawValue: row.string(10)) else {
            throw DatabaseError(message: "core_externaltransaction row \(row.int64(0)) is corrupt")
        }
        let amountPaisa = row.int64(4)
        guard amountPaisa > 0 else { throw DatabaseError(message: "core_externaltransaction has a non-positive amount") }
        let occurred = row.int64(6)
        let recorded = row.int64(13)
        let tx = ProviderTransaction(providerTxID: row.string(1), account: row.string(2), direction: direction,
                                     amountPaisa: amountPaisa, status: status, occurredAtMicros: occurred, memo: row.string(7),
                                     reference: row.optionalString(8))
        return ExternalTransactionRecord(id: row.int64(0), tx: tx, recordedAt: row.string(9), firstSeenVia: path,
                                         seenViaWebhook: row.bool(11), seenViaPoll: row.bool(12), lagMicros: recorded - occurred,
                                         mintJobID: row.optionalString(16), matchedJobID: row.optionalString(14),
                                         flag: row.optionalString(15))
    }

    // MARK: - Mint and redeem

    public func mint(providerTxID: String) async throws -> ChainJob {
        let now = nowMicros()
        let limits = self.limits
        return try await database.write { db in
            guard let record = try Self.externalTransaction(db, providerTxID: providerTxID) else {
                throw GatewayError.unknownProviderTransaction(providerTxID)
            }
            if let jobID = record.mintJobID, let job = try Self.job(db, id: jobID) { return job }
            let units = try SettlementPolicy.manualMintUnits(for: record.tx, maxMintUnits: limits.maxMintUnits)
            guard let user = try Self.user(db, where: "wallet_account = ?", record.tx.account) else {
                throw GatewayError.unknownAccount(record.tx.account)
            }
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET flag = NULL WHERE id = ? AND flag = 'above_mint_limit'").run(record.id)
            let scope = WriteScope()
            let job = try Self.mint(db, scope, record, user: user, amountUnits: units, nowMicros: now)
            try scope.flush(db)
            return job
        }
    }

    private static func job(_ db: Database, id: String) throws -> ChainJob? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT id, job_type, amount_units, tx_hash, created_at FROM core_chainjob WHERE id = ?"), arguments: [id]) else { return nil }
        guard let type = ChainJobType(rawValue: row[1]) else { throw DatabaseError(message: "core_chainjob \(id) is corrupt") }
        return ChainJob(id: row[0], jobType: type, amountUnits: row[2], txHash: row[3], createdAt: row[4])
    }

    public func redeem(_ command: RedeemCommand) async throws -> RedeemResult {
        precondition(command.amountUnits > 0 && command.amountUnits % Money.unitsPerPaisa == 0, "validated by the caller")
        let now = nowMicros()
        return try await groupCommit.write { db, scope in
            if let key = command.idempotencyKey, let recorded = try db.cachedStatement(sql: """
                SELECT request_fingerprint, response_status, response_body FROM core_idempotencyrecord
                WHERE user_id = ? AND endpoint = ? AND idempotency_key = ?
                """).first(command.userID, Self.redeemEndpoint, key, decode: { row in
                    (fingerprint: row.string(0), status: Int(row.int64(1)), body: row.string(2))
                }) {
                guard recorded.fingerprint == command.requestFingerprint else { throw GatewayError.idempotencyKeyReused }
                return .replayed(status: recorded.status, responseBody: recorded.body)
            }
            guard let user = try Self.user(db, where: "id = ?", command.userID) else { throw GatewayError.demoNotSeeded }
            // The balance check must see the mints earlier in this batch.
            try scope.flushBalances(db)
            try db.cachedStatement(sql: """
                UPDATE core_tokenbalance SET balance_units = balance_units - ? WHERE user_id = ? AND balance_units >= ?
                """).run(command.amountUnits, user.id, command.amountUnits)
            guard db.changesCount == 1 else {
                let available = try Int64.fetchOne(db.cachedStatement(sql: "SELECT balance_units FROM core_tokenbalance WHERE user_id = ?"), arguments: [user.id]) ?? 0
                throw GatewayError.insufficientBalance(availableUnits: available, requestedUnits: command.amountUnits)
            }
            let createdAt = Timestamp.format(micros: now)
            let jobID = Identifiers.timeOrderedUUID(unixMillis: now / 1000)
            let txHash = try ChainStub.submit(db, op: .burn, address: user.chainAddress, amountUnits: command.amountUnits,
                                              reference: jobID, createdAt: createdAt, nowMicros: now)
            try db.cachedStatement(sql: """
                INSERT INTO core_chainjob
                  (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key, memo, payout_state, created_at)
                VALUES (?, 'burn', ?, ?, 'confirmed', ?, ?, ?, 'requested', ?)
                """).run(jobID, user.id, command.amountUnits, txHash, command.idempotencyKey, command.memo, createdAt)
            try Self.appendLedger(db, scope, job: .burn, jobID: jobID, userID: user.id, amountUnits: command.amountUnits,
                                  createdAt: createdAt)
            let job = ChainJob(id: jobID, jobType: .burn, amountUnits: command.amountUnits, txHash: txHash, createdAt: createdAt)
            let body = RedeemResult.responseBody(job)
            if let key = command.idempotencyKey {
                try db.cachedStatement(sql: """
                    INSERT INTO core_idempotencyrecord
                      (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
                    VALUES (?, ?, ?, ?, 201, ?, ?)
                    """).run(user.id, Self.redeemEndpoint, key, command.requestFingerprint, body, createdAt)
            }
            return .burned(job, walletAccount: user.walletAccount, responseBody: body)
        }
    }

    public func markPayoutSubmitted(jobID: String, providerTxID: String) async throws {
        // Every redeem ends here: through group commit, concurrent redeems share one commit and its fsync.
        try await groupCommit.write { db, _ in
            try db.cachedStatement(sql: """
                UPDATE core_chainjob SET payout_state = 'submitted', payout_provider_tx_id = ?
                WHERE id = ? AND job_type = 'burn' AND payout_state = 'requested'
                """).execute(arguments: [providerTxID, jobID])
        }
    }

    public func payoutsAwaitingSubmission(olderThanMicros: Int64, limit: Int) async throws -> [PendingPayout] {
        let cutoff = Timestamp.format(micros: olderThanMicros)
        return try await database.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT j.id, u.wallet_account, j.amount_units, j.memo FROM core_chainjob j JOIN core_user u ON u.id = j.user_id
                WHERE j.job_type = 'burn' AND j.payout_state = 'requested' AND j.created_at <= ? ORDER BY j.created_at LIMIT ?
                """), arguments: [cutoff, limit]).map {
                PendingPayout(jobID: $0[0], walletAccount: $0[1], amountUnits: $0[2], memo: $0[3])
            }
        }
    }

    // MARK: - Reads

    public func tokenBalanceUnits(userID: String) async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT balance_units FROM core_tokenbalance WHERE user_id = ?"), arguments: [userID]) ?? 0
        }
    }

    public func ledgerEntries(limit: Int, beforeID: Int64?) async throws -> [LedgerEntry] {
        try await database.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
                FROM core_ledgerentry WHERE id < ? ORDER BY id DESC LIMIT ?
                """), arguments: [beforeID ?? Int64.max, limit]).map(Self.decodeLedger)
        }
    }

    private static func decodeLedger(_ row: some ColumnReader) throws -> LedgerEntry {
        guard let side = LedgerSide(rawValue: row.string(2)), let account = LedgerAccount(rawValue: row.string(3)),
              let refType = ChainJobType(rawValue: row.string(5)) else {
            throw DatabaseError(message: "core_ledgerentry row \(row.int64(0)) is corrupt")
        }
        return LedgerEntry(id: row.int64(0), userID: row.optionalString(1), side: side, account: account,
                           amountUnits: row.int64(4), refType: refType, refID: row.string(6), createdAt: row.string(7),
                           prevHash: row.string(8), entryHash: row.string(9))
    }

    public func externalTransactions(limit: Int, beforeID: Int64?) async throws -> [ExternalTransactionRecord] {
        try await database.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT \(Self.externalColumns) FROM core_externaltransaction e WHERE e.id < ? ORDER BY e.id DESC LIMIT ?
                """), arguments: [beforeID ?? Int64.max, limit]).map(Self.decodeExternal)
        }
    }

    public func inboundLog(limit: Int, beforeID: Int64?) async throws -> [InboundRecord] {
        try await database.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT id, received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                       provider_tx_id, job_id, body_bytes
                FROM core_webhookinbound WHERE id < ? ORDER BY id DESC LIMIT ?
                """), arguments: [beforeID ?? Int64.max, limit]).map { row in
                InboundRecord(id: row[0], received_at: row[1], message_id: row[2], webhook_timestamp: row[3],
                              source_address: row[4], scheme: row[5], verification: row[6], outcome: row[7], error: row[8],
                              provider_tx_id: row[9], job_id: row[10], body_bytes: row[11])
            }
        }
    }

    public func quarantine(limit: Int, beforeID: Int64?) async throws -> [QuarantineRecord] {
        try await database.read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT id, inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at
                FROM core_webhookquarantine WHERE id < ? ORDER BY id DESC LIMIT ?
                """), arguments: [beforeID ?? Int64.max, limit]).map { row in
                let fields: String = row[4]
                let body: Data = row[5]
                return QuarantineRecord(id: row[0], inbound_id: row[1], provider_tx_id: row[2], arrived_via: row[3],
                                        differing_fields: fields.split(separator: ",").map(String.init),
                                        body: String(decoding: body, as: UTF8.self), created_at: row[6])
            }
        }
    }

    public func reconciliationSnapshot() async throws -> ReconciliationSnapshot {
        try await database.read { db in
            func int(_ sql: String) throws -> Int64 { try Int64.fetchOne(db, sql: sql) ?? 0 }
            func strings(_ sql: String) throws -> [String] { try String.fetchAll(db, sql: sql) }
            let latest = try Row.fetchAll(db, sql: """
                SELECT \(Self.externalColumns) FROM core_externaltransaction e ORDER BY e.id DESC LIMIT 10
                """).map(Self.decodeExternal)
            var lags: [Int64] = []
            var webhookOnly = 0, pollOnly = 0, both = 0
            for row in try Row.fetchAll(db.cachedStatement(sql: """
                SELECT seen_via_webhook, seen_via_poll, recorded_at_micros - occurred_at_micros FROM core_externaltransaction
                """)) {
                let (webhook, poll): (Bool, Bool) = (row[0], row[1])
                if webhook && poll { both += 1 } else if webhook { webhookOnly += 1 } else { pollOnly += 1 }
                lags.append(max(0, row[2]))
            }
            lags.sort()
            return ReconciliationSnapshot(
                mintedUnits: try int("SELECT COALESCE(SUM(amount_units), 0) FROM core_chainjob WHERE job_type = 'mint'"),
                burnedUnits: try int("SELECT COALESCE(SUM(amount_units), 0) FROM core_chainjob WHERE job_type = 'burn'"),
                tokenBalanceUnits: try int("SELECT COALESCE(SUM(balance_units), 0) FROM core_tokenbalance"),
                chainStubUnits: try ChainStub.totalSupplyUnits(db),
                settledCreditsUnminted: try strings("""
                    SELECT e.provider_tx_id FROM core_externaltransaction e
                    WHERE e.direction = 'credit' AND e.status = 'settled' AND e.flag IS NULL
                      AND NOT EXISTS (SELECT 1 FROM core_chainjob j WHERE j.external_tx_row_id = e.id)
                    """),
                heldCreditPaisa: try int("""
                    SELECT COALESCE(SUM(amount_paisa), 0) FROM core_externaltransaction WHERE flag = 'above_mint_limit'
                    """),
                creditsMintedMoreThanOnce: try strings("""
                    SELECT external_tx_id FROM core_chainjob WHERE job_type = 'mint' GROUP BY external_tx_id HAVING COUNT(*) > 1
                    """),
                payoutRequestedUnits: try int("""
                    SELECT COALESCE(SUM(amount_units), 0) FROM core_chainjob WHERE job_type = 'burn' AND payout_state = 'requested'
                    """),
                burnsAwaitingDebit: try strings("""
                    SELECT id FROM core_chainjob WHERE job_type = 'burn' AND payout_state <> 'confirmed' ORDER BY created_at
                    """),
                burnsWithSeveralDebits: try strings("""
                    SELECT matched_job_id FROM core_externaltransaction WHERE matched_job_id IS NOT NULL
                    GROUP BY matched_job_id HAVING COUNT(*) > 1
                    """),
                unmatchedDebits: try strings("""
                    SELECT provider_tx_id FROM core_externaltransaction WHERE flag IN ('unmatched_debit', 'failed_payout')
                    """),
                ledgerUserNetUnits: try int("""
                    SELECT COALESCE(SUM(CASE side WHEN 'debit' THEN amount_units ELSE -amount_units END), 0)
                    FROM core_ledgerentry WHERE account = 'user_token'
                    """),
                latest: latest,
                arrivals: ArrivalStats(webhookOnly: webhookOnly, pollOnly: pollOnly, both: both, lagsMicros: lags,
                                       foundByPollFirst: try strings("""
                                           SELECT provider_tx_id FROM core_externaltransaction WHERE first_seen_via = 'poll'
                                           ORDER BY id DESC LIMIT 50
                                           """)))
        }
    }

    public func verifyLedger() async throws -> LedgerChainVerifier {
        try await database.read { db in
            // The read runs on GRDB's reader queue, so it can hand each batch to the pipeline and decode the next.
            let pipeline = PipelinedLedgerVerifier()
            var batch: [LedgerEntry] = []
            batch.reserveCapacity(LedgerChainVerifier.batchSize)
            // Rows are decoded straight from the statement, without a GRDB `Row` each.
            try db.cachedStatement(sql: """
                SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
                FROM core_ledgerentry ORDER BY id
                """).forEach { row in
                batch.append(try Self.decodeLedger(row))
                guard batch.count == LedgerChainVerifier.batchSize else { return true }
                guard pipeline.add(batch) else { return false }
                batch.removeAll(keepingCapacity: true)
                return true
            }
            _ = pipeline.add(batch)
            return pipeline.finish(storedHead: try WriteScope.storedHead(db) ?? .genesis)
        }
    }

    public func cursor(named name: String) async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM core_cursor WHERE name = ?"), arguments: [name]) ?? 0
        }
    }

    public func setCursor(named name: String, to value: Int64) async throws {
        try await database.write { db in
            try db.cachedStatement(sql: """
                INSERT INTO core_cursor (name, value) VALUES (?, ?)
                ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)
                """).execute(arguments: [name, value])
        }
    }
}
