import GRDB
import PKRCore
import SQLiteSupport

/// A DB-backed simulation of an ERC-20-like token: balances per address and one receipt per operation.
/// It shares the gateway's database transaction, so a mint or burn is applied with its ledger entries or not
/// at all. A real chain adapter would instead submit from an outbox and confirm asynchronously.
public enum ChainStub {
    public static func createTables(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE chain_stub_chainstubbalance (
                  address TEXT PRIMARY KEY,
                  balance_units INTEGER NOT NULL DEFAULT 0 CHECK (balance_units >= 0)
                );
                CREATE TABLE chain_stub_chainstubreceipt (
                  tx_hash TEXT PRIMARY KEY,
                  op TEXT NOT NULL CHECK (op IN ('mint', 'burn')),
                  address TEXT NOT NULL,
                  amount_units INTEGER NOT NULL CHECK (amount_units > 0),
                  reference TEXT NOT NULL UNIQUE,
                  created_at TEXT NOT NULL
                );
                """)
    }

    public static func openAddress(_ db: Database, _ address: String) throws {
        try db.cachedStatement(sql: "INSERT INTO chain_stub_chainstubbalance (address, balance_units) VALUES (?, 0) ON CONFLICT DO NOTHING")
            .execute(arguments: [address])
    }

    /// Applies an operation and returns its receipt's transaction hash. Taking more than an address holds throws.
    public static func submit(
        _ db: Database, op: ChainOperation, address: String, amountUnits: Int64, reference: String,
        createdAt: String, nowMicros: Int64
    ) throws -> String {
        for move in op.moves(address: address, amountUnits: amountUnits) {
            try adjustBalance(db, address: move.address, deltaUnits: move.deltaUnits, op: op)
        }
        return try recordReceipt(
            db, op: op, address: address, amountUnits: amountUnits, reference: reference,
            createdAt: createdAt, nowMicros: nowMicros)
    }

    /// Moves an address's balance; a change that would take it below zero throws. A caller that records receipts
    /// with `recordReceipt` alone must apply their sum here in the same transaction.
    public static func adjustBalance(_ db: Database, address: String, deltaUnits: Int64, op: ChainOperation) throws {
        if address == ChainOperation.redemptionAddress { return try adjustRedemptionBalance(db, deltaUnits: deltaUnits, op: op) }
        try db.cachedStatement(
            sql: """
                UPDATE chain_stub_chainstubbalance SET balance_units = balance_units + ?
                WHERE address = ? AND balance_units + ? >= 0
                """
        ).run(deltaUnits, address, deltaUnits)
        guard db.changesCount == 1 else { throw ChainStubError.rejected(address: address, op: op) }
    }

    /// The redemption address has a row only while it holds tokens, as a chain keeps no balance of zero: the seed's
    /// inspection of the balances shows the customers' alone once every redemption has ended.
    static func adjustRedemptionBalance(_ db: Database, deltaUnits: Int64, op: ChainOperation) throws {
        let address = ChainOperation.redemptionAddress
        if deltaUnits > 0 {
            try db.cachedStatement(
                sql: """
                    INSERT INTO chain_stub_chainstubbalance (address, balance_units) VALUES (?, ?)
                    ON CONFLICT (address) DO UPDATE SET balance_units = balance_units + excluded.balance_units
                    """
            ).execute(arguments: [address, deltaUnits])
            return
        }
        try db.cachedStatement(
            sql: "UPDATE chain_stub_chainstubbalance SET balance_units = balance_units + ? WHERE address = ? AND balance_units + ? >= 0"
        ).execute(arguments: [deltaUnits, address, deltaUnits])
        guard db.changesCount == 1 else { throw ChainStubError.rejected(address: address, op: op) }
        try db.cachedStatement(sql: "DELETE FROM chain_stub_chainstubbalance WHERE address = ? AND balance_units = 0")
            .execute(arguments: [address])
    }

    /// Writes an operation's receipt and returns its transaction hash, leaving the balance to `adjustBalance`.
    public static func recordReceipt(
        _ db: Database, op: ChainOperation, address: String, amountUnits: Int64, reference: String,
        createdAt: String, nowMicros: Int64
    ) throws -> String {
        precondition(amountUnits > 0, "chain operations move a positive amount")
        let txHash = Identifiers.chainTxHash(unixMillis: nowMicros / 1000)
        try db.cachedStatement(
            sql: """
                INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                """
        ).run(txHash, op.rawValue, address, amountUnits, reference, createdAt)
        return txHash
    }

    public static func hasAddress(_ db: Database, _ address: String) throws -> Bool {
        try db.cachedStatement(sql: "SELECT 1 FROM chain_stub_chainstubbalance WHERE address = ?").first(address, decode: { _ in true })
            != nil
    }

    /// Every address's balance, the redemption address's included.
    public static func totalSupplyUnits(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT COALESCE(SUM(balance_units), 0) FROM chain_stub_chainstubbalance")) ?? 0
    }

    /// Migration v3-redemption-holds: receipts may record holds and releases.
    /// SQLite cannot widen a CHECK in place, so the receipts table is rebuilt (foreign keys are off while a
    /// migration runs and checked at its end); its index that the gateway's jobs refer to is made again.
    public static func addHolds(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE chain_stub_chainstubreceipt_v3 (
                  tx_hash TEXT PRIMARY KEY,
                  op TEXT NOT NULL CHECK (op IN ('mint', 'burn', 'hold', 'release')),
                  address TEXT NOT NULL,
                  amount_units INTEGER NOT NULL CHECK (amount_units > 0),
                  reference TEXT NOT NULL UNIQUE,
                  created_at TEXT NOT NULL
                );
                INSERT INTO chain_stub_chainstubreceipt_v3 (tx_hash, op, address, amount_units, reference, created_at)
                  SELECT tx_hash, op, address, amount_units, reference, created_at FROM chain_stub_chainstubreceipt;
                DROP TABLE chain_stub_chainstubreceipt;
                ALTER TABLE chain_stub_chainstubreceipt_v3 RENAME TO chain_stub_chainstubreceipt;
                CREATE UNIQUE INDEX chain_stub_chainstubreceipt_reference_tx_hash ON chain_stub_chainstubreceipt (reference, tx_hash);
                """)
    }

    public static func balanceUnits(_ db: Database, address: String) throws -> Int64 {
        try Int64.fetchOne(
            db.cachedStatement(sql: "SELECT balance_units FROM chain_stub_chainstubbalance WHERE address = ?"), arguments: [address]) ?? 0
    }
}

public enum ChainStubError: Error, Equatable {
    case rejected(address: String, op: ChainOperation)
}
