import GRDB
import PKRApplication

/// The wallet stub's tables, named as in the seed so its inspection queries keep working.
/// Money is integer paisa; `balance_pkr` and `amount_pkr` are exact generated text columns ("800.00").
public enum WalletStubSchema {
    public static func createTables(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE wallet_stub_walletstubaccount (
                  id INTEGER PRIMARY KEY,
                  account_no TEXT NOT NULL UNIQUE,
                  balance_paisa INTEGER NOT NULL DEFAULT 0 CHECK (balance_paisa >= 0),
                  balance_pkr TEXT GENERATED ALWAYS AS (printf('%d.%02d', balance_paisa / 100, balance_paisa % 100)) VIRTUAL,
                  created_at TEXT NOT NULL
                );
                CREATE TABLE wallet_stub_walletstubtx (
                  id INTEGER PRIMARY KEY,
                  provider_tx_id TEXT NOT NULL UNIQUE,
                  account_id INTEGER NOT NULL REFERENCES wallet_stub_walletstubaccount(id),
                  direction TEXT NOT NULL CHECK (direction IN ('credit', 'debit')),
                  amount_paisa INTEGER NOT NULL CHECK (amount_paisa > 0),
                  amount_pkr TEXT GENERATED ALWAYS AS (printf('%d.%02d', amount_paisa / 100, amount_paisa % 100)) VIRTUAL,
                  status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
                  memo TEXT NOT NULL DEFAULT '',
                  reference TEXT UNIQUE,
                  occurred_at TEXT NOT NULL
                );
                CREATE TABLE wallet_stub_webhookdelivery (
                  id INTEGER PRIMARY KEY,
                  message_id TEXT NOT NULL UNIQUE,
                  provider_tx_id TEXT NOT NULL REFERENCES wallet_stub_walletstubtx(provider_tx_id),
                  payload BLOB NOT NULL,
                  state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
                  attempts INTEGER NOT NULL CHECK (attempts >= 0),
                  round_attempts INTEGER NOT NULL CHECK (round_attempts >= 0),
                  next_attempt_micros INTEGER NOT NULL,
                  last_http_status INTEGER,
                  last_error TEXT,
                  created_at TEXT NOT NULL,
                  delivered_at TEXT
                );
                CREATE INDEX wallet_stub_webhookdelivery_due ON wallet_stub_webhookdelivery (state, next_attempt_micros);
                CREATE TABLE wallet_stub_webhookattempt (
                  id INTEGER PRIMARY KEY,
                  delivery_id INTEGER NOT NULL REFERENCES wallet_stub_webhookdelivery(id),
                  attempt_no INTEGER NOT NULL CHECK (attempt_no > 0),
                  attempted_at TEXT NOT NULL,
                  http_status INTEGER,
                  error TEXT,
                  duration_micros INTEGER NOT NULL CHECK (duration_micros >= 0),
                  UNIQUE (delivery_id, attempt_no)
                );
                """)
    }
}

extension WalletStubSchema {
    /// Payouts with their lifecycle, one per idempotency key and one per reference (migration v2-payouts).
    /// A payout that has moved money names its debit on the listing.
    public static func createPayoutTable(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE wallet_stub_payout (
                  id TEXT PRIMARY KEY,
                  idempotency_key TEXT NOT NULL UNIQUE,
                  request_fingerprint TEXT NOT NULL,
                  account_no TEXT NOT NULL REFERENCES wallet_stub_walletstubaccount(account_no),
                  amount_paisa INTEGER NOT NULL CHECK (amount_paisa > 0),
                  memo TEXT NOT NULL,
                  reference TEXT NOT NULL UNIQUE,
                  status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'paid', 'returned', 'failed', 'canceled')),
                  failure_code TEXT CHECK (failure_code IN ('account_closed', 'invalid_account', 'limit_exceeded', 'rail_rejected')),
                  provider_tx_id TEXT UNIQUE REFERENCES wallet_stub_walletstubtx(provider_tx_id),
                  reversal_provider_tx_id TEXT UNIQUE REFERENCES wallet_stub_walletstubtx(provider_tx_id),
                  created_at TEXT NOT NULL,
                  updated_at TEXT NOT NULL,
                  CHECK ((status = 'failed') = (failure_code IS NOT NULL)),
                  CHECK (status NOT IN ('paid', 'returned') OR provider_tx_id IS NOT NULL),
                  CHECK ((reversal_provider_tx_id IS NOT NULL) = (status = 'returned' OR (status = 'failed' AND provider_tx_id IS NOT NULL)))
                );
                """)
    }
}

extension WalletStubSchema {
    /// Migration v3-redemption-holds, the provider's side: payouts may wait `pending` or `processing` with their
    /// debit pending, and fail or be cancelled before it settles (no reversal then), so the reversal rule is
    /// widened (SQLite rebuilds the table). The listing becomes append-only entries: a transaction's first status
    /// and every change of it is an entry of its own, written by triggers; existing transactions keep their ids as
    /// their entries' ids, so a stored cursor stays valid.
    public static func addPayoutLifecycle(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE wallet_stub_payout_v3 (
                  id TEXT PRIMARY KEY,
                  idempotency_key TEXT NOT NULL UNIQUE,
                  request_fingerprint TEXT NOT NULL,
                  account_no TEXT NOT NULL REFERENCES wallet_stub_walletstubaccount(account_no),
                  amount_paisa INTEGER NOT NULL CHECK (amount_paisa > 0),
                  memo TEXT NOT NULL,
                  reference TEXT NOT NULL UNIQUE,
                  status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'paid', 'returned', 'failed', 'canceled')),
                  failure_code TEXT CHECK (failure_code IN ('account_closed', 'invalid_account', 'limit_exceeded', 'rail_rejected')),
                  provider_tx_id TEXT UNIQUE REFERENCES wallet_stub_walletstubtx(provider_tx_id),
                  reversal_provider_tx_id TEXT UNIQUE REFERENCES wallet_stub_walletstubtx(provider_tx_id),
                  created_at TEXT NOT NULL,
                  updated_at TEXT NOT NULL,
                  CHECK ((status = 'failed') = (failure_code IS NOT NULL)),
                  CHECK (status NOT IN ('paid', 'returned') OR provider_tx_id IS NOT NULL),
                  CHECK (status <> 'returned' OR reversal_provider_tx_id IS NOT NULL),
                  CHECK (reversal_provider_tx_id IS NULL OR (status IN ('returned', 'failed') AND provider_tx_id IS NOT NULL))
                );
                INSERT INTO wallet_stub_payout_v3 SELECT
                  id, idempotency_key, request_fingerprint, account_no, amount_paisa, memo, reference, status, failure_code,
                  provider_tx_id, reversal_provider_tx_id, created_at, updated_at
                FROM wallet_stub_payout;
                DROP TABLE wallet_stub_payout;
                ALTER TABLE wallet_stub_payout_v3 RENAME TO wallet_stub_payout;
                \(listingEntries)
                INSERT INTO wallet_stub_txentry (id, tx_id, status) SELECT id, id, status FROM wallet_stub_walletstubtx ORDER BY id;
                CREATE TRIGGER wallet_stub_walletstubtx_listed AFTER INSERT ON wallet_stub_walletstubtx
                  BEGIN INSERT INTO wallet_stub_txentry (tx_id, status) VALUES (NEW.id, NEW.status); END;
                CREATE TRIGGER wallet_stub_walletstubtx_status_listed AFTER UPDATE OF status ON wallet_stub_walletstubtx
                  WHEN NEW.status <> OLD.status
                  BEGIN INSERT INTO wallet_stub_txentry (tx_id, status) VALUES (NEW.id, NEW.status); END;
                """)
    }

    /// The listing's entries, one per transaction and status it has had, in the order they were written.
    static let listingEntries = """
        CREATE TABLE wallet_stub_txentry (
          id INTEGER PRIMARY KEY,
          tx_id INTEGER NOT NULL REFERENCES wallet_stub_walletstubtx(id),
          status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
          UNIQUE (tx_id, status)
        );
        """
}
