import GRDB
import PKRCore
import SQLiteSupport

/// What one SQLite write transaction carries from statement to statement. The ledger head is read once, advanced
/// in memory by every posting and written back once, just before the commit (`flush`); users are looked up once.
/// On the single writer this saves three statements per mint. Only the transaction that made a scope may use it.
final class WriteScope {
    private var ledgerHead: LedgerHead?
    private var ledgerHeadChanged = false
    private var usersByAccount: [String: DemoUser] = [:]

    /// The head the next posting links to.
    func head(_ db: Database) throws -> LedgerHead {
        if let ledgerHead { return ledgerHead }
        guard let stored = try Self.storedHead(db) else { throw DatabaseError(message: "ledger head row missing") }
        ledgerHead = stored
        return stored
    }

    /// The head as the database holds it (nil only if the migration's row is missing).
    static func storedHead(_ db: Database) throws -> LedgerHead? {
        try db.cachedStatement(sql: "SELECT last_id, last_hash FROM core_ledgerhead WHERE singleton = 1")
            .first(decode: { LedgerHead(lastID: $0.int64(0), lastHash: $0.string(1)) })
    }

    func advance(to head: LedgerHead) {
        ledgerHead = head
        ledgerHeadChanged = true
    }

    /// Before a savepoint: what `restore` needs should the savepoint be rolled back.
    func mark() -> LedgerHead? { ledgerHead }

    /// After a rollback to a savepoint: forget the postings the rollback removed.
    func restore(_ mark: LedgerHead?) { ledgerHead = mark }

    /// The user holding a wallet account; the users table does not change inside a business transaction.
    func user(_ db: Database, walletAccount: String, lookUp: (Database, String) throws -> DemoUser?) throws -> DemoUser? {
        if let user = usersByAccount[walletAccount] { return user }
        let user = try lookUp(db, walletAccount)
        if let user { usersByAccount[walletAccount] = user }
        return user
    }

    /// Writes the advanced head back. Runs last in the transaction, after every posting.
    func flush(_ db: Database) throws {
        guard ledgerHeadChanged, let ledgerHead else { return }
        assert(try! Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(id), 0) FROM core_ledgerentry") == ledgerHead.lastID,
               "the ledger head is the last entry")
        try db.cachedStatement(sql: "UPDATE core_ledgerhead SET last_id = ?, last_hash = ? WHERE singleton = 1")
            .run(ledgerHead.lastID, ledgerHead.lastHash)
        ledgerHeadChanged = false
    }
}
