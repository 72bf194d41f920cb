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

    /// Records an operation's receipt and returns its transaction hash. `moveBalance` must follow in the same
    /// transaction; the receipt comes first because it takes no contended lock.
    public static func recordReceipt(
        _ connection: PostgresConnection, op: ChainOperation, address: String, amountUnits: Int64,
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

    /// Applies an operation to the balances it moves, in `ChainOperation.moves` order. Taking more than an address
    /// holds throws.
    public static func moveBalance(
        _ connection: PostgresConnection, op: ChainOperation, address: String, amountUnits: Int64,
        logger: Logger
    ) async throws {
        for move in op.moves(address: address, amountUnits: amountUnits) {
            if move.address == ChainOperation.redemptionAddress {
                try await moveRedemptionBalance(connection, deltaUnits: move.deltaUnits, op: op, logger: logger)
                continue
            }
            let updated = try await connection.query(
                """
                UPDATE chain_stub_chainstubbalance SET balance_units = balance_units + \(move.deltaUnits)
                WHERE address = \(move.address) AND balance_units + \(move.deltaUnits) >= 0 RETURNING 1
                """, logger: logger
            ).collect()
            guard updated.count == 1 else { throw ChainStubError.rejected(address: move.address, op: op) }
        }
    }

    /// The redemption address has a row only while it holds tokens (see `ChainStub.adjustRedemptionBalance`).
    static func moveRedemptionBalance(_ connection: PostgresConnection, deltaUnits: Int64, op: ChainOperation, logger: Logger) async throws
    {
        let address = ChainOperation.redemptionAddress
        if deltaUnits > 0 {
            try await connection.query(
                """
                INSERT INTO chain_stub_chainstubbalance (address, balance_units) VALUES (\(address), \(deltaUnits))
                ON CONFLICT (address) DO UPDATE SET balance_units = chain_stub_chainstubbalance.balance_units + EXCLUDED.balance_units
                """, logger: logger)
            return
        }
        let updated = try await connection.query(
            """
            UPDATE chain_stub_chainstubbalance SET balance_units = balance_units + \(deltaUnits)
            WHERE address = \(address) AND balance_units + \(deltaUnits) >= 0 RETURNING balance_units
            """, logger: logger
        ).collect()
        guard let row = updated.first else { throw ChainStubError.rejected(address: address, op: op) }
        if try row.decode(Int64.self) == 0 {
            try await connection.query(
                "DELETE FROM chain_stub_chainstubbalance WHERE address = \(address) AND balance_units = 0", logger: logger)
        }
    }
}
