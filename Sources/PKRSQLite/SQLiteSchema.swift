import ChainStub
import GRDB
import PKRApplication
import WalletStub

/// Versioned migrations. Applied migrations are never edited; changes go in a new one.
enum SQLiteSchema {
    static func migrator() -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-stubs") { db in
            try WalletStubSchema.createTables(db)
            try ChainStub.createTables(db)
        }
        migrator.registerMigration("v1-gateway") { db in
            try db.execute(
                sql: """
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
                    CREATE TABLE core_chainjob (
                      id TEXT PRIMARY KEY,
                      job_type TEXT NOT NULL CHECK (job_type IN ('mint', 'burn')),
                      user_id TEXT NOT NULL REFERENCES core_user(id),
                      amount_units INTEGER NOT NULL CHECK (amount_units > 0),
                      status TEXT NOT NULL CHECK (status IN ('confirmed')),
                      tx_hash TEXT NOT NULL UNIQUE,
                      external_tx_id TEXT UNIQUE,
                      idempotency_key TEXT,
                      memo TEXT NOT NULL DEFAULT '',
                      payout_state TEXT CHECK (payout_state IN ('requested', 'submitted', 'confirmed')),
                      payout_provider_tx_id TEXT UNIQUE,
                      created_at TEXT NOT NULL,
                      CHECK ((job_type = 'mint') = (external_tx_id IS NOT NULL)),
                      CHECK ((job_type = 'burn') = (payout_state IS NOT NULL)),
                      CHECK (job_type = 'burn' OR idempotency_key IS NULL),
                      CHECK (job_type = 'mint' OR amount_units % 10000 = 0),
                      UNIQUE (user_id, idempotency_key)
                    );
                    CREATE INDEX core_chainjob_created ON core_chainjob (created_at);
                    CREATE INDEX core_chainjob_payout ON core_chainjob (payout_state) WHERE job_type = 'burn';
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
                      matched_job_id TEXT UNIQUE REFERENCES core_chainjob(id),
                      flag TEXT CHECK (flag IN ('unmatched_debit', 'above_mint_limit', 'failed_payout')),
                      CHECK (direction = 'debit' OR matched_job_id IS NULL)
                    );
                    CREATE TABLE core_ledgerentry (
                      id INTEGER PRIMARY KEY,
                      user_id TEXT REFERENCES core_user(id),
                      side TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
                      account TEXT NOT NULL CHECK (account IN ('issuer_token', 'user_token')),
                      amount_units INTEGER NOT NULL CHECK (amount_units > 0),
                      ref_type TEXT NOT NULL CHECK (ref_type IN ('mint', 'burn')),
                      ref_id TEXT NOT NULL REFERENCES core_chainjob(id),
                      created_at TEXT NOT NULL,
                      prev_hash TEXT NOT NULL,
                      entry_hash TEXT NOT NULL UNIQUE,
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
                    );
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
                    """)
        }
        migrator.registerMigration("v2-fewer-index-entries") { db in
            try db.execute(sql: fewerIndexEntries)
        }
        migrator.registerMigration("v3-ordered-job-keys") { db in
            try db.execute(sql: orderedJobKeys)
        }
        migrator.registerMigration("v4-one-idempotency-key-index") { db in
            try db.execute(sql: oneIdempotencyKeyIndex)
        }
        return migrator
    }

    /// Every mint used to write index entries that no query and no rule needs: NULL keys of the burn-only unique
    /// columns (`payout_provider_tx_id`, `idempotency_key`, `matched_job_id`), mints in the burn-only `created_at`
    /// index, and a random-keyed unique index on `entry_hash`. The uniqueness rules stay, as partial indexes over the
    /// rows they concern. The ledger keeps its chain rules: ids are dense under the single head row and each entry
    /// links to the one before it, so a second entry with the same hash cannot be appended, and `ledger verify`
    /// finds one put there by hand. SQLite cannot drop a table constraint, so the three tables are rebuilt.
    static let fewerIndexEntries = """
        CREATE TABLE core_chainjob_v2 (
          id TEXT PRIMARY KEY,
          job_type TEXT NOT NULL CHECK (job_type IN ('mint', 'burn')),
          user_id TEXT NOT NULL REFERENCES core_user(id),
          amount_units INTEGER NOT NULL CHECK (amount_units > 0),
          status TEXT NOT NULL CHECK (status IN ('confirmed')),
          tx_hash TEXT NOT NULL UNIQUE,
          external_tx_id TEXT UNIQUE,
          idempotency_key TEXT,
          memo TEXT NOT NULL DEFAULT '',
          payout_state TEXT CHECK (payout_state IN ('requested', 'submitted', 'confirmed')),
          payout_provider_tx_id TEXT,
          created_at TEXT NOT NULL,
          CHECK ((job_type = 'mint') = (external_tx_id IS NOT NULL)),
          CHECK ((job_type = 'burn') = (payout_state IS NOT NULL)),
          CHECK (job_type = 'burn' OR idempotency_key IS NULL),
          CHECK (job_type = 'burn' OR payout_provider_tx_id IS NULL),
          CHECK (job_type = 'mint' OR amount_units % 10000 = 0)
        );
        INSERT INTO core_chainjob_v2
          (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, idempotency_key, memo, payout_state,
           payout_provider_tx_id, created_at)
        SELECT id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, idempotency_key, memo, payout_state,
               payout_provider_tx_id, created_at
        FROM core_chainjob;
        DROP TABLE core_chainjob;
        ALTER TABLE core_chainjob_v2 RENAME TO core_chainjob;
        CREATE UNIQUE INDEX core_chainjob_payout_provider_tx ON core_chainjob (payout_provider_tx_id)
          WHERE payout_provider_tx_id IS NOT NULL;
        CREATE UNIQUE INDEX core_chainjob_idempotency ON core_chainjob (user_id, idempotency_key)
          WHERE idempotency_key IS NOT NULL;
        CREATE INDEX core_chainjob_created ON core_chainjob (created_at) WHERE job_type = 'burn';
        CREATE INDEX core_chainjob_payout ON core_chainjob (payout_state) WHERE job_type = 'burn';

        CREATE TABLE core_externaltransaction_v2 (
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
        INSERT INTO core_externaltransaction_v2
          (id, provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
           occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll,
           matched_job_id, flag)
        SELECT id, provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
               occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll,
               matched_job_id, flag
        FROM core_externaltransaction;
        DROP TABLE core_externaltransaction;
        ALTER TABLE core_externaltransaction_v2 RENAME TO core_externaltransaction;
        CREATE UNIQUE INDEX core_externaltransaction_matched_job ON core_externaltransaction (matched_job_id)
          WHERE matched_job_id IS NOT NULL;

        CREATE TABLE core_ledgerentry_v2 (
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
        INSERT INTO core_ledgerentry_v2
          (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
        SELECT id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash
        FROM core_ledgerentry;
        DROP TABLE core_ledgerentry;
        ALTER TABLE core_ledgerentry_v2 RENAME TO core_ledgerentry;
        """

    /// A mint wrote two index entries over random keys into `core_chainjob`: the provider's transaction id and the
    /// chain's transaction hash, both unique. Each dirtied its own page at every commit, as did the same two keys in
    /// `core_externaltransaction` and the chain stub's receipts. The same rules now hold through keys that grow with
    /// time. One mint per provider transaction: a unique row id of `core_externaltransaction`, tied to its provider
    /// id by a foreign key. One job per chain transaction: a foreign key to the receipt that names the job, whose
    /// hash the chain keeps unique, so two jobs cannot share a hash. The table is rebuilt as in v2.
    static let orderedJobKeys = """
        CREATE UNIQUE INDEX core_externaltransaction_row_provider_tx ON core_externaltransaction (id, provider_tx_id);
        CREATE UNIQUE INDEX chain_stub_chainstubreceipt_reference_tx_hash ON chain_stub_chainstubreceipt (reference, tx_hash);

        CREATE TABLE core_chainjob_v3 (
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
        INSERT INTO core_chainjob_v3
          (id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, external_tx_id, idempotency_key, memo,
           payout_state, payout_provider_tx_id, created_at)
        SELECT j.id, j.job_type, j.user_id, j.amount_units, j.status, j.tx_hash,
               (SELECT e.id FROM core_externaltransaction e WHERE e.provider_tx_id = j.external_tx_id), j.external_tx_id,
               j.idempotency_key, j.memo, j.payout_state, j.payout_provider_tx_id, j.created_at
        FROM core_chainjob j;
        DROP TABLE core_chainjob;
        ALTER TABLE core_chainjob_v3 RENAME TO core_chainjob;
        CREATE UNIQUE INDEX core_chainjob_external_tx_row ON core_chainjob (external_tx_row_id)
          WHERE external_tx_row_id IS NOT NULL;
        CREATE UNIQUE INDEX core_chainjob_payout_provider_tx ON core_chainjob (payout_provider_tx_id)
          WHERE payout_provider_tx_id IS NOT NULL;
        CREATE UNIQUE INDEX core_chainjob_idempotency ON core_chainjob (user_id, idempotency_key)
          WHERE idempotency_key IS NOT NULL;
        CREATE INDEX core_chainjob_created ON core_chainjob (created_at) WHERE job_type = 'burn';
        CREATE INDEX core_chainjob_payout ON core_chainjob (payout_state) WHERE job_type = 'burn';
        """

    /// A redeem's idempotency key, chosen by the client and so random, was the key of two unique indexes: the
    /// burn's in `core_chainjob` and the stored answer's primary key in `core_idempotencyrecord`. Each dirtied a
    /// page of its own at every commit (17 of a redeem commit's 100 pages each). The rule, one answer and so one
    /// burn per user, endpoint and key, is held by the record's primary key alone: a burn with a key is written in
    /// the same transaction as its record, which a second burn with that key cannot write. The record table is
    /// rebuilt without a row id, so the key's index holds the row itself instead of pointing into a second tree.
    static let oneIdempotencyKeyIndex = """
        DROP INDEX core_chainjob_idempotency;
        CREATE TABLE core_idempotencyrecord_v4 (
          user_id TEXT NOT NULL REFERENCES core_user(id),
          endpoint TEXT NOT NULL,
          idempotency_key TEXT NOT NULL,
          request_fingerprint TEXT NOT NULL,
          response_status INTEGER NOT NULL,
          response_body TEXT NOT NULL,
          created_at TEXT NOT NULL,
          PRIMARY KEY (user_id, endpoint, idempotency_key)
        ) WITHOUT ROWID;
        INSERT INTO core_idempotencyrecord_v4
          (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
        SELECT user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at
        FROM core_idempotencyrecord;
        DROP TABLE core_idempotencyrecord;
        ALTER TABLE core_idempotencyrecord_v4 RENAME TO core_idempotencyrecord;
        """
}
