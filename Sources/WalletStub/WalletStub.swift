import GRDB
import PKRApplication
import PKRCore
import SQLiteSupport

/// A DB-backed simulation of a PKR wallet provider: accounts, an append-only transaction log, and a webhook
/// outbox. Every credit and debit is written with its outbox row in one transaction, so no event is lost.
public final class SQLiteWalletStub: WalletStubStore {
    public static let pageSizeMax = 1000

    private let database: any DatabaseWriter
    private let transactions: any SQLiteTransactions
    private let pushEnabled: Bool
    private let onOutboxWrite: @Sendable () -> Void
    private let nowMicros: @Sendable () -> Int64

    /// Writes go through `transactions` when given (the gateway's group commit), else each in its own transaction.
    public init(
        database: any DatabaseWriter, transactions: (any SQLiteTransactions)? = nil, pushEnabled: Bool,
        nowMicros: @escaping @Sendable () -> Int64, onOutboxWrite: @escaping @Sendable () -> Void = {}
    ) {
        self.database = database
        self.transactions = transactions ?? OwnTransactions(database)
        self.pushEnabled = pushEnabled
        self.nowMicros = nowMicros
        self.onOutboxWrite = onOutboxWrite
    }

    public func openAccount(_ accountNo: String) async throws {
        let createdAt = Timestamp.format(micros: nowMicros())
        try await transactions.write { db in
            try db.cachedStatement(
                sql: """
                    INSERT INTO wallet_stub_walletstubaccount (account_no, balance_paisa, created_at) VALUES (?, 0, ?)
                    ON CONFLICT (account_no) DO NOTHING
                    """
            ).execute(arguments: [accountNo, createdAt])
        }
    }

    public func credit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction {
        let now = nowMicros()
        let tx = ProviderTransaction(
            providerTxID: Identifiers.providerTxID(unixMillis: now / 1000), account: account,
            direction: .credit, amountPaisa: amountPaisa, status: .settled, occurredAtMicros: now,
            memo: memo)
        try await transactions.write { [pushEnabled] db in
            try Self.append(db, tx, push: pushEnabled)
        }
        if pushEnabled { onOutboxWrite() }
        return tx
    }

    public func recordUnannouncedDeposits(account: String, amountsPaisa: [Int64], memo: String) async throws {
        let times = UnannouncedDeposits.occurredAtMicros(count: amountsPaisa.count, endingAt: nowMicros())
        try await transactions.write { db in
            for (amountPaisa, occurred) in zip(amountsPaisa, times) {
                let tx = ProviderTransaction(
                    providerTxID: Identifiers.providerTxID(unixMillis: occurred / 1000), account: account,
                    direction: .credit, amountPaisa: amountPaisa, status: .settled,
                    occurredAtMicros: occurred, memo: memo)
                try Self.append(db, tx, push: false)
            }
        }
    }

    public func payout(account: String, amountPaisa: Int64, memo: String, reference: String) async throws -> ProviderTransaction {
        let now = nowMicros()
        let candidate = ProviderTransaction(
            providerTxID: Identifiers.providerTxID(unixMillis: now / 1000), account: account,
            direction: .debit, amountPaisa: amountPaisa, status: .settled,
            occurredAtMicros: now, memo: memo, reference: reference)
        let (tx, created) = try await transactions.write { [pushEnabled] db -> (ProviderTransaction, Bool) in
            if let existing = try Self.transaction(db, reference: reference) {
                guard existing.amountPaisa == amountPaisa, existing.account == account else {
                    throw ProviderError.referenceConflict(reference)
                }
                return (existing, false)
            }
            try Self.append(db, candidate, push: pushEnabled)
            return (candidate, true)
        }
        if created && pushEnabled { onOutboxWrite() }
        return tx
    }

    public func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage {
        precondition(limit > 0 && limit <= Self.pageSizeMax, "page size out of range")
        let since = Timestamp.format(micros: sinceMicros)
        return try await database.read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT t.id, t.provider_tx_id, a.account_no, t.direction, t.amount_paisa, t.status, t.occurred_at,
                               t.memo, t.reference
                        FROM wallet_stub_walletstubtx t JOIN wallet_stub_walletstubaccount a ON a.id = t.account_id
                        WHERE t.id > ? AND t.occurred_at >= ? ORDER BY t.id LIMIT ?
                        """), arguments: [cursor, since, limit])
            var next = cursor
            var out: [ProviderTransaction] = []
            out.reserveCapacity(rows.count)
            for row in rows {
                next = row[0]
                out.append(try Self.decode(row, offset: 1))
            }
            return ProviderPage(transactions: out, nextCursor: next)
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

    static func transaction(_ db: Database, reference: String) throws -> ProviderTransaction? {
        guard
            let row = try Row.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT t.provider_tx_id, a.account_no, t.direction, t.amount_paisa, t.status, t.occurred_at, t.memo, t.reference
                        FROM wallet_stub_walletstubtx t JOIN wallet_stub_walletstubaccount a ON a.id = t.account_id
                        WHERE t.reference = ?
                        """), arguments: [reference])
        else { return nil }
        return try decode(row, offset: 0)
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

/// When unannounced deposits happened: a millisecond apart, ending now, as deposits made during an outage would
/// be, so that their ids grow with time like a provider's.
enum UnannouncedDeposits {
    static func occurredAtMicros(count: Int, endingAt now: Int64) -> [Int64] {
        (0..<count).map { now - Int64(count - 1 - $0) * 1000 }
    }
}
