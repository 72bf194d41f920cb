import GRDB
import PKRApplication
import PKRCore
import SQLiteSupport

/// A DB-backed simulation of a PKR wallet provider: accounts, an append-only transaction log, payouts and a webhook
/// outbox. Every credit and debit is written with its outbox row in one transaction, so no event is lost. It runs
/// its own transactions on its own connection pool, never the gateway's, even on the gateway's file.
public final class SQLiteWalletStub: WalletStubStore {
    private let database: DatabasePool
    /// Payouts and credits arrive concurrently, one per request: written together, they share a commit.
    private let groupCommit: GroupCommit<NoBatchScope>
    private let pushEnabled: Bool
    private let onOutboxWrite: @Sendable () -> Void
    private let nowMicros: @Sendable () -> Int64

    public init(
        database: DatabasePool, pushEnabled: Bool,
        nowMicros: @escaping @Sendable () -> Int64, onOutboxWrite: @escaping @Sendable () -> Void = {}
    ) {
        self.database = database
        self.groupCommit = GroupCommit(database: database)
        self.pushEnabled = pushEnabled
        self.nowMicros = nowMicros
        self.onOutboxWrite = onOutboxWrite
    }

    @discardableResult public func openAccount(_ accountNo: String) async throws -> Bool {
        let createdAt = Timestamp.format(micros: nowMicros())
        return try await database.write { db in
            try db.cachedStatement(
                sql: """
                    INSERT INTO wallet_stub_walletstubaccount (account_no, balance_paisa, created_at) VALUES (?, 0, ?)
                    ON CONFLICT (account_no) DO NOTHING
                    """
            ).execute(arguments: [accountNo, createdAt])
            return db.changesCount == 1
        }
    }

    public func account(_ accountNo: String) async throws -> ProviderAccount? {
        try await database.read { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(
                        sql: "SELECT balance_paisa, created_at FROM wallet_stub_walletstubaccount WHERE account_no = ?"),
                    arguments: [accountNo])
            else { return nil }
            let createdAt: String = row[1]
            guard let createdAtMicros = Timestamp.parse(createdAt) else { throw ProviderError.corruptRow(accountNo) }
            return ProviderAccount(accountNo: accountNo, balancePaisa: row[0], createdAtMicros: createdAtMicros)
        }
    }

    public func credit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction {
        let now = nowMicros()
        let tx = ProviderTransaction(
            providerTxID: Identifiers.providerTxID(unixMillis: now / 1000), account: account,
            direction: .credit, amountPaisa: amountPaisa, status: .settled, occurredAtMicros: now,
            memo: memo)
        try await groupCommit.write { [pushEnabled] db, _ in
            try Self.append(db, tx, push: pushEnabled)
        }
        if pushEnabled { onOutboxWrite() }
        return tx
    }

    public func recordUnannouncedDeposits(account: String, amountsPaisa: [Int64], memo: String) async throws {
        let times = UnannouncedDeposits.occurredAtMicros(count: amountsPaisa.count, endingAt: nowMicros())
        try await database.write { db in
            for (amountPaisa, occurred) in zip(amountsPaisa, times) {
                let tx = ProviderTransaction(
                    providerTxID: Identifiers.providerTxID(unixMillis: occurred / 1000), account: account,
                    direction: .credit, amountPaisa: amountPaisa, status: .settled,
                    occurredAtMicros: occurred, memo: memo)
                try Self.append(db, tx, push: false)
            }
        }
    }

    public func payout(_ request: PayoutRequest, failing: PayoutFailure?, pending: Bool) async throws -> (payout: Payout, replayed: Bool) {
        let now = nowMicros()
        let result = try await groupCommit.write { [pushEnabled] db, _ -> (payout: Payout, replayed: Bool) in
            if let (existing, fingerprint) = try Self.payout(db, column: "idempotency_key", request.idempotencyKey) {
                guard fingerprint == request.fingerprint else { throw ProviderError.idempotencyKeyReused(request.idempotencyKey) }
                return (existing, true)
            }
            if try Self.payout(db, column: "reference", request.reference) != nil {
                throw ProviderError.referenceConflict(request.reference)
            }
            // The debit, its webhook and the payout in one transaction; a failing payout's reversal too. One refused
            // before its debit moves no money and writes only the payout.
            var payout: Payout
            if let failing, !failing.afterDebit {
                payout = PayoutRecords.refused(request, code: failing.code, nowMicros: now)
            } else {
                // A pending payout's debit is pending too: its money is set aside until the payout ends.
                let debit = PayoutRecords.debit(for: request, status: pending ? .pending : .settled, nowMicros: now)
                try Self.append(db, debit, push: pushEnabled)
                payout = PayoutRecords.payout(for: request, debit: debit, nowMicros: now)
                if pending { payout.status = .pending }
                if let failing {
                    let reversal = PayoutRecords.reversal(for: payout, status: .failed, nowMicros: now)
                    try Self.append(db, reversal, push: pushEnabled)
                    payout.status = .failed
                    payout.failureCode = failing.code.rawValue
                    payout.reversalProviderTxID = reversal.providerTxID
                }
            }
            let at = Timestamp.format(micros: now)
            try db.cachedStatement(
                sql: """
                    INSERT INTO wallet_stub_payout
                      (id, idempotency_key, request_fingerprint, account_no, amount_paisa, memo, reference, status,
                       failure_code, provider_tx_id, reversal_provider_tx_id, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """
            ).execute(arguments: [
                payout.id, request.idempotencyKey, request.fingerprint, payout.account, payout.amountPaisa, payout.memo,
                payout.reference, payout.status.rawValue, payout.failureCode, payout.providerTxID,
                payout.reversalProviderTxID, at, at,
            ])
            return (payout, false)
        }
        if !result.replayed && pushEnabled { onOutboxWrite() }
        return result
    }

    public func returnPayout(id: String) async throws -> Payout {
        let now = nowMicros()
        let payout = try await database.write { [pushEnabled] db -> Payout in
            guard var payout = try Self.payout(db, column: "id", id)?.0 else { throw ProviderError.unknownPayout(id) }
            guard payout.status == .paid else { throw ProviderError.payoutState(id: id, status: payout.status) }
            let reversal = PayoutRecords.reversal(for: payout, status: .returned, nowMicros: now)
            try Self.append(db, reversal, push: pushEnabled)
            payout.status = .returned
            payout.reversalProviderTxID = reversal.providerTxID
            payout.updatedAtMicros = now
            try db.cachedStatement(
                sql: "UPDATE wallet_stub_payout SET status = 'returned', reversal_provider_tx_id = ?, updated_at = ? WHERE id = ?"
            ).execute(arguments: [reversal.providerTxID, Timestamp.format(micros: now), id])
            return payout
        }
        if pushEnabled { onOutboxWrite() }
        return payout
    }

    public func advancePayout(id: String, to status: PayoutStatus, failureCode: PayoutFailureCode?) async throws -> Payout {
        let now = nowMicros()
        let payout = try await database.write { [pushEnabled] db -> Payout in
            guard var payout = try Self.payout(db, column: "id", id)?.0 else { throw ProviderError.unknownPayout(id) }
            // A return credits the money back with a reversal: `returnPayout`.
            guard status != .returned, payout.status.canMove(to: status) else {
                throw ProviderError.payoutState(id: id, status: payout.status)
            }
            if status.debitStatus != payout.status.debitStatus {
                guard let debitID = payout.providerTxID else { throw ProviderError.corruptRow(id) }
                try db.cachedStatement(
                    sql: "UPDATE wallet_stub_walletstubtx SET status = ? WHERE provider_tx_id = ? AND status = 'pending'"
                ).execute(arguments: [status.debitStatus.rawValue, debitID])
                guard db.changesCount == 1 else { throw ProviderError.corruptRow(id) }
                if status.debitStatus == .failed {
                    try db.cachedStatement(
                        sql: "UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + ? WHERE account_no = ?"
                    ).execute(arguments: [payout.amountPaisa, payout.account])
                }
                if pushEnabled {
                    // The debit as the listing now shows it, pushed again with its new status.
                    guard
                        let row = try Row.fetchOne(
                            db.cachedStatement(
                                sql: """
                                    SELECT t.provider_tx_id, a.account_no, t.direction, t.amount_paisa, t.status, t.occurred_at, t.memo,
                                           t.reference
                                    FROM wallet_stub_walletstubtx t JOIN wallet_stub_walletstubaccount a ON a.id = t.account_id
                                    WHERE t.provider_tx_id = ?
                                    """), arguments: [debitID])
                    else { throw ProviderError.corruptRow(id) }
                    try SQLiteWebhookOutbox.enqueue(db, try Self.decode(row, offset: 0), nowMicros: now)
                }
            }
            payout.status = status
            payout.failureCode = status == .failed ? (failureCode ?? .railRejected).rawValue : nil
            payout.updatedAtMicros = now
            try db.cachedStatement(sql: "UPDATE wallet_stub_payout SET status = ?, failure_code = ?, updated_at = ? WHERE id = ?")
                .execute(arguments: [status.rawValue, payout.failureCode, Timestamp.format(micros: now), id])
            return payout
        }
        if pushEnabled { onOutboxWrite() }
        return payout
    }

    public func payout(id: String) async throws -> Payout? {
        try await database.read { db in try Self.payout(db, column: "id", id)?.0 }
    }

    public func payout(reference: String) async throws -> Payout? {
        try await database.read { db in try Self.payout(db, column: "reference", reference)?.0 }
    }

    /// A payout and the fingerprint of the request that made it, by one of its unique columns.
    static func payout(_ db: Database, column: String, _ value: String) throws -> (Payout, String)? {
        precondition(["id", "idempotency_key", "reference"].contains(column), "payouts are found by a unique column")
        guard
            let row = try Row.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT id, status, account_no, amount_paisa, memo, reference, failure_code, provider_tx_id, created_at,
                               updated_at, request_fingerprint, reversal_provider_tx_id
                        FROM wallet_stub_payout WHERE \(column) = ?
                        """), arguments: [value])
        else { return nil }
        let id: String = row[0]
        let createdAt: String = row[8]
        let updatedAt: String = row[9]
        let amountPaisa: Int64 = row[3]
        guard let status = PayoutStatus(rawValue: row[1]), amountPaisa > 0, let created = Timestamp.parse(createdAt),
            let updated = Timestamp.parse(updatedAt)
        else { throw ProviderError.corruptRow(id) }
        let payout = Payout(
            id: id, status: status, account: row[2], amountPaisa: amountPaisa, memo: row[4], reference: row[5],
            failureCode: row[6], providerTxID: row[7], reversalProviderTxID: row[11], createdAtMicros: created,
            updatedAtMicros: updated)
        return (payout, row[10])
    }

    public func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage {
        precondition(limit > 0 && limit <= ProviderLimits.pageSizeMax + 1, "page size out of range")
        let since = Timestamp.format(micros: sinceMicros)
        return try await database.read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT e.id, t.provider_tx_id, a.account_no, t.direction, t.amount_paisa, e.status, t.occurred_at,
                               t.memo, t.reference
                        FROM wallet_stub_txentry e JOIN wallet_stub_walletstubtx t ON t.id = e.tx_id
                          JOIN wallet_stub_walletstubaccount a ON a.id = t.account_id
                        WHERE e.id > ? AND t.occurred_at >= ? ORDER BY e.id LIMIT ?
                        """), arguments: [cursor, since, limit])
            var next = cursor
            var out: [ProviderTransaction] = []
            var cursors: [Int64] = []
            out.reserveCapacity(rows.count)
            for row in rows {
                next = row[0]
                cursors.append(next)
                out.append(try Self.decode(row, offset: 1))
            }
            return ProviderPage(transactions: out, nextCursor: next, cursors: cursors)
        }
    }

    public func balancePaisa(account: String) async throws -> Int64? {
        try await database.read { db in
            try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT balance_paisa FROM wallet_stub_walletstubaccount WHERE account_no = ?"),
                arguments: [account])
        }
    }

    public func reservePaisa() async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT COALESCE(SUM(balance_paisa), 0) FROM wallet_stub_walletstubaccount")) ?? 0
        }
    }

    // MARK: - Writing

    static func append(_ db: Database, _ tx: ProviderTransaction, push: Bool) throws {
        guard
            let accountID = try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT id FROM wallet_stub_walletstubaccount WHERE account_no = ?"), arguments: [tx.account])
        else {
            throw ProviderError.unknownAccount(tx.account)
        }
        let delta = tx.direction == .credit ? tx.amountPaisa : -tx.amountPaisa
        try db.cachedStatement(
            sql: """
                UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + ?
                WHERE id = ? AND balance_paisa + ? >= 0
                """
        ).execute(arguments: [delta, accountID, delta])
        guard db.changesCount == 1 else { throw ProviderError.insufficientFunds(account: tx.account) }
        try db.cachedStatement(
            sql: """
                INSERT INTO wallet_stub_walletstubtx
                  (provider_tx_id, account_id, direction, amount_paisa, status, memo, reference, occurred_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [
            tx.providerTxID, accountID, tx.direction.rawValue, tx.amountPaisa, tx.status.rawValue,
            tx.memo, tx.reference, Timestamp.format(micros: tx.occurredAtMicros),
        ])
        if push {
            try SQLiteWebhookOutbox.enqueue(db, tx, nowMicros: tx.occurredAtMicros)
        }
    }

    static func decode(_ row: Row, offset: Int) throws -> ProviderTransaction {
        let occurred: String = row[offset + 5]
        guard let direction = TransactionDirection(rawValue: row[offset + 2]),
            let status = TransactionStatus(rawValue: row[offset + 4]),
            let occurredAtMicros = Timestamp.parse(occurred)
        else {
            throw DatabaseError(message: "wallet stub row \(String(describing: row[offset])) is corrupt")
        }
        let amountPaisa: Int64 = row[offset + 3]
        guard amountPaisa > 0 else { throw DatabaseError(message: "wallet stub row has a non-positive amount") }
        return ProviderTransaction(
            providerTxID: row[offset], account: row[offset + 1], direction: direction,
            amountPaisa: amountPaisa, status: status, occurredAtMicros: occurredAtMicros,
            memo: row[offset + 6], reference: row[offset + 7])
    }
}

/// The rows a new payout writes, made alike by both engines: its debit, the payout, and (when it fails or comes
/// back) the credit that puts the money back on its account.
enum PayoutRecords {
    static func debit(for request: PayoutRequest, status: TransactionStatus = .settled, nowMicros: Int64) -> ProviderTransaction {
        ProviderTransaction(
            providerTxID: Identifiers.providerTxID(unixMillis: nowMicros / 1000), account: request.account,
            direction: .debit, amountPaisa: request.amountPaisa, status: status,
            occurredAtMicros: nowMicros, memo: request.memo, reference: request.reference)
    }

    static func payout(for request: PayoutRequest, debit: ProviderTransaction, nowMicros: Int64) -> Payout {
        Payout(
            id: Identifiers.payoutID(unixMillis: nowMicros / 1000), status: .paid, account: request.account,
            amountPaisa: request.amountPaisa, memo: request.memo, reference: request.reference, failureCode: nil,
            providerTxID: debit.providerTxID, createdAtMicros: nowMicros, updatedAtMicros: nowMicros)
    }

    /// A payout refused before any money moved: no debit, no reversal.
    static func refused(_ request: PayoutRequest, code: PayoutFailureCode, nowMicros: Int64) -> Payout {
        Payout(
            id: Identifiers.payoutID(unixMillis: nowMicros / 1000), status: .failed, account: request.account,
            amountPaisa: request.amountPaisa, memo: request.memo, reference: request.reference, failureCode: code.rawValue,
            providerTxID: nil, createdAtMicros: nowMicros, updatedAtMicros: nowMicros)
    }

    static func reversal(for payout: Payout, status: PayoutStatus, nowMicros: Int64) -> ProviderTransaction {
        ProviderTransaction(
            providerTxID: Identifiers.providerTxID(unixMillis: nowMicros / 1000), account: payout.account, direction: .credit,
            amountPaisa: payout.amountPaisa, status: .settled, occurredAtMicros: nowMicros,
            memo: "payout \(payout.id) \(status.rawValue)",
            reference: PayoutReversal.reference(payoutReference: payout.reference, status: status))
    }
}

/// When unannounced deposits happened: a millisecond apart, ending now, as deposits made during an outage would
/// be, so that their ids grow with time like a provider's.
enum UnannouncedDeposits {
    static func occurredAtMicros(count: Int, endingAt now: Int64) -> [Int64] {
        (0..<count).map { now - Int64(count - 1 - $0) * 1000 }
    }
}
