import ChainStub
import GRDB
import PKRApplication
import PKRCore
import SQLiteSupport

/// What one SQLite write transaction carries from statement to statement. The ledger head is read once, advanced
/// in memory by every posting and written back once, just before the commit (`flush`); customers are looked up once;
/// mints add to the token and chain-stub balances in memory, written once per user and address at the flush, or
/// before anything reads or debits a balance (`flushBalances`). On the single writer this saves five statements
/// per mint. Only the transaction that made a scope may use it.
final class WriteScope: BatchScope {
    /// What a savepoint's rollback must put back.
    struct Mark {
        fileprivate let ledgerHead: LedgerHead?
        fileprivate let creditedTokenUnits: [String: Int64]
        fileprivate let creditedChainUnits: [String: Int64]
    }

    private var ledgerHead: LedgerHead?
    private var ledgerHeadChanged = false
    private var customersByAccount: [String: Customer] = [:]
    /// Units minted in this transaction and not yet written, by customer id and by chain address.
    private var creditedTokenUnits: [String: Int64] = [:]
    private var creditedChainUnits: [String: Int64] = [:]
    /// Balance rows this transaction has seen; rows are never deleted.
    private var customersWithBalanceRows: Set<String> = []
    private var addressesWithBalanceRows: Set<String> = []

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
    func mark() -> Mark {
        Mark(ledgerHead: ledgerHead, creditedTokenUnits: creditedTokenUnits, creditedChainUnits: creditedChainUnits)
    }

    /// After a rollback to a savepoint: forget the postings and credits the rollback removed, and take back as
    /// pending the credits a rolled-back `flushBalances` had written.
    func restore(_ mark: Mark) {
        ledgerHead = mark.ledgerHead
        creditedTokenUnits = mark.creditedTokenUnits
        creditedChainUnits = mark.creditedChainUnits
    }

    /// A mint's credit to a customer's token balance; false when the customer has no balance row. Each balance row
    /// is checked once per transaction, here, inside the mint: a row missing at the flush would fail every change in
    /// the batch instead of this one.
    func creditToken(_ db: Database, customerID: String, units: Int64) throws -> Bool {
        precondition(units > 0, "a mint credits a positive amount")
        if !customersWithBalanceRows.contains(customerID) {
            guard
                try db.cachedStatement(sql: "SELECT 1 FROM core_tokenbalance WHERE user_id = ?").first(customerID, decode: { _ in true })
                    != nil
            else {
                return false
            }
            customersWithBalanceRows.insert(customerID)
        }
        creditedTokenUnits[customerID, default: 0] += units
        return true
    }

    /// A mint's credit to the chain stub's balance of an address, which must exist.
    func creditChain(_ db: Database, address: String, units: Int64) throws {
        precondition(units > 0, "a mint credits a positive amount")
        if !addressesWithBalanceRows.contains(address) {
            guard try ChainStub.hasAddress(db, address) else { throw ChainStubError.rejected(address: address, op: .mint) }
            addressesWithBalanceRows.insert(address)
        }
        creditedChainUnits[address, default: 0] += units
    }

    /// Writes the pending credits. Runs before a debit, so that its balance check sees every earlier mint.
    func flushBalances(_ db: Database) throws {
        for (userID, units) in creditedTokenUnits.sorted(by: { $0.key < $1.key }) {
            try db.cachedStatement(sql: "UPDATE core_tokenbalance SET balance_units = balance_units + ? WHERE user_id = ?")
                .run(units, userID)
            guard db.changesCount == 1 else { throw DatabaseError(message: "token balance row missing for user \(userID)") }
        }
        for (address, units) in creditedChainUnits.sorted(by: { $0.key < $1.key }) {
            try ChainStub.adjustBalance(db, address: address, deltaUnits: units, op: .mint)
        }
        creditedTokenUnits.removeAll(keepingCapacity: true)
        creditedChainUnits.removeAll(keepingCapacity: true)
    }

    /// The customer holding a wallet account; customers do not change inside a business transaction.
    func customer(_ db: Database, walletAccount: String, lookUp: (Database, String) throws -> Customer?) throws -> Customer? {
        if let customer = customersByAccount[walletAccount] { return customer }
        let customer = try lookUp(db, walletAccount)
        if let customer { customersByAccount[walletAccount] = customer }
        return customer
    }

    /// Writes the pending credits and the advanced head. Runs last in the transaction, after every posting.
    func flush(_ db: Database) throws {
        try flushBalances(db)
        guard ledgerHeadChanged, let ledgerHead else { return }
        assert(
            try! Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(id), 0) FROM core_ledgerentry") == ledgerHead.lastID,
            "the ledger head is the last entry")
        try db.cachedStatement(sql: "UPDATE core_ledgerhead SET last_id = ?, last_hash = ? WHERE singleton = 1")
            .run(ledgerHead.lastID, ledgerHead.lastHash)
        ledgerHeadChanged = false
    }
}
