import ChainStub
import Foundation
import GRDB
import PKRApplication
import PKRCore
import SQLiteSupport

/// The settlement primitives on SQLite, inside the writer's transaction. They decide nothing: `Settlement` does.
/// Row locks are not needed on the single writer, so a "locked" read is a plain one. Mints' balance credits and the
/// ledger head move in the transaction's `WriteScope` and are written once, at its flush.
enum SQLitePrimitives {
    /// The burn a payout's debit pays, not yet paired with another debit. Every debit webhook runs it, so each of its
    /// conditions is an index lookup: a `NOT IN` over the paired debits read them all, every time.
    static let unmatchedBurnSQL = """
        SELECT id FROM core_chainjob j
        WHERE job_type = 'burn' AND (id = ? OR payout_provider_tx_id = ?) AND amount_units = ?
          AND NOT EXISTS (SELECT 1 FROM core_externaltransaction e WHERE e.matched_job_id = j.id)
        LIMIT 1
        """

    static func execute(_ primitive: Primitive, _ db: Database, _ scope: WriteScope) throws -> PrimitiveAnswer {
        switch primitive {
        case .findCustomer(let account):
            return .customer(
                try scope.customer(db, walletAccount: account) {
                    try SQLiteStore.customer($0, where: "wallet_account = ?", $1)
                })
        case .findCustomerByID(let id):
            return .customer(try SQLiteStore.customer(db, where: "id = ?", id))
        case .recordTransaction(let draft):
            return .rowID(try recordTransaction(db, draft))
        case .findTransaction(let providerTxID):
            return .transaction(
                try db.cachedStatement(
                    sql: """
                        SELECT \(SQLiteStore.externalColumns) FROM core_externaltransaction e WHERE e.provider_tx_id = ?
                        """
                ).first(providerTxID, decode: SQLiteStore.decodeExternal))
        case .markSeen(let rowID, let path):
            let column = path == .webhook ? "seen_via_webhook" : "seen_via_poll"
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET \(column) = 1 WHERE id = ?").run(rowID)
        case .setStatus(let rowID, let status):
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET status = ? WHERE id = ?").run(status.rawValue, rowID)
        case .flag(let rowID, let flag):
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET flag = ? WHERE id = ?").run(flag.rawValue, rowID)
        case .clearHold(let rowID):
            try db.cachedStatement(
                sql: """
                    UPDATE core_externaltransaction SET flag = NULL WHERE id = ? AND flag = 'above_mint_limit'
                    """
            ).run(rowID)
        case .bindCustomer(let rowID, let customerID):
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET user_id = ? WHERE id = ? AND user_id IS NULL").run(
                customerID, rowID)
        case .findUnmatchedBurn(let reference, let providerTxID, let amountUnits):
            return .jobID(
                try db.cachedStatement(sql: unmatchedBurnSQL).first(reference ?? "", providerTxID, amountUnits) { $0.string(0) })
        case .markPayoutSubmitted(let jobID, let providerTxID):
            try db.cachedStatement(
                sql: """
                    UPDATE core_chainjob SET payout_state = 'submitted', payout_provider_tx_id = ?
                    WHERE id = ? AND job_type = 'burn' AND payout_state = 'requested'
                    """
            ).run(providerTxID, jobID)
        case .confirmPayout(let rowID, let jobID, let providerTxID):
            try db.cachedStatement(sql: "UPDATE core_externaltransaction SET matched_job_id = ? WHERE id = ?").run(jobID, rowID)
            try db.cachedStatement(
                sql: """
                    UPDATE core_chainjob SET payout_state = 'confirmed', payout_provider_tx_id = ? WHERE id = ?
                    """
            ).run(providerTxID, jobID)
        case .moveTokenBalance(let customerID, let deltaUnits):
            return .moved(try moveTokenBalance(db, scope, customerID: customerID, deltaUnits: deltaUnits))
        case .tokenBalance(let customerID):
            try scope.flushBalances(db)
            return .units(
                try db.cachedStatement(sql: "SELECT balance_units FROM core_tokenbalance WHERE user_id = ?")
                    .first(customerID) { $0.int64(0) } ?? 0)
        case .chainTransfer(let transfer):
            return .txHash(try chainTransfer(db, scope, transfer))
        case .insertJob(let row):
            try insertJob(db, row)
        case .findJob(let id):
            return .job(try job(db, id: id))
        case .appendLedger(let append):
            try appendLedger(db, scope, append)
        case .openHold(let jobID, let customerID, let amountUnits, let createdAt):
            try db.cachedStatement(
                sql: """
                    INSERT INTO core_redemptionhold (job_id, user_id, amount_units, state, created_at) VALUES (?, ?, ?, 'held', ?)
                    """
            ).run(jobID, customerID, amountUnits, createdAt)
        case .findHold(let jobID):
            return .hold(try hold(db, jobID: jobID))
        case .closeHold(let jobID, let state, let txHash, let closedAt):
            precondition(state != .held, "a hold ends burnt or released")
            try db.cachedStatement(
                sql: """
                    UPDATE core_redemptionhold SET state = ?, closing_tx_hash = ?, closed_at = ? WHERE job_id = ? AND state = 'held'
                    """
            ).run(state.rawValue, txHash, closedAt, jobID)
            guard db.changesCount == 1 else { throw DatabaseError(message: "the hold of \(jobID) had already ended") }
        case .claimIdempotencyKey(let claim):
            return .claim(try claimKey(db, claim))
        case .storeAnswer(let claim, let receipt):
            try db.cachedStatement(
                sql: """
                    INSERT INTO core_idempotencyrecord
                      (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
                    VALUES (?, ?, ?, ?, 201, ?, ?)
                    """
            ).run(claim.customerID, claim.endpoint, claim.key, claim.fingerprint, receipt.storedForm, claim.createdAt)
        case .logInbound(let row):
            return .rowID(try insertInbound(db, row))
        case .quarantine(let row):
            try db.cachedStatement(
                sql: """
                    INSERT INTO core_webhookquarantine (inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """
            ).run(
                row.inboundID, row.providerTxID, row.via.rawValue, row.differingFields.joined(separator: ","),
                SQLiteBlob(row.body), row.createdAt)
        }
        return .none
    }

    /// One statement records a new transaction; the provider id's unique key turns a known one away unwritten. Its
    /// text times are derived from the microseconds (v7-compact-rows).
    private static func recordTransaction(_ db: Database, _ draft: TransactionDraft) throws -> Int64? {
        let tx = draft.tx
        let seenColumn = draft.path == .webhook ? "seen_via_webhook" : "seen_via_poll"
        try db.cachedStatement(
            sql: """
                INSERT INTO core_externaltransaction
                  (provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at_micros,
                   recorded_at_micros, first_seen_via, \(seenColumn))
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                ON CONFLICT (provider_tx_id) DO NOTHING
                """
        ).run(
            tx.providerTxID, tx.account, draft.customerID, tx.direction.rawValue, tx.amountPaisa, tx.status.rawValue,
            tx.memo, tx.reference, tx.occurredAtMicros, draft.recordedAtMicros, draft.path.rawValue)
        return db.changesCount == 1 ? db.lastInsertedRowID : nil
    }

    /// A credit waits in the scope until the flush; a debit first writes the credits before it, so that its balance
    /// check sees every earlier mint, and moves the balance only if it covers the debit.
    private static func moveTokenBalance(_ db: Database, _ scope: WriteScope, customerID: String, deltaUnits: Int64) throws -> Bool {
        precondition(deltaUnits != 0, "a balance move has an amount")
        if deltaUnits > 0 { return try scope.creditToken(db, customerID: customerID, units: deltaUnits) }
        try scope.flushBalances(db)
        try db.cachedStatement(
            sql: """
                UPDATE core_tokenbalance SET balance_units = balance_units + ? WHERE user_id = ? AND balance_units >= ?
                """
        ).run(deltaUnits, customerID, -deltaUnits)
        return db.changesCount == 1
    }

    /// A mint's credit waits in the scope; every other operation takes from an address, so it first writes the
    /// credits before it.
    private static func chainTransfer(_ db: Database, _ scope: WriteScope, _ transfer: ChainTransfer) throws -> String {
        switch transfer.op {
        case .mint:
            try scope.creditChain(db, address: transfer.address, units: transfer.amountUnits)
            return try ChainStub.recordReceipt(
                db, op: .mint, address: transfer.address, amountUnits: transfer.amountUnits,
                reference: transfer.reference, createdAt: transfer.createdAt,
                nowMicros: transfer.nowMicros)
        case .burn, .hold, .release:
            try scope.flushBalances(db)
            return try ChainStub.submit(
                db, op: transfer.op, address: transfer.address, amountUnits: transfer.amountUnits,
                reference: transfer.reference, createdAt: transfer.createdAt, nowMicros: transfer.nowMicros)
        }
    }

    static func hold(_ db: Database, jobID: String) throws -> RedemptionHold? {
        try db.cachedStatement(
            sql: """
                SELECT h.user_id, u.chain_address, h.amount_units, h.state
                FROM core_redemptionhold h JOIN core_user u ON u.id = h.user_id WHERE h.job_id = ?
                """
        ).first(jobID) { row in
            let amountUnits = row.int64(2)
            guard let state = RedemptionHold.State(rawValue: row.string(3)), amountUnits > 0, amountUnits % Money.unitsPerPaisa == 0
            else { throw DatabaseError(message: "core_redemptionhold \(jobID) is corrupt") }
            return RedemptionHold(
                jobID: jobID, customerID: row.string(0), chainAddress: row.string(1), amountUnits: amountUnits, state: state)
        }
    }

    private static func insertJob(_ db: Database, _ row: JobRow) throws {
        let job = row.job
        try db.cachedStatement(
            sql: """
                INSERT INTO core_chainjob
                  (id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, idempotency_key, memo,
                   payout_state, created_at_micros)
                VALUES (?, ?, ?, ?, 'confirmed', ?, ?, ?, ?, ?, ?)
                """
        ).run(
            job.id, job.jobType.rawValue, row.customerID, job.amountUnits, job.txHash, row.creditRowID,
            row.idempotencyKey, row.memo, row.payoutState, try storedMicros(job.createdAt))
    }

    /// A row's time as the microseconds SQLite stores; it derives the text on read (v7-compact-rows), so only a
    /// time in `Timestamp.format`'s own form can be stored: any other would read back changed, and a ledger entry's
    /// hash covers its time's text.
    static func storedMicros(_ text: String) throws -> Int64 {
        guard let micros = Timestamp.parse(text), Timestamp.format(micros: micros) == text else {
            throw DatabaseError(message: "\(text) is not a stored time")
        }
        return micros
    }

    static func job(_ db: Database, id: String) throws -> ChainJob? {
        try db.cachedStatement(sql: "SELECT id, job_type, amount_units, tx_hash, created_at FROM core_chainjob WHERE id = ?")
            .first(id) { row in
                guard let type = ChainJobType(rawValue: row.string(1)) else {
                    throw DatabaseError(message: "core_chainjob \(id) is corrupt")
                }
                return ChainJob(
                    id: row.string(0), jobType: type, amountUnits: row.int64(2), txHash: row.string(3),
                    createdAt: row.string(4))
            }
    }

    /// An entry's hash as the 32 bytes SQLite stores (v6-compact-ledger).
    static func hashBytes(_ entry: LedgerEntry) throws -> [UInt8] {
        guard let bytes = Crypto.unhex(entry.entryHash), bytes.count == Crypto.sha256Bytes else {
            throw DatabaseError(message: "ledger entry \(entry.id)'s hash is not \(Crypto.sha256Bytes) bytes of hex")
        }
        return bytes
    }

    /// Appends the job's postings to the hash chain. The head moves in `scope`; `WriteScope.flush` stores it. An
    /// entry names its job by the job's row (v7-compact-rows), found by the job's id in the same statement.
    private static func appendLedger(_ db: Database, _ scope: WriteScope, _ append: LedgerAppend) throws {
        let (entries, head) = LedgerAppend.entries(after: try scope.head(db), [append])
        for entry in entries {
            try db.cachedStatement(
                sql: """
                    INSERT INTO core_ledgerentry
                      (id, user_id, side, account, amount_units, ref_type, job_row, created_at_micros, entry_hash)
                    SELECT ?, ?, ?, ?, ?, ?, j.row_id, ?, ? FROM core_chainjob j WHERE j.id = ?
                    """
            ).run(
                entry.id, entry.userID, entry.side.rawValue, entry.account.rawValue, entry.amountUnits,
                entry.refType.rawValue, try storedMicros(entry.createdAt), SQLiteBlob(try Self.hashBytes(entry)), entry.refID)
            guard db.changesCount == 1 else { throw DatabaseError(message: "ledger entry \(entry.id) names no job") }
        }
        scope.advance(to: head)
    }

    /// On the single writer a key nobody has stored is this request's until the commit; the answer is stored then.
    private static func claimKey(_ db: Database, _ claim: IdempotencyClaim) throws -> IdempotencyClaim.Result {
        let stored = try db.cachedStatement(
            sql: """
                SELECT request_fingerprint, response_status, response_body FROM core_idempotencyrecord
                WHERE user_id = ? AND endpoint = ? AND idempotency_key = ?
                """
        ).first(claim.customerID, claim.endpoint, claim.key) { row in
            (fingerprint: row.string(0), status: row.int64(1), body: row.string(2))
        }
        guard let stored else { return .claimed }
        guard stored.status == 201, let receipt = BurnReceipt(storedForm: stored.body) else {
            throw DatabaseError(message: "core_idempotencyrecord holds an answer this gateway did not write")
        }
        return .taken(fingerprint: stored.fingerprint, answer: receipt)
    }

    static func insertInbound(_ db: Database, _ row: InboundRow) throws -> Int64 {
        let inbound = row.draft
        try db.cachedStatement(
            sql: """
                INSERT INTO core_webhookinbound
                  (received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                   provider_tx_id, job_id, body_bytes, body)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).run(
            Timestamp.format(micros: inbound.receivedAtMicros), inbound.messageID, inbound.webhookTimestamp,
            inbound.sourceAddress, inbound.scheme?.rawValue, inbound.verification, row.outcome, row.errorCode,
            inbound.providerTxID, row.jobID, inbound.body.count, row.keptBody.map(SQLiteBlob.init))
        return db.lastInsertedRowID
    }
}
