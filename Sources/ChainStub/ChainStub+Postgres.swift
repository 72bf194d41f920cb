import Logging
import PKRCore
import PostgresNIO

/// The chain stub on PostgreSQL, inside the caller's transaction.
public enum PostgresChainStub {
    public static func openAddress(_ connection: PostgresConnection, _ address: String, logger: Logger) async throws {
        try await connection.query(
            """
            INSERT INTO chain_stub_chainstubbalance (address, balance_units) VALUES (\(address), 0) ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    /// Records a mint's or burn's receipt and returns its transaction hash. `moveBalance` must follow in the same
    /// transaction; the receipt comes first because it takes no contended lock.
    public static func recordReceipt(
        _ connection: PostgresConnection, op: ChainJobType, address: String, amountUnits: Int64,
        reference: String, createdAt: String, nowMicros: Int64, logger: Logger
    ) async throws -> String {
        precondition(amountUnits > 0, "chain operations move a positive amount")
        let txHash = Identifiers.chainTxHash(unixMillis: nowMicros / 1000)
        try await connection.query(
            """
            INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
            VALUES (\(txHash), \(op.rawValue), \(address), \(amountUnits), \(reference), \(createdAt))
            """, logger: logger)
        return txHash
    }

    /// Applies a mint or burn to the address's balance. A burn beyond the balance throws.
    public static func moveBalance(
        _ connection: PostgresConnection, op: ChainJobType, address: String, amountUnits: Int64,
        logger: Logger
    ) async throws {
        precondition(amountUnits > 0, "chain operations move a positive amount")
        let delta = op == .mint ? amountUnits : -amountUnits
        let updated = try await connection.query(
            """
            UPDATE chain_stub_chainstubbalance SET balance_units = balance_units + \(delta)
            WHERE address = \(address) AND balance_units + \(delta) >= 0 RETURNING 1
            """, logger: logger
        ).collect()
        guard updated.count == 1 else { throw ChainStubError.rejected(address: address, op: op) }
    }
}
