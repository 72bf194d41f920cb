/// The schema's migration steps, in the order they run. Both engines register exactly these, under these names
/// and in this order (`SQLiteSchema.steps`, `PostgresSchema.migrations`, checked as they migrate and by
/// SchemaRuleTests), so a database of either engine that has run a step holds the same rules as the other's.
///
/// Migrations are never edited once merged: change the schema by appending a step, with the same name on both
/// engines. A step one engine has nothing to do for is still registered there, empty, with a comment saying why.
package enum SchemaSteps {
    package static let names = [
        "v1-stub-tables",  // the wallet stub's and the chain stub's tables
        "v1-gateway-tables",  // the gateway's tables, with their keys, checks and indexes
        "v1-guards",  // rules a table cannot state for itself: triggers
        "v1-fast-paths",  // server-side functions a hot path calls in one round trip
        "v2-payouts",  // the provider's payouts (one per idempotency key and per reference); references indexed
        "v3-redemption-holds",  // redeemed tokens held at the redemption address until the payout ends
        "v4-running-totals",  // totals kept by triggers, the ledger's verified checkpoint, indexes of what is in flight
        "v5-inbound-bodies",  // the inbound log keeps the body only of a delivery the books do not hold
        "v6-compact-ledger",  // SQLite: ledger hashes as 32 bytes, the link to the entry before read from that entry
        "v7-compact-rows",  // SQLite: each of a mint's ids and times stored once; the ledger indexed by customer
        "v8-row-update-triggers",  // PostgreSQL: update triggers that run only when a customer or a mintable credit changes
        "v9-redeem-fast-paths",  // PostgreSQL: batches of holds and of paid burns written set by set; a paid debit in one call
    ]

    /// v4's tables and indexes both engines state alike. The partial indexes hold only rows in flight or flagged, so
    /// a reconciliation reads them at a cost that does not grow with history.
    package static let v4Shared = """
        CREATE INDEX core_externaltransaction_flagged ON core_externaltransaction (flag) WHERE flag IS NOT NULL;
        CREATE INDEX core_externaltransaction_unbound ON core_externaltransaction (id) WHERE user_id IS NULL;
        CREATE INDEX core_externaltransaction_unmatched_debit ON core_externaltransaction (id)
          WHERE direction = 'debit' AND matched_job_id IS NULL;
        CREATE INDEX core_externaltransaction_reversal ON core_externaltransaction (reference, amount_paisa)
          WHERE direction = 'credit' AND reference IS NOT NULL;
        CREATE TABLE core_ledgercheckpoint (
          singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
          last_id BIGINT NOT NULL CHECK (last_id >= 0),
          last_hash TEXT NOT NULL CHECK (length(last_hash) = 64),
          entries BIGINT NOT NULL CHECK (entries >= 0),
          debit_units BIGINT NOT NULL,
          credit_units BIGINT NOT NULL,
          user_net_units BIGINT NOT NULL
        );
        INSERT INTO core_ledgercheckpoint VALUES (1, 0, '\(String(repeating: "0", count: 64))', 0, 0, 0, 0);
        """

    /// v4's running totals as they stand when the step runs; the triggers keep them from then on.
    package static func v4Backfill(sumCast: String) -> String {
        """
        INSERT INTO core_runningtotal (name, value) VALUES
          ('minted_units', (SELECT COALESCE(SUM(amount_units), 0)\(sumCast) FROM core_chainjob WHERE job_type = 'mint')),
          ('redeemed_units', (SELECT COALESCE(SUM(amount_units), 0)\(sumCast) FROM core_chainjob WHERE job_type = 'burn')),
          ('released_units', (SELECT COALESCE(SUM(amount_units), 0)\(sumCast) FROM core_redemptionhold WHERE state = 'released')),
          ('mint_jobs', (SELECT COUNT(*) FROM core_chainjob WHERE job_type = 'mint')),
          ('mintable_credits', (SELECT COUNT(*) FROM core_externaltransaction
                                WHERE direction = 'credit' AND status = 'settled' AND flag IS NULL AND user_id IS NOT NULL));
        """
    }

    /// Steps a database has applied that this history does not have: one migrated by a build from before the
    /// history started again at v1 (or by a newer build). Migrating it would fail halfway or leave it unlike the
    /// schema here, so migrations refuse it; such a database is recreated.
    package static func unknown(_ applied: some Sequence<String>) -> [String] {
        applied.filter { !names.contains($0) }.sorted()
    }
}

/// A database recorded migration steps this build does not know.
package struct UnknownSchemaStepsError: Error, CustomStringConvertible {
    package var steps: [String]

    package init(steps: [String]) {
        self.steps = steps
    }

    package var description: String {
        "the database has applied migration steps this build does not know (\(steps.joined(separator: ", "))): "
            + "it was migrated by another schema history; recreate it"
    }
}
