import ChainStub
import Foundation
import GRDB
import PKRApplication
import PKRCore
import WalletStub

// Migrations are never edited once merged: change the schema by appending a step, with the same name on both
// engines. The names, in order, are `SchemaSteps.names`; PostgresSchema holds the other engine's steps.

/// The SQLite schema's migrations, run by GRDB's migrator, each step once and in a transaction of its own.
enum SQLiteSchema {
    static let steps: [(name: String, migrate: @Sendable (Database) throws -> Void)] = [
        (
            "v1-stub-tables",
            { db in
                try WalletStubSchema.createTables(db)
                try ChainStub.createTables(db)
            }
        ),
        (
            "v1-gateway-tables",
            { db in
                try db.execute(sql: gatewayTables)
            }
        ),
        // Every reference between the gateway's rows is a foreign key here (v1-gateway-tables), which SQLite checks
        // row by row at little cost on its single writer, so no rule needs a trigger.
        ("v1-guards", { _ in }),
        // SQLite runs the fast paths in Swift on its single writer: a mint batch or a burn is one transaction of
        // in-process statements, with no round trips to save.
        ("v1-fast-paths", { _ in }),
        (
            "v2-payouts",
            { db in
                try WalletStubSchema.createPayoutTable(db)
                // A redemption's payout reversals are found by their reference.
                try db.execute(
                    sql: """
                        CREATE INDEX core_externaltransaction_reference ON core_externaltransaction (reference)
                          WHERE reference IS NOT NULL
                        """)
            }
        ),
        (
            "v3-redemption-holds",
            { db in
                try WalletStubSchema.addPayoutLifecycle(db)
                try ChainStub.addHolds(db)
                try db.execute(sql: redemptionHolds)
            }
        ),
        (
            "v4-running-totals",
            { db in
                try db.execute(sql: SchemaSteps.v4Shared)
                try db.execute(sql: runningTotals)
                try db.execute(sql: SchemaSteps.v4Backfill(sumCast: ""))
            }
        ),
        // SQLite cannot drop a NOT NULL in place: the table is rebuilt. Rows logged before this step keep their
        // bodies until they are pruned.
        ("v5-inbound-bodies", { db in try db.execute(sql: inboundBodies) }),
        // Each entry's hash is kept as its 32 bytes, and its link to the entry before it is read from that entry
        // (ids are dense under the head row) instead of being stored twice. A hash that is not hex (only a row
        // changed by hand) stops the step, and the database stays as it was.
        (
            "v6-compact-ledger",
            { db in
                let unhex = DatabaseFunction("pkr_unhex", argumentCount: 1, pure: true) { values in
                    guard let text = String.fromDatabaseValue(values[0]), let bytes = Crypto.unhex(text) else {
                        throw DatabaseError(message: "a ledger entry's hash is not hex: run `pkr ledger verify`")
                    }
                    return Data(bytes)
                }
                db.add(function: unhex)
                defer { db.remove(function: unhex) }
                try db.execute(sql: compactLedger)
            }
        ),
        // Each of a mint's ids and times is stored once. A job's row id becomes a column of its own, which VACUUM
        // keeps, and the ledger names its job by that row instead of repeating the job's text id in both entries
        // and their index. A mint names its provider transaction by that transaction's row id alone, unique among
        // jobs, so the copy of the provider's id and the index that tied it to the transaction go. Text times become
        // columns derived from microseconds. The ledger gains an index of its customer entries, so a customer's page
        // reads that page, not the customer's history. A row the step cannot convert (only one changed by hand: a
        // time not in `Timestamp.format`'s form, an entry whose job is missing) stops it, and the database stays as
        // it was.
        (
            "v7-compact-rows",
            { db in
                let differing =
                    try Int64.fetchOne(
                        db,
                        sql: """
                            SELECT COUNT(*) FROM core_externaltransaction
                            WHERE occurred_at IS NOT \(rfc3339(micros: "occurred_at_micros"))
                               OR recorded_at IS NOT \(rfc3339(micros: "recorded_at_micros"))
                            """) ?? 0
                guard differing == 0 else {
                    throw DatabaseError(message: "\(differing) provider transactions' times are not their microseconds")
                }
                let micros = DatabaseFunction("pkr_micros", argumentCount: 1, pure: true) { values in
                    guard let text = String.fromDatabaseValue(values[0]), let micros = Timestamp.parse(text),
                        Timestamp.format(micros: micros) == text
                    else { throw DatabaseError(message: "a job's or ledger entry's time is not in the stored form") }
                    return micros
                }
                db.add(function: micros)
                defer { db.remove(function: micros) }
                let entries = try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM core_ledgerentry") ?? 0
                try db.execute(sql: "DROP INDEX core_externaltransaction_row_provider_tx")
                try rebuilding(["core_chainjob", "core_ledgerentry", "core_externaltransaction"], db) {
                    try db.execute(sql: compactRows)
                }
                let kept = try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM core_ledgerentry") ?? 0
                guard kept == entries else {
                    throw DatabaseError(message: "\(entries - kept) ledger entries name no job: run `pkr ledger verify`")
                }
            }
        ),
        // SQLite states its references as foreign keys and keeps its totals with row triggers that name their
        // columns already.
        ("v8-row-update-triggers", { _ in }),
        // SQLite's group commit already writes a batch of redeems or debits as the flow's own statements; no function
        // to replace.
        ("v9-redeem-fast-paths", { _ in }),
    ]

    /// Microseconds since the epoch in `Timestamp.format`'s text form ("2026-11-26T12:00:00.123456Z"), for years
    /// 0000 to 9999; the fraction is taken modulo a second so that times before 1970 round down, as there.
    static func rfc3339(micros column: String) -> String {
        let fraction = "((\(column) % 1000000) + 1000000) % 1000000"
        return "(strftime('%Y-%m-%dT%H:%M:%S', (\(column) - \(fraction)) / 1000000, 'unixepoch') || printf('.%06dZ', \(fraction)))"
    }

    /// A time column stored as microseconds, with its text form derived on read under the name it has always had.
    static func derivedTime(_ name: String) -> String {
        """
        \(name) TEXT GENERATED ALWAYS AS \(rfc3339(micros: name + "_micros")) VIRTUAL,
          \(name)_micros INTEGER NOT NULL CHECK (\(name)_micros >= \(Timestamp.earliestMicros) AND \(name)_micros < \(Timestamp.endMicros))
        """
    }

    static let compactRows = """
        CREATE TABLE core_externaltransaction_v7 (
          id INTEGER PRIMARY KEY,
          provider_tx_id TEXT NOT NULL UNIQUE,
          account TEXT NOT NULL,
          user_id TEXT REFERENCES core_user(id),
          direction TEXT NOT NULL CHECK (direction IN ('credit', 'debit')),
          amount_paisa INTEGER NOT NULL CHECK (amount_paisa > 0),
          amount_pkr TEXT GENERATED ALWAYS AS (printf('%d.%02d', amount_paisa / 100, amount_paisa % 100)) VIRTUAL,
          status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
          memo TEXT NOT NULL DEFAULT '',
          reference TEXT,
          \(derivedTime("occurred_at")),
          \(derivedTime("recorded_at")),
          first_seen_via TEXT NOT NULL CHECK (first_seen_via IN ('webhook', 'poll')),
          seen_via_webhook INTEGER NOT NULL DEFAULT 0 CHECK (seen_via_webhook IN (0, 1)),
          seen_via_poll INTEGER NOT NULL DEFAULT 0 CHECK (seen_via_poll IN (0, 1)),
          matched_job_id TEXT REFERENCES core_chainjob(id),
          flag TEXT CHECK (flag IN ('unmatched_debit', 'above_mint_limit', 'failed_payout')),
          CHECK (direction = 'debit' OR matched_job_id IS NULL)
        );
        INSERT INTO core_externaltransaction_v7
          (id, provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at_micros,
           recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll, matched_job_id, flag)
          SELECT id, provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at_micros,
                 recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll, matched_job_id, flag
          FROM core_externaltransaction ORDER BY id;
        CREATE TABLE core_chainjob_v7 (
          row_id INTEGER PRIMARY KEY,
          id TEXT NOT NULL UNIQUE,
          job_type TEXT NOT NULL CHECK (job_type IN ('mint', 'burn')),
          user_id TEXT NOT NULL REFERENCES core_user(id),
          amount_units INTEGER NOT NULL CHECK (amount_units > 0),
          status TEXT NOT NULL CHECK (status IN ('confirmed')),
          tx_hash TEXT NOT NULL,
          external_tx_row_id INTEGER REFERENCES core_externaltransaction(id),
          idempotency_key TEXT,
          memo TEXT NOT NULL DEFAULT '',
          payout_state TEXT CHECK (payout_state IN ('requested', 'submitted', 'confirmed')),
          payout_provider_tx_id TEXT,
          \(derivedTime("created_at")),
          CHECK ((job_type = 'mint') = (external_tx_row_id IS NOT NULL)),
          CHECK ((job_type = 'burn') = (payout_state IS NOT NULL)),
          CHECK (job_type = 'burn' OR idempotency_key IS NULL),
          CHECK (job_type = 'burn' OR payout_provider_tx_id IS NULL),
          CHECK (job_type = 'mint' OR amount_units % 10000 = 0),
          FOREIGN KEY (id, tx_hash) REFERENCES chain_stub_chainstubreceipt (reference, tx_hash)
        );
        INSERT INTO core_chainjob_v7
          (row_id, id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, idempotency_key, memo,
           payout_state, payout_provider_tx_id, created_at_micros)
          SELECT rowid, id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, idempotency_key, memo,
                 payout_state, payout_provider_tx_id, pkr_micros(created_at)
          FROM core_chainjob ORDER BY rowid;
        CREATE TABLE core_ledgerentry_v7 (
          id INTEGER PRIMARY KEY,
          user_id TEXT REFERENCES core_user(id),
          side TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
          account TEXT NOT NULL CHECK (account IN ('issuer_token', 'user_token')),
          amount_units INTEGER NOT NULL CHECK (amount_units > 0),
          ref_type TEXT NOT NULL CHECK (ref_type IN ('mint', 'burn')),
          job_row INTEGER NOT NULL REFERENCES core_chainjob(row_id),
          \(derivedTime("created_at")),
          entry_hash BLOB NOT NULL CHECK (typeof(entry_hash) = 'blob' AND length(entry_hash) = 32),
          UNIQUE (job_row, account)
        );
        INSERT INTO core_ledgerentry_v7 (id, user_id, side, account, amount_units, ref_type, job_row, created_at_micros, entry_hash)
          SELECT e.id, e.user_id, e.side, e.account, e.amount_units, e.ref_type, j.row_id, pkr_micros(e.created_at), e.entry_hash
          FROM core_ledgerentry e JOIN core_chainjob_v7 j ON j.id = e.ref_id ORDER BY e.id;
        DROP TABLE core_ledgerentry;
        DROP TABLE core_chainjob;
        DROP TABLE core_externaltransaction;
        ALTER TABLE core_externaltransaction_v7 RENAME TO core_externaltransaction;
        ALTER TABLE core_chainjob_v7 RENAME TO core_chainjob;
        ALTER TABLE core_ledgerentry_v7 RENAME TO core_ledgerentry;
        CREATE INDEX core_ledgerentry_customer ON core_ledgerentry (user_id) WHERE user_id IS NOT NULL;
        """

    /// Runs `rebuild`, which replaces `tables` by new tables of the same names, then makes the indexes and triggers
    /// the old tables had again, as they were: a rebuild states only what it changes.
    static func rebuilding(_ tables: [String], _ db: Database, _ rebuild: () throws -> Void) throws {
        let dependents = try String.fetchAll(
            db,
            sql: """
                SELECT sql FROM sqlite_schema
                WHERE type IN ('index', 'trigger') AND sql IS NOT NULL AND tbl_name IN (\(databaseQuestionMarks(count: tables.count)))
                ORDER BY type, name
                """, arguments: StatementArguments(tables))
        try rebuild()
        for statement in dependents { try db.execute(sql: statement) }
    }

    static let compactLedger = """
        CREATE TABLE core_ledgerentry_v6 (
          id INTEGER PRIMARY KEY,
          user_id TEXT REFERENCES core_user(id),
          side TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
          account TEXT NOT NULL CHECK (account IN ('issuer_token', 'user_token')),
          amount_units INTEGER NOT NULL CHECK (amount_units > 0),
          ref_type TEXT NOT NULL CHECK (ref_type IN ('mint', 'burn')),
          ref_id TEXT NOT NULL REFERENCES core_chainjob(id),
          created_at TEXT NOT NULL,
          entry_hash BLOB NOT NULL CHECK (typeof(entry_hash) = 'blob' AND length(entry_hash) = 32),
          UNIQUE (ref_id, account)
        );
        INSERT INTO core_ledgerentry_v6 (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, entry_hash)
          SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, pkr_unhex(entry_hash)
          FROM core_ledgerentry ORDER BY id;
        DROP TABLE core_ledgerentry;
        ALTER TABLE core_ledgerentry_v6 RENAME TO core_ledgerentry;
        """

    static let inboundBodies = """
        CREATE TABLE core_webhookinbound_v5 (
          id INTEGER PRIMARY KEY,
          received_at TEXT NOT NULL,
          message_id TEXT,
          webhook_timestamp TEXT,
          source_address TEXT,
          scheme TEXT,
          verification TEXT NOT NULL,
          outcome TEXT NOT NULL,
          error TEXT,
          provider_tx_id TEXT,
          job_id TEXT,
          body_bytes INTEGER NOT NULL CHECK (body_bytes >= 0),
          body BLOB CHECK (body IS NULL OR length(body) = body_bytes)
        );
        INSERT INTO core_webhookinbound_v5
          (id, received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
           provider_tx_id, job_id, body_bytes, body)
          SELECT id, received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                 provider_tx_id, job_id, body_bytes, body
          FROM core_webhookinbound;
        DROP TABLE core_webhookinbound;
        ALTER TABLE core_webhookinbound_v5 RENAME TO core_webhookinbound;
        """

    /// One row per total, updated in place by the writer's own statements: SQLite has one writer at a time, so no
    /// writer waits on another's row. A total past Int64 would turn into a float in SQLite's arithmetic; the type
    /// check refuses that write instead.
    static let runningTotals = """
        CREATE TABLE core_runningtotal (
          name TEXT PRIMARY KEY
            CHECK (name IN ('minted_units', 'redeemed_units', 'released_units', 'mint_jobs', 'mintable_credits')),
          value INTEGER NOT NULL CHECK (typeof(value) = 'integer' AND value >= 0)
        ) WITHOUT ROWID;
        CREATE TRIGGER core_chainjob_totaled AFTER INSERT ON core_chainjob BEGIN
          UPDATE core_runningtotal SET value = value + NEW.amount_units
            WHERE name = CASE NEW.job_type WHEN 'mint' THEN 'minted_units' ELSE 'redeemed_units' END;
          UPDATE core_runningtotal SET value = value + 1 WHERE name = 'mint_jobs' AND NEW.job_type = 'mint';
        END;
        CREATE TRIGGER core_redemptionhold_released_totaled AFTER UPDATE OF state ON core_redemptionhold
          WHEN NEW.state = 'released' AND OLD.state <> 'released' BEGIN
          UPDATE core_runningtotal SET value = value + NEW.amount_units WHERE name = 'released_units';
        END;
        CREATE TRIGGER core_externaltransaction_totaled AFTER INSERT ON core_externaltransaction
          WHEN NEW.direction = 'credit' AND NEW.status = 'settled' AND NEW.flag IS NULL AND NEW.user_id IS NOT NULL BEGIN
          UPDATE core_runningtotal SET value = value + 1 WHERE name = 'mintable_credits';
        END;
        CREATE TRIGGER core_externaltransaction_retotaled AFTER UPDATE OF direction, status, flag, user_id ON core_externaltransaction
          WHEN (NEW.direction = 'credit' AND NEW.status = 'settled' AND NEW.flag IS NULL AND NEW.user_id IS NOT NULL)
            <> (OLD.direction = 'credit' AND OLD.status = 'settled' AND OLD.flag IS NULL AND OLD.user_id IS NOT NULL) BEGIN
          UPDATE core_runningtotal SET value = value
              + CASE WHEN NEW.direction = 'credit' AND NEW.status = 'settled' AND NEW.flag IS NULL AND NEW.user_id IS NOT NULL
                THEN 1 ELSE -1 END
            WHERE name = 'mintable_credits';
        END;
        """

    /// A redemption's hold, one per redemption accepted since v3 (earlier ones were burnt when accepted and have
    /// none). It ends once, burnt or released, by the chain transaction named in `closing_tx_hash`; an ended hold
    /// never changes, and none is deleted.
    static let redemptionHolds = """
        CREATE TABLE core_redemptionhold (
          job_id TEXT PRIMARY KEY REFERENCES core_chainjob(id),
          user_id TEXT NOT NULL REFERENCES core_user(id),
          amount_units INTEGER NOT NULL CHECK (amount_units > 0 AND amount_units % 10000 = 0),
          state TEXT NOT NULL CHECK (state IN ('held', 'burnt', 'released')),
          closing_tx_hash TEXT UNIQUE,
          created_at TEXT NOT NULL,
          closed_at TEXT,
          CHECK ((state = 'held') = (closing_tx_hash IS NULL)),
          CHECK ((state = 'held') = (closed_at IS NULL))
        );
        CREATE INDEX core_redemptionhold_held ON core_redemptionhold (job_id) WHERE state = 'held';
        CREATE TRIGGER core_redemptionhold_ended_kept BEFORE UPDATE ON core_redemptionhold WHEN OLD.state <> 'held'
          BEGIN SELECT RAISE(ABORT, 'a redemption hold that ended never changes'); END;
        CREATE TRIGGER core_redemptionhold_kept BEFORE DELETE ON core_redemptionhold
          BEGIN SELECT RAISE(ABORT, 'redemption holds are never deleted'); END;
        """

    static func migrator() -> DatabaseMigrator {
        precondition(steps.map(\.name) == SchemaSteps.names, "SQLite's migration steps are not SchemaSteps.names")
        var migrator = DatabaseMigrator()
        for step in steps {
            migrator.registerMigration(step.name, migrate: step.migrate)
        }
        return migrator
    }

    /// Runs the steps the database has not run yet. A database that ran steps of another history is refused
    /// before anything is written (GRDB would skip the steps it does not know and fail on the first table).
    static func migrate(_ writer: some DatabaseWriter) throws {
        let migrator = migrator()
        let unknown = try writer.read { db in SchemaSteps.unknown(try migrator.appliedIdentifiers(db)) }
        guard unknown.isEmpty else { throw UnknownSchemaStepsError(steps: unknown) }
        try migrator.migrate(writer)
    }

    /// The gateway's tables. Besides the rules each states, their keys are chosen so that a mint or a redeem
    /// dirties as few pages as it can:
    /// - The uniqueness rules over columns only burns fill (`payout_provider_tx_id`, `matched_job_id`) are partial
    ///   indexes over the rows they concern, so a mint writes no NULL keys, and the `created_at` index holds burns
    ///   only. The ledger has no index on `entry_hash`, whose keys are random: ids are dense under the single head
    ///   row and each entry links to the one before it, so a second entry with the same hash cannot be appended,
    ///   and `ledger verify` finds one put there by hand.
    /// - A mint's random keys (the provider's transaction id, the chain's transaction hash) are not unique keys
    ///   of `core_chainjob`: the same rules hold through keys that grow with time. One mint per provider
    ///   transaction: a unique row id of `core_externaltransaction` (v1 to v6 also tied a copy of its provider id
    ///   to it by a foreign key; v7-compact-rows keeps the row id alone). One
    ///   job per chain transaction: a foreign key to the receipt that names the job (through the receipts'
    ///   `(reference, tx_hash)` index, made here), whose hash the chain keeps unique, so two jobs cannot share a hash.
    /// - A redeem's idempotency key, chosen by the client and so random, is the key of one index only: the stored
    ///   answer's primary key. It holds the rule (one answer and so one burn per user, endpoint and key) alone: a
    ///   burn with a key is written in the same transaction as its record, which a second burn with that key
    ///   cannot write. The record table has no row id, so that index holds the row itself.
    static let gatewayTables = """
        CREATE TABLE core_user (
          id TEXT PRIMARY KEY,
          email TEXT NOT NULL UNIQUE,
          display_name TEXT NOT NULL,
          wallet_account TEXT NOT NULL UNIQUE,
          chain_address TEXT NOT NULL UNIQUE,
          created_at TEXT NOT NULL
        );
        CREATE TABLE core_tokenbalance (
          user_id TEXT PRIMARY KEY REFERENCES core_user(id),
          balance_units INTEGER NOT NULL DEFAULT 0 CHECK (balance_units >= 0)
        );
        CREATE TABLE core_externaltransaction (
          id INTEGER PRIMARY KEY,
          provider_tx_id TEXT NOT NULL UNIQUE,
          account TEXT NOT NULL,
          user_id TEXT REFERENCES core_user(id),
          direction TEXT NOT NULL CHECK (direction IN ('credit', 'debit')),
          amount_paisa INTEGER NOT NULL CHECK (amount_paisa > 0),
          amount_pkr TEXT GENERATED ALWAYS AS (printf('%d.%02d', amount_paisa / 100, amount_paisa % 100)) VIRTUAL,
          status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
          memo TEXT NOT NULL DEFAULT '',
          reference TEXT,
          occurred_at TEXT NOT NULL,
          occurred_at_micros INTEGER NOT NULL,
          recorded_at TEXT NOT NULL,
          recorded_at_micros INTEGER NOT NULL,
          first_seen_via TEXT NOT NULL CHECK (first_seen_via IN ('webhook', 'poll')),
          seen_via_webhook INTEGER NOT NULL DEFAULT 0 CHECK (seen_via_webhook IN (0, 1)),
          seen_via_poll INTEGER NOT NULL DEFAULT 0 CHECK (seen_via_poll IN (0, 1)),
          matched_job_id TEXT REFERENCES core_chainjob(id),
          flag TEXT CHECK (flag IN ('unmatched_debit', 'above_mint_limit', 'failed_payout')),
          CHECK (direction = 'debit' OR matched_job_id IS NULL)
        );
        CREATE UNIQUE INDEX core_externaltransaction_matched_job ON core_externaltransaction (matched_job_id)
          WHERE matched_job_id IS NOT NULL;
        CREATE UNIQUE INDEX core_externaltransaction_row_provider_tx ON core_externaltransaction (id, provider_tx_id);
        CREATE UNIQUE INDEX chain_stub_chainstubreceipt_reference_tx_hash ON chain_stub_chainstubreceipt (reference, tx_hash);
        CREATE TABLE core_chainjob (
          id TEXT PRIMARY KEY,
          job_type TEXT NOT NULL CHECK (job_type IN ('mint', 'burn')),
          user_id TEXT NOT NULL REFERENCES core_user(id),
          amount_units INTEGER NOT NULL CHECK (amount_units > 0),
          status TEXT NOT NULL CHECK (status IN ('confirmed')),
          tx_hash TEXT NOT NULL,
          external_tx_row_id INTEGER,
          external_tx_id TEXT,
          idempotency_key TEXT,
          memo TEXT NOT NULL DEFAULT '',
          payout_state TEXT CHECK (payout_state IN ('requested', 'submitted', 'confirmed')),
          payout_provider_tx_id TEXT,
          created_at TEXT NOT NULL,
          CHECK ((job_type = 'mint') = (external_tx_id IS NOT NULL)),
          CHECK ((external_tx_row_id IS NULL) = (external_tx_id IS NULL)),
          CHECK ((job_type = 'burn') = (payout_state IS NOT NULL)),
          CHECK (job_type = 'burn' OR idempotency_key IS NULL),
          CHECK (job_type = 'burn' OR payout_provider_tx_id IS NULL),
          CHECK (job_type = 'mint' OR amount_units % 10000 = 0),
          FOREIGN KEY (external_tx_row_id, external_tx_id) REFERENCES core_externaltransaction (id, provider_tx_id),
          FOREIGN KEY (id, tx_hash) REFERENCES chain_stub_chainstubreceipt (reference, tx_hash)
        );
        CREATE UNIQUE INDEX core_chainjob_external_tx_row ON core_chainjob (external_tx_row_id)
          WHERE external_tx_row_id IS NOT NULL;
        CREATE UNIQUE INDEX core_chainjob_payout_provider_tx ON core_chainjob (payout_provider_tx_id)
          WHERE payout_provider_tx_id IS NOT NULL;
        CREATE INDEX core_chainjob_created ON core_chainjob (created_at) WHERE job_type = 'burn';
        CREATE INDEX core_chainjob_payout ON core_chainjob (payout_state) WHERE job_type = 'burn';
        CREATE TABLE core_ledgerentry (
          id INTEGER PRIMARY KEY,
          user_id TEXT REFERENCES core_user(id),
          side TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
          account TEXT NOT NULL CHECK (account IN ('issuer_token', 'user_token')),
          amount_units INTEGER NOT NULL CHECK (amount_units > 0),
          ref_type TEXT NOT NULL CHECK (ref_type IN ('mint', 'burn')),
          ref_id TEXT NOT NULL REFERENCES core_chainjob(id),
          created_at TEXT NOT NULL,
          prev_hash TEXT NOT NULL CHECK (length(prev_hash) = 64),
          entry_hash TEXT NOT NULL CHECK (length(entry_hash) = 64),
          UNIQUE (ref_id, account)
        );
        CREATE TABLE core_ledgerhead (
          singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
          last_id INTEGER NOT NULL CHECK (last_id >= 0),
          last_hash TEXT NOT NULL
        );
        INSERT INTO core_ledgerhead (singleton, last_id, last_hash)
          VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
        CREATE TABLE core_idempotencyrecord (
          user_id TEXT NOT NULL REFERENCES core_user(id),
          endpoint TEXT NOT NULL,
          idempotency_key TEXT NOT NULL,
          request_fingerprint TEXT NOT NULL,
          response_status INTEGER NOT NULL,
          response_body TEXT NOT NULL,
          created_at TEXT NOT NULL,
          PRIMARY KEY (user_id, endpoint, idempotency_key)
        ) WITHOUT ROWID;
        CREATE TABLE core_webhookinbound (
          id INTEGER PRIMARY KEY,
          received_at TEXT NOT NULL,
          message_id TEXT,
          webhook_timestamp TEXT,
          source_address TEXT,
          scheme TEXT,
          verification TEXT NOT NULL,
          outcome TEXT NOT NULL,
          error TEXT,
          provider_tx_id TEXT,
          job_id TEXT,
          body_bytes INTEGER NOT NULL CHECK (body_bytes >= 0),
          body BLOB NOT NULL
        );
        CREATE TABLE core_webhookquarantine (
          id INTEGER PRIMARY KEY,
          inbound_id INTEGER UNIQUE REFERENCES core_webhookinbound(id),
          provider_tx_id TEXT NOT NULL,
          arrived_via TEXT NOT NULL CHECK (arrived_via IN ('webhook', 'poll')),
          differing_fields TEXT NOT NULL,
          body BLOB NOT NULL,
          created_at TEXT NOT NULL
        );
        CREATE TABLE core_cursor (
          name TEXT PRIMARY KEY,
          value INTEGER NOT NULL CHECK (value >= 0)
        );
        """
}
