import Foundation
import Logging
import PKRApplication
import PostgresNIO

// Migrations are never edited once merged: change the schema by appending a step, with the same name on both
// engines. The names, in order, are `SchemaSteps.names`; SQLiteSchema holds the other engine's steps.

/// Versioned migrations for PostgreSQL, the same tables and rules as the SQLite schema. Money is BIGINT minor
/// units; `balance_pkr` and `amount_pkr` are exact NUMERIC(20,2) generated columns. Each step runs once, in a
/// transaction, under an advisory lock so instances starting together agree.
enum PostgresSchema {
    static let advisoryLockKey: Int64 = 0x706b_725f_6d69_67  // "pkr_mig"

    static let migrations: [(String, String)] = [
        // The wallet stub's and the chain stub's tables (on SQLite, WalletStubSchema and ChainStub create them). The
        // receipt keys a mint writes compare as bytes, as the gateway's do (see v1-gateway-tables).
        (
            "v1-stub-tables",
            """
            CREATE TABLE wallet_stub_walletstubaccount (
              id BIGSERIAL PRIMARY KEY,
              account_no TEXT NOT NULL UNIQUE,
              balance_paisa BIGINT NOT NULL DEFAULT 0 CHECK (balance_paisa >= 0),
              balance_pkr NUMERIC(20, 2) GENERATED ALWAYS AS ((balance_paisa::numeric / 100)::numeric(20, 2)) STORED,
              created_at TEXT NOT NULL
            );
            CREATE TABLE wallet_stub_walletstubtx (
              id BIGSERIAL PRIMARY KEY,
              provider_tx_id TEXT NOT NULL UNIQUE,
              account_id BIGINT NOT NULL REFERENCES wallet_stub_walletstubaccount(id),
              direction TEXT NOT NULL CHECK (direction IN ('credit', 'debit')),
              amount_paisa BIGINT NOT NULL CHECK (amount_paisa > 0),
              amount_pkr NUMERIC(20, 2) GENERATED ALWAYS AS ((amount_paisa::numeric / 100)::numeric(20, 2)) STORED,
              status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
              memo TEXT NOT NULL DEFAULT '',
              reference TEXT UNIQUE,
              occurred_at TEXT NOT NULL
            );
            CREATE TABLE wallet_stub_webhookdelivery (
              id BIGSERIAL PRIMARY KEY,
              message_id TEXT NOT NULL UNIQUE,
              provider_tx_id TEXT NOT NULL REFERENCES wallet_stub_walletstubtx(provider_tx_id),
              payload BYTEA NOT NULL,
              state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
              attempts INTEGER NOT NULL CHECK (attempts >= 0),
              round_attempts INTEGER NOT NULL CHECK (round_attempts >= 0),
              next_attempt_micros BIGINT NOT NULL,
              last_http_status INTEGER,
              last_error TEXT,
              created_at TEXT NOT NULL,
              delivered_at TEXT
            );
            CREATE INDEX wallet_stub_webhookdelivery_due ON wallet_stub_webhookdelivery (state, next_attempt_micros);
            CREATE TABLE wallet_stub_webhookattempt (
              id BIGSERIAL PRIMARY KEY,
              delivery_id BIGINT NOT NULL REFERENCES wallet_stub_webhookdelivery(id),
              attempt_no INTEGER NOT NULL CHECK (attempt_no > 0),
              attempted_at TEXT NOT NULL,
              http_status INTEGER,
              error TEXT,
              duration_micros BIGINT NOT NULL CHECK (duration_micros >= 0),
              UNIQUE (delivery_id, attempt_no)
            );
            CREATE TABLE chain_stub_chainstubbalance (
              address TEXT PRIMARY KEY,
              balance_units BIGINT NOT NULL DEFAULT 0 CHECK (balance_units >= 0)
            );
            CREATE TABLE chain_stub_chainstubreceipt (
              tx_hash TEXT COLLATE "C" PRIMARY KEY,
              op TEXT NOT NULL CHECK (op IN ('mint', 'burn')),
              address TEXT NOT NULL,
              amount_units BIGINT NOT NULL CHECK (amount_units > 0),
              reference TEXT COLLATE "C" NOT NULL UNIQUE,
              created_at TEXT NOT NULL
            );
            """
        ),
        // The gateway's tables, with SQLite's rules (see SQLiteSchema.gatewayTables). Their keys:
        // - The burn-only uniqueness rules are partial indexes, so a mint writes no NULL keys, and no index covers the
        //   random `entry_hash` (the chain's own rules keep entries unique; see SQLiteSchema).
        // - The random keys every mint indexes (provider ids, job ids, transaction hashes) compare as bytes: in a
        //   database created with a libc locale (C.UTF-8 included) each B-tree comparison would go through strcoll.
        //   ASCII ids sort the same either way.
        // - SQLite's keys that grow with time in place of `core_chainjob`'s random unique keys, and its single index
        //   over a redeem's idempotency key, are SQLite's alone: here `tx_hash` and `external_tx_id` are unique keys
        //   of `core_chainjob`, and a burn's idempotency key has a partial unique index of its own.
        // - The four references every mint writes (a credit's user, a job's user, a ledger entry's user and job) are
        //   not foreign keys: v1-guards checks them.
        (
            "v1-gateway-tables",
            """
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
              balance_units BIGINT NOT NULL DEFAULT 0 CHECK (balance_units >= 0)
            );
            CREATE TABLE core_chainjob (
              id TEXT COLLATE "C" PRIMARY KEY,
              job_type TEXT NOT NULL CHECK (job_type IN ('mint', 'burn')),
              user_id TEXT NOT NULL,
              amount_units BIGINT NOT NULL CHECK (amount_units > 0),
              status TEXT NOT NULL CHECK (status IN ('confirmed')),
              tx_hash TEXT COLLATE "C" NOT NULL UNIQUE,
              external_tx_id TEXT COLLATE "C" UNIQUE,
              idempotency_key TEXT,
              memo TEXT NOT NULL DEFAULT '',
              payout_state TEXT CHECK (payout_state IN ('requested', 'submitted', 'confirmed')),
              payout_provider_tx_id TEXT,
              created_at TEXT NOT NULL,
              CHECK ((job_type = 'mint') = (external_tx_id IS NOT NULL)),
              CHECK ((job_type = 'burn') = (payout_state IS NOT NULL)),
              CHECK (job_type = 'burn' OR idempotency_key IS NULL),
              CHECK (job_type = 'mint' OR amount_units % 10000 = 0),
              CHECK (job_type = 'burn' OR payout_provider_tx_id IS NULL)
            );
            CREATE UNIQUE INDEX core_chainjob_payout_provider_tx ON core_chainjob (payout_provider_tx_id)
              WHERE payout_provider_tx_id IS NOT NULL;
            CREATE UNIQUE INDEX core_chainjob_idempotency ON core_chainjob (user_id, idempotency_key)
              WHERE idempotency_key IS NOT NULL;
            CREATE INDEX core_chainjob_created ON core_chainjob (created_at) WHERE job_type = 'burn';
            CREATE INDEX core_chainjob_payout ON core_chainjob (payout_state) WHERE job_type = 'burn';
            CREATE TABLE core_externaltransaction (
              id BIGSERIAL PRIMARY KEY,
              provider_tx_id TEXT COLLATE "C" NOT NULL UNIQUE,
              account TEXT NOT NULL,
              user_id TEXT,
              direction TEXT NOT NULL CHECK (direction IN ('credit', 'debit')),
              amount_paisa BIGINT NOT NULL CHECK (amount_paisa > 0),
              amount_pkr NUMERIC(20, 2) GENERATED ALWAYS AS ((amount_paisa::numeric / 100)::numeric(20, 2)) STORED,
              status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
              memo TEXT NOT NULL DEFAULT '',
              reference TEXT,
              occurred_at TEXT NOT NULL,
              occurred_at_micros BIGINT NOT NULL,
              recorded_at TEXT NOT NULL,
              recorded_at_micros BIGINT NOT NULL,
              first_seen_via TEXT NOT NULL CHECK (first_seen_via IN ('webhook', 'poll')),
              seen_via_webhook BOOLEAN NOT NULL DEFAULT FALSE,
              seen_via_poll BOOLEAN NOT NULL DEFAULT FALSE,
              matched_job_id TEXT COLLATE "C" REFERENCES core_chainjob(id),
              flag TEXT CHECK (flag IN ('unmatched_debit', 'above_mint_limit', 'failed_payout')),
              CHECK (direction = 'debit' OR matched_job_id IS NULL)
            );
            CREATE UNIQUE INDEX core_externaltransaction_matched_job ON core_externaltransaction (matched_job_id)
              WHERE matched_job_id IS NOT NULL;
            CREATE TABLE core_ledgerentry (
              id BIGINT PRIMARY KEY,
              user_id TEXT,
              side TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
              account TEXT COLLATE "C" NOT NULL CHECK (account IN ('issuer_token', 'user_token')),
              amount_units BIGINT NOT NULL CHECK (amount_units > 0),
              ref_type TEXT NOT NULL CHECK (ref_type IN ('mint', 'burn')),
              ref_id TEXT COLLATE "C" NOT NULL,
              created_at TEXT NOT NULL,
              prev_hash TEXT NOT NULL,
              entry_hash TEXT NOT NULL,
              UNIQUE (ref_id, account),
              CHECK (length(prev_hash) = 64 AND length(entry_hash) = 64)
            );
            CREATE TABLE core_ledgerhead (
              singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
              last_id BIGINT NOT NULL CHECK (last_id >= 0),
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
              id BIGSERIAL PRIMARY KEY,
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
              body BYTEA NOT NULL
            );
            CREATE TABLE core_webhookquarantine (
              id BIGSERIAL PRIMARY KEY,
              inbound_id BIGINT UNIQUE REFERENCES core_webhookinbound(id),
              provider_tx_id TEXT NOT NULL,
              arrived_via TEXT NOT NULL CHECK (arrived_via IN ('webhook', 'poll')),
              differing_fields TEXT NOT NULL,
              body BYTEA NOT NULL,
              created_at TEXT NOT NULL
            );
            CREATE TABLE core_cursor (
              name TEXT PRIMARY KEY,
              value BIGINT NOT NULL CHECK (value >= 0)
            );
            """
        ),
        // The four references every mint writes (a credit's user, a job's user, a ledger entry's user and job) are
        // checked once per statement, against all of its new rows: as foreign keys, checked row by row, they cost
        // five probes per credit, each through an executor start-up of its own, a third of the backend's work in a
        // 100k backlog. The rows they refer to stay: users and jobs are never deleted, nor their ids changed (the
        // remaining foreign keys to both tables already forbid TRUNCATE). Violations raise a foreign key's SQLSTATEs.
        (
            "v1-guards",
            """
            CREATE FUNCTION pkr_keep_referenced_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION '% rows are referred to: never deleted, nor their ids changed', TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
            END
            $$;
            CREATE TRIGGER core_user_kept BEFORE DELETE ON core_user
              FOR EACH ROW EXECUTE FUNCTION pkr_keep_referenced_row();
            CREATE TRIGGER core_user_id_kept BEFORE UPDATE OF id ON core_user
              FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION pkr_keep_referenced_row();
            CREATE TRIGGER core_chainjob_kept BEFORE DELETE ON core_chainjob
              FOR EACH ROW EXECUTE FUNCTION pkr_keep_referenced_row();
            CREATE TRIGGER core_chainjob_id_kept BEFORE UPDATE OF id ON core_chainjob
              FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION pkr_keep_referenced_row();
            CREATE FUNCTION pkr_check_user_references() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              -- Scalar subqueries, one index probe per new row: as an anti-join the planner, knowing nothing of the
              -- transition table, hashes the whole referenced table every statement.
              IF EXISTS (SELECT 1 FROM new_rows n
                         WHERE n.user_id IS NOT NULL AND (SELECT u.id FROM core_user u WHERE u.id = n.user_id) IS NULL) THEN
                RAISE EXCEPTION 'a % row refers to a user that does not exist', TG_TABLE_NAME
                  USING ERRCODE = 'foreign_key_violation';
              END IF;
              RETURN NULL;
            END
            $$;
            CREATE FUNCTION pkr_check_ledger_references() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM new_rows n
                         WHERE (SELECT j.id FROM core_chainjob j WHERE j.id = n.ref_id) IS NULL
                            OR (n.user_id IS NOT NULL AND (SELECT u.id FROM core_user u WHERE u.id = n.user_id) IS NULL)) THEN
                RAISE EXCEPTION 'a ledger entry refers to a job or user that does not exist'
                  USING ERRCODE = 'foreign_key_violation';
              END IF;
              RETURN NULL;
            END
            $$;
            CREATE TRIGGER core_externaltransaction_user_inserted AFTER INSERT ON core_externaltransaction
              REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pkr_check_user_references();
            CREATE TRIGGER core_externaltransaction_user_updated AFTER UPDATE ON core_externaltransaction
              REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pkr_check_user_references();
            CREATE TRIGGER core_chainjob_user_inserted AFTER INSERT ON core_chainjob
              REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pkr_check_user_references();
            CREATE TRIGGER core_chainjob_user_updated AFTER UPDATE ON core_chainjob
              REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pkr_check_user_references();
            CREATE TRIGGER core_ledgerentry_references_inserted AFTER INSERT ON core_ledgerentry
              REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pkr_check_ledger_references();
            CREATE TRIGGER core_ledgerentry_references_updated AFTER UPDATE ON core_ledgerentry
              REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pkr_check_ledger_references()
            """
        ),
        // The hot paths' writes, each in one call instead of a round trip per statement.
        // - `pkr_mint_batch`: a whole mint batch, one round trip instead of six (see PostgresMintBatch). It takes the
        //   batch's rows and its ledger entries, hashed by the caller after the head it last saw, and writes nothing
        //   (answers -1, or raises once it has written) unless every credit is new and that head is still the
        //   ledger's. The locks are taken in the one order every mint and burn uses: token balances in user order,
        //   chain-stub balances, ledger head. Two batches may be in flight at once (see `PostgresStore.applyPolled`):
        //   each takes an advisory lock on the head id it will leave as it starts, and a batch chained after it, once
        //   its own uncontended rows are written, waits for that one to end before it takes the balance and head
        //   locks. Advisory keys are head ids, far below the migrations' key.
        // - `pkr_burn`: a whole burn (see `PostgresStore.redeem`). Its contended rows (token balance, chain-stub
        //   balance, ledger head, in the order every writer takes them) are then held only while the server runs the
        //   call and commits, not across the client's round trips. The ledger entries are chained here, after the
        //   locked head, with `pkr_ledger_hash`: the same rendering as `LedgerEntry.computedHash`, which a contract
        //   test holds the two to. The postings come from the caller, so the posting rules stay in one place.
        //   Answers 1 (burned), 0 (the idempotency key is taken: the caller replays it), -1 (insufficient token
        //   balance, with the balance), -2 (the chain refused), -3 (no such user); it writes nothing unless it
        //   answers 1.
        (
            "v1-fast-paths",
            """
            CREATE FUNCTION pkr_mint_batch(
              p_provider_tx_id text[], p_account text[], p_user_id text[], p_direction text[], p_amount_paisa bigint[],
              p_status text[], p_memo text[], p_reference text[], p_occurred_at text[], p_occurred_at_micros bigint[],
              p_created_at text[], p_now_micros bigint[], p_path text[], p_job_id text[], p_tx_hash text[],
              p_address text[], p_amount_units bigint[],
              i_received_at text[], i_message_id text[], i_webhook_timestamp text[], i_source_address text[],
              i_scheme text[], i_verification text[], i_outcome text[], i_error text[], i_provider_tx_id text[],
              i_job_id text[], i_body_bytes bigint[], i_body bytea[],
              t_user_id text[], t_units bigint[], c_address text[], c_units bigint[],
              expected_head_id bigint, expected_head_hash text,
              l_id bigint[], l_user_id text[], l_side text[], l_account text[], l_amount_units bigint[],
              l_ref_type text[], l_ref_id text[], l_created_at text[], l_prev_hash text[], l_entry_hash text[],
              new_head_id bigint, new_head_hash text
            ) RETURNS bigint LANGUAGE plpgsql AS $$
            DECLARE
              recorded_count bigint;
              updated_count bigint;
              head_id bigint;
              head_hash text;
              waits integer := 0;
            BEGIN
              -- A head already past the expected one (another writer, a redeem) makes the caller's hashes useless:
              -- answer -1 before writing anything, an expected outcome, not an error for the server's log. A head
              -- short of it may be this process's previous batch still in flight, which the lock below waits for.
              SELECT last_id INTO head_id FROM core_ledgerhead WHERE singleton = 1;
              IF head_id IS NULL OR head_id > expected_head_id THEN
                RETURN -1;
              END IF;
              -- The baton: a batch chained after this one waits on it (below) until this one ends. Never waited for
              -- here: should the batch after this one have come first and taken it, this one goes on without it.
              PERFORM pg_try_advisory_xact_lock(new_head_id);
              WITH v AS (
                SELECT * FROM unnest(p_provider_tx_id, p_account, p_user_id, p_direction, p_amount_paisa, p_status, p_memo,
                                     p_reference, p_occurred_at, p_occurred_at_micros, p_created_at, p_now_micros, p_path,
                                     p_job_id, p_tx_hash, p_address, p_amount_units)
                  AS v(provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
                       occurred_at_micros, created_at, now_micros, path, job_id, tx_hash, address, amount_units)
              ), recorded AS (
                INSERT INTO core_externaltransaction
                  (provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
                   occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll)
                SELECT provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
                       occurred_at_micros, created_at, now_micros, path, path = 'webhook', path = 'poll'
                FROM v
                ON CONFLICT (provider_tx_id) DO NOTHING RETURNING provider_tx_id
              ), receipts AS (
                INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                SELECT tx_hash, 'mint', address, amount_units, job_id, created_at FROM v
              ), jobs AS (
                INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, memo, created_at)
                SELECT job_id, 'mint', user_id, amount_units, 'confirmed', tx_hash, provider_tx_id, memo, created_at FROM v
              ), inbound AS (
                INSERT INTO core_webhookinbound
                  (received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                   provider_tx_id, job_id, body_bytes, body)
                SELECT * FROM unnest(i_received_at, i_message_id, i_webhook_timestamp, i_source_address, i_scheme,
                                     i_verification, i_outcome, i_error, i_provider_tx_id, i_job_id, i_body_bytes, i_body)
              )
              SELECT count(*) INTO recorded_count FROM recorded;
              IF recorded_count <> cardinality(p_provider_tx_id) THEN
                RAISE EXCEPTION 'pkr_mint_batch: % of % credits were already recorded',
                  cardinality(p_provider_tx_id) - recorded_count, cardinality(p_provider_tx_id) USING ERRCODE = 'PKR02';
              END IF;
              -- Chained after a batch still in flight (sent on another connection): wait for that one to end before
              -- taking the contended locks, so the two take them in the order they were chained. Otherwise this
              -- one could take the balances first, find the head stale and throw away the rows it wrote. Waiting
              -- on its baton is the usual case; one that has not begun yet is polled for, about 200 ms at most,
              -- after which the head check below refuses this batch.
              SELECT last_id INTO head_id FROM core_ledgerhead WHERE singleton = 1;
              WHILE head_id < expected_head_id AND waits < 400 LOOP
                PERFORM pg_advisory_xact_lock_shared(expected_head_id);
                SELECT last_id INTO head_id FROM core_ledgerhead WHERE singleton = 1;
                EXIT WHEN head_id >= expected_head_id;
                PERFORM pg_sleep(0.0005);
                waits := waits + 1;
              END LOOP;
              PERFORM 1 FROM core_tokenbalance WHERE user_id = ANY (t_user_id) ORDER BY user_id FOR UPDATE;
              UPDATE core_tokenbalance t SET balance_units = t.balance_units + v.units
              FROM unnest(t_user_id, t_units) AS v(user_id, units) WHERE t.user_id = v.user_id;
              GET DIAGNOSTICS updated_count = ROW_COUNT;
              IF updated_count <> cardinality(t_user_id) THEN
                RAISE EXCEPTION 'pkr_mint_batch: a token balance row is missing' USING ERRCODE = 'PKR03';
              END IF;
              UPDATE chain_stub_chainstubbalance b SET balance_units = b.balance_units + v.units
              FROM unnest(c_address, c_units) AS v(address, units) WHERE b.address = v.address;
              GET DIAGNOSTICS updated_count = ROW_COUNT;
              IF updated_count <> cardinality(c_address) THEN
                RAISE EXCEPTION 'pkr_mint_batch: a chain-stub balance row is missing' USING ERRCODE = 'PKR03';
              END IF;
              SELECT last_id, last_hash INTO head_id, head_hash FROM core_ledgerhead WHERE singleton = 1 FOR UPDATE;
              IF head_id IS DISTINCT FROM expected_head_id OR head_hash IS DISTINCT FROM expected_head_hash THEN
                RAISE EXCEPTION 'pkr_mint_batch: stale ledger head' USING ERRCODE = 'PKR01';
              END IF;
              INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
              SELECT * FROM unnest(l_id, l_user_id, l_side, l_account, l_amount_units, l_ref_type, l_ref_id, l_created_at,
                                   l_prev_hash, l_entry_hash);
              UPDATE core_ledgerhead SET last_id = new_head_id, last_hash = new_head_hash WHERE singleton = 1;
              RETURN recorded_count;
            END
            $$;
            CREATE FUNCTION pkr_ledger_hash(
              p_id bigint, p_user_id text, p_side text, p_account text, p_amount_units bigint, p_ref_type text,
              p_ref_id text, p_created_at text, p_prev_hash text
            ) RETURNS text LANGUAGE sql IMMUTABLE AS $$
              SELECT encode(sha256(convert_to(
                'pkr-ledger-v2'
                || '|' || octet_length(p_id::text) || ':' || p_id::text
                || '|' || COALESCE(octet_length(p_user_id) || ':' || p_user_id, '~')
                || '|' || octet_length(p_side) || ':' || p_side
                || '|' || octet_length(p_account) || ':' || p_account
                || '|' || octet_length(p_amount_units::text) || ':' || p_amount_units::text
                || '|' || octet_length(p_ref_type) || ':' || p_ref_type
                || '|' || octet_length(p_ref_id) || ':' || p_ref_id
                || '|' || octet_length(p_created_at) || ':' || p_created_at
                || '|' || octet_length(p_prev_hash) || ':' || p_prev_hash, 'UTF8')), 'hex')
            $$;
            CREATE FUNCTION pkr_burn(
              p_user_id text, p_amount_units bigint, p_job_id text, p_tx_hash text, p_idempotency_key text,
              p_endpoint text, p_fingerprint text, p_response_body text, p_memo text, p_created_at text,
              l_user_id text[], l_side text[], l_account text[], l_amount_units bigint[],
              OUT outcome integer, OUT available_units bigint, OUT wallet_account text
            ) LANGUAGE plpgsql AS $$
            DECLARE
              chain_address text;
              head_id bigint;
              head_hash text;
              new_hash text;
            BEGIN
              SELECT u.chain_address, u.wallet_account INTO chain_address, wallet_account FROM core_user u WHERE u.id = p_user_id;
              IF NOT FOUND THEN
                outcome := -3;
                RETURN;
              END IF;
              BEGIN
                IF p_idempotency_key IS NOT NULL THEN
                  -- A concurrent request with the same key waits here until that one ends, then finds it taken.
                  INSERT INTO core_idempotencyrecord
                    (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
                  VALUES (p_user_id, p_endpoint, p_idempotency_key, p_fingerprint, 201, p_response_body, p_created_at)
                  ON CONFLICT DO NOTHING;
                  IF NOT FOUND THEN
                    outcome := 0;
                    RETURN;
                  END IF;
                END IF;
                INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                VALUES (p_tx_hash, 'burn', chain_address, p_amount_units, p_job_id, p_created_at);
                INSERT INTO core_chainjob
                  (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key, memo, payout_state, created_at)
                VALUES (p_job_id, 'burn', p_user_id, p_amount_units, 'confirmed', p_tx_hash, p_idempotency_key, p_memo,
                        'requested', p_created_at);
                UPDATE core_tokenbalance SET balance_units = balance_units - p_amount_units
                WHERE user_id = p_user_id AND balance_units >= p_amount_units;
                IF NOT FOUND THEN
                  RAISE EXCEPTION 'pkr_burn: insufficient balance' USING ERRCODE = 'PKR11';
                END IF;
                UPDATE chain_stub_chainstubbalance SET balance_units = balance_units - p_amount_units
                WHERE address = chain_address AND balance_units >= p_amount_units;
                IF NOT FOUND THEN
                  RAISE EXCEPTION 'pkr_burn: the chain refused' USING ERRCODE = 'PKR12';
                END IF;
                SELECT h.last_id, h.last_hash INTO head_id, head_hash FROM core_ledgerhead h WHERE h.singleton = 1 FOR UPDATE;
                IF NOT FOUND THEN
                  RAISE EXCEPTION 'pkr_burn: ledger head row missing' USING ERRCODE = 'PKR03';
                END IF;
                FOR i IN 1 .. cardinality(l_side) LOOP
                  new_hash := pkr_ledger_hash(head_id + 1, l_user_id[i], l_side[i], l_account[i], l_amount_units[i], 'burn',
                                                p_job_id, p_created_at, head_hash);
                  INSERT INTO core_ledgerentry
                    (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
                  VALUES (head_id + 1, l_user_id[i], l_side[i], l_account[i], l_amount_units[i], 'burn', p_job_id, p_created_at,
                          head_hash, new_hash);
                  head_id := head_id + 1;
                  head_hash := new_hash;
                END LOOP;
                UPDATE core_ledgerhead SET last_id = head_id, last_hash = head_hash WHERE singleton = 1;
                outcome := 1;
              EXCEPTION
                WHEN SQLSTATE 'PKR11' THEN
                  outcome := -1;
                  SELECT t.balance_units INTO available_units FROM core_tokenbalance t WHERE t.user_id = p_user_id;
                WHEN SQLSTATE 'PKR12' THEN
                  outcome := -2;
              END;
            END
            $$
            """
        ),
        // The provider's payouts (SQLite: WalletStubSchema.createPayoutTable), with the same keys and checks, and the
        // index a redemption's payout reversals are found by.
        (
            "v2-payouts",
            """
            CREATE TABLE wallet_stub_payout (
              id TEXT PRIMARY KEY,
              idempotency_key TEXT NOT NULL UNIQUE,
              request_fingerprint TEXT NOT NULL,
              account_no TEXT NOT NULL REFERENCES wallet_stub_walletstubaccount(account_no),
              amount_paisa BIGINT NOT NULL CHECK (amount_paisa > 0),
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
            CREATE INDEX core_externaltransaction_reference ON core_externaltransaction (reference) WHERE reference IS NOT NULL
            """
        ),
        // The provider's payout lifecycle and append-only listing entries (see WalletStubSchema.addPayoutLifecycle),
        // and redemption holds (see SQLiteSchema.redemptionHolds). `pkr_burn_held` is the paid answer's burn
        // (`Settlement.payoutAnswered` with a debited payout) in one call, holding the redemption address's row and
        // the ledger head for one statement; the postings come from the caller. `pkr_hold` replaces `pkr_burn`: a redeem now moves
        // the tokens to the redemption address and posts nothing to the ledger; the burn, and its postings, come
        // with the paid debit. It takes the contended rows in the one order: token balance, the customer's
        // chain-stub balance, the redemption address's. Answers as `pkr_burn` did.
        (
            "v3-redemption-holds",
            """
            DO $$
            DECLARE
              rule text;
            BEGIN
              SELECT conname INTO STRICT rule FROM pg_constraint
              WHERE conrelid = 'wallet_stub_payout'::regclass AND contype = 'c'
                AND pg_get_constraintdef(oid) LIKE '%reversal_provider_tx_id IS NOT NULL%';
              EXECUTE format('ALTER TABLE wallet_stub_payout DROP CONSTRAINT %I', rule);
            END
            $$;
            ALTER TABLE wallet_stub_payout ADD CONSTRAINT wallet_stub_payout_returned_reversal
              CHECK (status <> 'returned' OR reversal_provider_tx_id IS NOT NULL);
            ALTER TABLE wallet_stub_payout ADD CONSTRAINT wallet_stub_payout_reversal_status
              CHECK (reversal_provider_tx_id IS NULL OR (status IN ('returned', 'failed') AND provider_tx_id IS NOT NULL));
            CREATE TABLE wallet_stub_txentry (
              id BIGSERIAL PRIMARY KEY,
              tx_id BIGINT NOT NULL REFERENCES wallet_stub_walletstubtx(id),
              status TEXT NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
              UNIQUE (tx_id, status)
            );
            INSERT INTO wallet_stub_txentry (id, tx_id, status) SELECT id, id, status FROM wallet_stub_walletstubtx ORDER BY id;
            SELECT setval(pg_get_serial_sequence('wallet_stub_txentry', 'id'),
                          GREATEST((SELECT MAX(id) FROM wallet_stub_txentry), (SELECT last_value FROM wallet_stub_walletstubtx_id_seq)));
            CREATE FUNCTION pkr_stub_list_tx() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO wallet_stub_txentry (tx_id, status) VALUES (NEW.id, NEW.status);
              RETURN NULL;
            END
            $$;
            CREATE TRIGGER wallet_stub_walletstubtx_listed AFTER INSERT ON wallet_stub_walletstubtx
              FOR EACH ROW EXECUTE FUNCTION pkr_stub_list_tx();
            CREATE TRIGGER wallet_stub_walletstubtx_status_listed AFTER UPDATE OF status ON wallet_stub_walletstubtx
              FOR EACH ROW WHEN (NEW.status <> OLD.status) EXECUTE FUNCTION pkr_stub_list_tx();
            ALTER TABLE chain_stub_chainstubreceipt DROP CONSTRAINT chain_stub_chainstubreceipt_op_check;
            ALTER TABLE chain_stub_chainstubreceipt ADD CONSTRAINT chain_stub_chainstubreceipt_op_check
              CHECK (op IN ('mint', 'burn', 'hold', 'release'));
            CREATE TABLE core_redemptionhold (
              job_id TEXT COLLATE "C" PRIMARY KEY REFERENCES core_chainjob(id),
              user_id TEXT NOT NULL REFERENCES core_user(id),
              amount_units BIGINT NOT NULL CHECK (amount_units > 0 AND amount_units % 10000 = 0),
              state TEXT NOT NULL CHECK (state IN ('held', 'burnt', 'released')),
              closing_tx_hash TEXT COLLATE "C" UNIQUE,
              created_at TEXT NOT NULL,
              closed_at TEXT,
              CHECK ((state = 'held') = (closing_tx_hash IS NULL)),
              CHECK ((state = 'held') = (closed_at IS NULL))
            );
            CREATE INDEX core_redemptionhold_held ON core_redemptionhold (job_id) WHERE state = 'held';
            CREATE FUNCTION pkr_keep_ended_hold() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'a redemption hold that ended never changes' USING ERRCODE = 'check_violation';
            END
            $$;
            CREATE TRIGGER core_redemptionhold_ended_kept BEFORE UPDATE ON core_redemptionhold
              FOR EACH ROW WHEN (OLD.state <> 'held') EXECUTE FUNCTION pkr_keep_ended_hold();
            CREATE TRIGGER core_redemptionhold_kept BEFORE DELETE ON core_redemptionhold
              FOR EACH ROW EXECUTE FUNCTION pkr_keep_referenced_row();
            DROP FUNCTION pkr_burn;
            CREATE FUNCTION pkr_burn_held(
              p_job_id text, p_provider_tx_id text, p_tx_hash text, p_created_at text, p_redemption_address text,
              l_side text[], l_account text[],
              OUT outcome integer, OUT hold_state text
            ) LANGUAGE plpgsql AS $$
            DECLARE
              hold_user text;
              hold_units bigint;
              left_units bigint;
              head_id bigint;
              head_hash text;
              new_hash text;
              entry_user text;
            BEGIN
              UPDATE core_chainjob SET payout_state = 'submitted', payout_provider_tx_id = p_provider_tx_id
              WHERE id = p_job_id AND job_type = 'burn' AND payout_state = 'requested';
              SELECT h.user_id, h.amount_units, h.state INTO hold_user, hold_units, hold_state
              FROM core_redemptionhold h WHERE h.job_id = p_job_id FOR UPDATE;
              IF NOT FOUND THEN
                outcome := 0;
                RETURN;
              END IF;
              IF hold_state <> 'held' THEN
                outcome := 2;
                RETURN;
              END IF;
              INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
              VALUES (p_tx_hash, 'burn', p_redemption_address, hold_units, p_job_id || ':burn', p_created_at);
              UPDATE chain_stub_chainstubbalance SET balance_units = balance_units - hold_units
              WHERE address = p_redemption_address AND balance_units >= hold_units RETURNING balance_units INTO left_units;
              IF NOT FOUND THEN
                RAISE EXCEPTION 'pkr_burn_held: the chain refused' USING ERRCODE = 'PKR12';
              END IF;
              IF left_units = 0 THEN
                DELETE FROM chain_stub_chainstubbalance WHERE address = p_redemption_address AND balance_units = 0;
              END IF;
              UPDATE core_redemptionhold SET state = 'burnt', closing_tx_hash = p_tx_hash, closed_at = p_created_at
              WHERE job_id = p_job_id;
              SELECT h.last_id, h.last_hash INTO head_id, head_hash FROM core_ledgerhead h WHERE h.singleton = 1 FOR UPDATE;
              IF NOT FOUND THEN
                RAISE EXCEPTION 'pkr_burn_held: ledger head row missing' USING ERRCODE = 'PKR03';
              END IF;
              FOR i IN 1 .. cardinality(l_side) LOOP
                entry_user := CASE WHEN l_account[i] = 'user_token' THEN hold_user END;
                new_hash := pkr_ledger_hash(head_id + 1, entry_user, l_side[i], l_account[i], hold_units, 'burn', p_job_id,
                                            p_created_at, head_hash);
                INSERT INTO core_ledgerentry
                  (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
                VALUES (head_id + 1, entry_user, l_side[i], l_account[i], hold_units, 'burn', p_job_id, p_created_at, head_hash,
                        new_hash);
                head_id := head_id + 1;
                head_hash := new_hash;
              END LOOP;
              UPDATE core_ledgerhead SET last_id = head_id, last_hash = head_hash WHERE singleton = 1;
              hold_state := 'burnt';
              outcome := 1;
            END
            $$;
            CREATE FUNCTION pkr_hold(
              p_user_id text, p_amount_units bigint, p_job_id text, p_tx_hash text, p_idempotency_key text,
              p_endpoint text, p_fingerprint text, p_response_body text, p_memo text, p_created_at text,
              p_redemption_address text,
              OUT outcome integer, OUT available_units bigint, OUT wallet_account text
            ) LANGUAGE plpgsql AS $$
            DECLARE
              chain_address text;
            BEGIN
              SELECT u.chain_address, u.wallet_account INTO chain_address, wallet_account FROM core_user u WHERE u.id = p_user_id;
              IF NOT FOUND THEN
                outcome := -3;
                RETURN;
              END IF;
              BEGIN
                IF p_idempotency_key IS NOT NULL THEN
                  -- A concurrent request with the same key waits here until that one ends, then finds it taken.
                  INSERT INTO core_idempotencyrecord
                    (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
                  VALUES (p_user_id, p_endpoint, p_idempotency_key, p_fingerprint, 201, p_response_body, p_created_at)
                  ON CONFLICT DO NOTHING;
                  IF NOT FOUND THEN
                    outcome := 0;
                    RETURN;
                  END IF;
                END IF;
                INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                VALUES (p_tx_hash, 'hold', chain_address, p_amount_units, p_job_id, p_created_at);
                INSERT INTO core_chainjob
                  (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key, memo, payout_state, created_at)
                VALUES (p_job_id, 'burn', p_user_id, p_amount_units, 'confirmed', p_tx_hash, p_idempotency_key, p_memo,
                        'requested', p_created_at);
                INSERT INTO core_redemptionhold (job_id, user_id, amount_units, state, created_at)
                VALUES (p_job_id, p_user_id, p_amount_units, 'held', p_created_at);
                UPDATE core_tokenbalance SET balance_units = balance_units - p_amount_units
                WHERE user_id = p_user_id AND balance_units >= p_amount_units;
                IF NOT FOUND THEN
                  RAISE EXCEPTION 'pkr_hold: insufficient balance' USING ERRCODE = 'PKR11';
                END IF;
                UPDATE chain_stub_chainstubbalance SET balance_units = balance_units - p_amount_units
                WHERE address = chain_address AND balance_units >= p_amount_units;
                IF NOT FOUND THEN
                  RAISE EXCEPTION 'pkr_hold: the chain refused' USING ERRCODE = 'PKR12';
                END IF;
                INSERT INTO chain_stub_chainstubbalance AS b (address, balance_units) VALUES (p_redemption_address, p_amount_units)
                ON CONFLICT (address) DO UPDATE SET balance_units = b.balance_units + EXCLUDED.balance_units;
                outcome := 1;
              EXCEPTION
                WHEN SQLSTATE 'PKR11' THEN
                  outcome := -1;
                  SELECT t.balance_units INTO available_units FROM core_tokenbalance t WHERE t.user_id = p_user_id;
                WHEN SQLSTATE 'PKR12' THEN
                  outcome := -2;
              END;
            END
            $$
            """
        ),
        ("v4-running-totals", [SchemaSteps.v4Shared, runningTotals, SchemaSteps.v4Backfill(sumCast: "::BIGINT")].joined(separator: "\n")),
        // Rows logged before this step keep their bodies until they are pruned.
        (
            "v5-inbound-bodies",
            """
            ALTER TABLE core_webhookinbound ALTER COLUMN body DROP NOT NULL,
              ADD CONSTRAINT core_webhookinbound_body_whole CHECK (body IS NULL OR octet_length(body) = body_bytes);
            """
        ),
        // PostgreSQL keeps the ledger's hashes as text, each entry's link to the one before it included: its
        // functions (v1-fast-paths, v3-redemption-holds) append entries in that form, and compacting it means
        // replacing them.
        ("v6-compact-ledger", ""),
        // PostgreSQL's jobs keep their provider transaction id and its unique key, the ledger names jobs by id, and
        // text times are columns: its functions (v1-fast-paths, v3-redemption-holds) write rows in that form. The
        // ledger's index of customer entries, which a customer's page reads, is both engines'.
        (
            "v7-compact-rows",
            "CREATE INDEX core_ledgerentry_customer ON core_ledgerentry (user_id, id) WHERE user_id IS NOT NULL;"
        ),
        ("v8-row-update-triggers", rowUpdateTriggers),
        ("v9-redeem-fast-paths", redeemFastPaths),
    ]

    /// A batch of redeems, and a batch of paid answers, each in one function that decides every call in memory and
    /// then writes each table once. `pkr_hold` and `pkr_burn_held`, run once per call through a lateral join, started
    /// an executor for each of their eight statements and fired the insert triggers for every call: a third of the
    /// backends' time under redeems. The decisions are the ones those functions made call by call, in the same
    /// order, with the balances each call left for the next; `BatchedRedeemTests` pins them.
    ///
    /// `pkr_hold_batch` takes the calls by customer, then by arrival. Locks, in the order every writer takes them:
    /// idempotency keys (customer, key), token balances (customer), chain-stub balances, the redemption address's.
    /// Per call it answers 1 (held, with the wallet account), 0 (the key is taken, by another request or by a call of
    /// the batch that was held: the flow decides), -1 (insufficient token balance, with the balance that call saw),
    /// -2 (the chain refused), -3 (no such customer). A refused call's key is not kept: a later call of the batch
    /// with the same key takes it, as it would have one call at a time.
    ///
    /// `pkr_burn_held_batch` takes the calls in arrival order, after locking their jobs and holds in id order.
    /// Per call it answers 1 (burnt), 0 (no hold), 2 (the hold had ended, with its state). The burnt calls' entries
    /// are chained after the locked head with `pkr_ledger_hash`; the postings come from the caller.
    ///
    /// `pkr_pair_debit` is a new settled debit whose redemption is burnt already (the provider's answer came first,
    /// as it usually does): `Settlement.matchDebit`'s path that confirms the payout and burns nothing, with the
    /// webhook's inbound-log row, in one call instead of nine statements. It takes the transaction's key, the job,
    /// then the hold, as the flow does, and answers the job's id; it answers NULL, having written nothing, for every
    /// other case (no burn named, a hold still held or released, the id already recorded), which the flow decides.
    ///
    /// `pkr_hold` and `pkr_burn_held` stay until a later step: instances still running the code before this step
    /// share the database while they are replaced.
    static let redeemFastPaths = """
        CREATE FUNCTION pkr_hold_batch(
          p_user_id text[], p_amount_units bigint[], p_job_id text[], p_tx_hash text[], p_idempotency_key text[],
          p_endpoint text, p_fingerprint text[], p_response_body text[], p_memo text[], p_created_at text[],
          p_redemption_address text
        ) RETURNS TABLE (n bigint, outcome integer, available_units bigint, wallet_account text) LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        DECLARE
          calls integer := cardinality(p_user_id);
          u_id text[];
          u_chain text[];
          u_wallet text[];
          claimed text[];
          owned text[] := '{}';
          refused text[] := '{}';
          refused_user text[] := '{}';
          refused_key text[] := '{}';
          retaken integer[] := '{}';
          ri integer;
          t_user text[];
          t_units bigint[];
          c_address text[];
          c_units bigint[];
          o_outcome integer[] := array_fill(NULL::integer, ARRAY[calls]);
          o_available bigint[] := array_fill(NULL::bigint, ARRAY[calls]);
          o_wallet text[] := array_fill(NULL::text, ARRAY[calls]);
          o_address text[] := array_fill(NULL::text, ARRAY[calls]);
          held_units bigint := 0;
          req record;
          claim_key text;
          ui integer;
          ti integer;
          ci integer;
        BEGIN
          SELECT array_agg(u.id), array_agg(u.chain_address), array_agg(u.wallet_account) INTO u_id, u_chain, u_wallet
          FROM core_user u WHERE u.id = ANY (p_user_id);
          -- Each key once, with its first call's answer; a concurrent request with the same key waits here until that
          -- one ends.
          WITH claims AS (
            INSERT INTO core_idempotencyrecord
              (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
            SELECT DISTINCT ON (v.user_id, v.idempotency_key)
                   v.user_id, p_endpoint, v.idempotency_key, v.fingerprint, 201, v.response_body, v.created_at
            FROM unnest(p_user_id, p_idempotency_key, p_fingerprint, p_response_body, p_created_at)
              WITH ORDINALITY AS v(user_id, idempotency_key, fingerprint, response_body, created_at, n)
            WHERE v.idempotency_key IS NOT NULL AND v.user_id = ANY (u_id)
            ORDER BY v.user_id, v.idempotency_key, v.n
            ON CONFLICT DO NOTHING
            RETURNING user_id, idempotency_key
          )
          SELECT array_agg(octet_length(c.user_id) || ':' || c.user_id || c.idempotency_key) INTO claimed FROM claims c;
          SELECT array_agg(t.user_id ORDER BY t.user_id), array_agg(t.balance_units ORDER BY t.user_id) INTO t_user, t_units
          FROM (SELECT b.user_id, b.balance_units FROM core_tokenbalance b WHERE b.user_id = ANY (u_id)
                ORDER BY b.user_id FOR UPDATE) t;
          SELECT array_agg(c.address ORDER BY c.address), array_agg(c.balance_units ORDER BY c.address) INTO c_address, c_units
          FROM (SELECT b.address, b.balance_units FROM chain_stub_chainstubbalance b WHERE b.address = ANY (u_chain)
                ORDER BY b.address FOR UPDATE) c;
          FOR req IN
            SELECT v.user_id, v.amount_units, v.idempotency_key, v.n::integer AS n
            FROM unnest(p_user_id, p_amount_units, p_idempotency_key) WITH ORDINALITY AS v(user_id, amount_units, idempotency_key, n)
            ORDER BY v.user_id, v.n
          LOOP
            ui := array_position(u_id, req.user_id);
            IF ui IS NULL THEN
              o_outcome[req.n] := -3;
              CONTINUE;
            END IF;
            IF req.idempotency_key IS NOT NULL THEN
              claim_key := octet_length(req.user_id) || ':' || req.user_id || req.idempotency_key;
              IF claim_key = ANY (owned) OR NOT COALESCE(claim_key = ANY (claimed), false) THEN
                o_outcome[req.n] := 0;
                CONTINUE;
              END IF;
            END IF;
            ti := array_position(t_user, req.user_id);
            ci := array_position(c_address, u_chain[ui]);
            IF ti IS NULL OR t_units[ti] < req.amount_units THEN
              o_outcome[req.n] := -1;
              o_available[req.n] := t_units[ti];
            ELSIF ci IS NULL OR c_units[ci] < req.amount_units THEN
              o_outcome[req.n] := -2;
            ELSE
              t_units[ti] := t_units[ti] - req.amount_units;
              c_units[ci] := c_units[ci] - req.amount_units;
              held_units := held_units + req.amount_units;
              o_outcome[req.n] := 1;
              o_wallet[req.n] := u_wallet[ui];
              o_address[req.n] := u_chain[ui];
              IF req.idempotency_key IS NOT NULL THEN
                owned := array_append(owned, claim_key);
                -- An earlier call of the batch with this key was refused: this one takes its claim.
                ri := array_position(refused, claim_key);
                IF ri IS NOT NULL THEN
                  refused[ri] := NULL;
                  refused_user[ri] := NULL;
                  refused_key[ri] := NULL;
                  retaken := array_append(retaken, req.n);
                END IF;
              END IF;
              CONTINUE;
            END IF;
            IF req.idempotency_key IS NOT NULL AND array_position(refused, claim_key) IS NULL THEN
              refused := array_append(refused, claim_key);
              refused_user := array_append(refused_user, req.user_id);
              refused_key := array_append(refused_key, req.idempotency_key);
            END IF;
          END LOOP;
          IF cardinality(retaken) > 0 THEN
            UPDATE core_idempotencyrecord r
            SET request_fingerprint = p_fingerprint[t.n], response_body = p_response_body[t.n], created_at = p_created_at[t.n]
            FROM unnest(retaken) AS t(n)
            WHERE r.user_id = p_user_id[t.n] AND r.endpoint = p_endpoint AND r.idempotency_key = p_idempotency_key[t.n];
          END IF;
          IF cardinality(refused_user) > 0 THEN
            DELETE FROM core_idempotencyrecord r USING unnest(refused_user, refused_key) AS d(user_id, idempotency_key)
            WHERE r.user_id = d.user_id AND r.endpoint = p_endpoint AND r.idempotency_key = d.idempotency_key;
          END IF;
          IF held_units > 0 THEN
            WITH v AS (
              SELECT * FROM unnest(p_user_id, p_amount_units, p_job_id, p_tx_hash, p_idempotency_key, p_memo, p_created_at,
                                   o_outcome, o_address)
                WITH ORDINALITY AS v(user_id, amount_units, job_id, tx_hash, idempotency_key, memo, created_at, outcome,
                                     address, n)
              WHERE v.outcome = 1
            ), receipts AS (
              INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
              SELECT v.tx_hash, 'hold', v.address, v.amount_units, v.job_id, v.created_at FROM v ORDER BY v.n
            ), jobs AS (
              INSERT INTO core_chainjob
                (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key, memo, payout_state, created_at)
              SELECT v.job_id, 'burn', v.user_id, v.amount_units, 'confirmed', v.tx_hash, v.idempotency_key, v.memo,
                     'requested', v.created_at
              FROM v ORDER BY v.n
            )
            INSERT INTO core_redemptionhold (job_id, user_id, amount_units, state, created_at)
            SELECT v.job_id, v.user_id, v.amount_units, 'held', v.created_at FROM v ORDER BY v.n;
            UPDATE core_tokenbalance b SET balance_units = b.balance_units - d.units
            FROM (SELECT v.user_id, sum(v.amount_units)::bigint AS units
                  FROM unnest(p_user_id, p_amount_units, o_outcome) AS v(user_id, amount_units, outcome)
                  WHERE v.outcome = 1 GROUP BY v.user_id) d
            WHERE b.user_id = d.user_id;
            UPDATE chain_stub_chainstubbalance b SET balance_units = b.balance_units - d.units
            FROM (SELECT v.address, sum(v.amount_units)::bigint AS units
                  FROM unnest(o_address, p_amount_units, o_outcome) AS v(address, amount_units, outcome)
                  WHERE v.outcome = 1 GROUP BY v.address) d
            WHERE b.address = d.address;
            INSERT INTO chain_stub_chainstubbalance AS b (address, balance_units) VALUES (p_redemption_address, held_units)
            ON CONFLICT (address) DO UPDATE SET balance_units = b.balance_units + EXCLUDED.balance_units;
          END IF;
          RETURN QUERY
            SELECT v.n, v.outcome, v.available_units, v.wallet_account
            FROM unnest(o_outcome, o_available, o_wallet) WITH ORDINALITY AS v(outcome, available_units, wallet_account, n);
        END
        $$;
        CREATE FUNCTION pkr_burn_held_batch(
          p_job_id text[], p_provider_tx_id text[], p_tx_hash text[], p_created_at text[], p_redemption_address text,
          l_side text[], l_account text[]
        ) RETURNS TABLE (n bigint, outcome integer, hold_state text) LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        DECLARE
          calls integer := cardinality(p_job_id);
          h_job text[];
          h_user text[];
          h_units bigint[];
          h_state text[];
          o_outcome integer[] := array_fill(NULL::integer, ARRAY[calls]);
          o_state text[] := array_fill(NULL::text, ARRAY[calls]);
          burnt integer[] := '{}';
          burnt_units bigint := 0;
          closed_count bigint;
          left_units bigint;
          head_id bigint;
          head_hash text;
          entry_user text;
          e_id bigint[] := '{}';
          e_user text[] := '{}';
          e_side text[] := '{}';
          e_account text[] := '{}';
          e_units bigint[] := '{}';
          e_ref text[] := '{}';
          e_created text[] := '{}';
          e_prev text[] := '{}';
          e_hash text[] := '{}';
          hi integer;
          i integer;
        BEGIN
          -- Every call's job and hold first, in id order: the flow takes a job before the balances.
          PERFORM 1 FROM core_chainjob j JOIN core_redemptionhold h ON h.job_id = j.id
          WHERE j.id = ANY (p_job_id) ORDER BY j.id FOR UPDATE;
          -- A job answered twice in one batch takes its first answer's transaction id, as the second call found it.
          UPDATE core_chainjob j SET payout_state = 'submitted', payout_provider_tx_id = v.provider_tx_id
          FROM (SELECT DISTINCT ON (a.job_id) a.job_id, a.provider_tx_id
                FROM unnest(p_job_id, p_provider_tx_id) WITH ORDINALITY AS a(job_id, provider_tx_id, n)
                ORDER BY a.job_id, a.n) v
          WHERE j.id = v.job_id AND j.job_type = 'burn' AND j.payout_state = 'requested';
          SELECT array_agg(h.job_id), array_agg(h.user_id), array_agg(h.amount_units), array_agg(h.state)
          INTO h_job, h_user, h_units, h_state
          FROM core_redemptionhold h WHERE h.job_id = ANY (p_job_id);
          FOR i IN 1 .. calls LOOP
            hi := array_position(h_job, p_job_id[i]);
            IF hi IS NULL THEN
              o_outcome[i] := 0;
            ELSIF h_state[hi] <> 'held' THEN
              o_outcome[i] := 2;
              o_state[i] := h_state[hi];
            ELSE
              h_state[hi] := 'burnt';
              o_outcome[i] := 1;
              o_state[i] := 'burnt';
              burnt := array_append(burnt, i);
              burnt_units := burnt_units + h_units[hi];
            END IF;
          END LOOP;
          IF cardinality(burnt) > 0 THEN
            INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
            SELECT p_tx_hash[b.i], 'burn', p_redemption_address, h_units[array_position(h_job, p_job_id[b.i])],
                   p_job_id[b.i] || ':burn', p_created_at[b.i]
            FROM unnest(burnt) WITH ORDINALITY AS b(i, k) ORDER BY b.k;
            UPDATE chain_stub_chainstubbalance b SET balance_units = b.balance_units - burnt_units
            WHERE b.address = p_redemption_address AND b.balance_units >= burnt_units RETURNING b.balance_units INTO left_units;
            IF NOT FOUND THEN
              RAISE EXCEPTION 'pkr_burn_held_batch: the chain refused' USING ERRCODE = 'PKR12';
            END IF;
            IF left_units = 0 THEN
              DELETE FROM chain_stub_chainstubbalance b WHERE b.address = p_redemption_address AND b.balance_units = 0;
            END IF;
            UPDATE core_redemptionhold h SET state = 'burnt', closing_tx_hash = p_tx_hash[b.i], closed_at = p_created_at[b.i]
            FROM unnest(burnt) AS b(i) WHERE h.job_id = p_job_id[b.i] AND h.state = 'held';
            GET DIAGNOSTICS closed_count = ROW_COUNT;
            IF closed_count <> cardinality(burnt) THEN
              RAISE EXCEPTION 'pkr_burn_held_batch: % of % holds were not held', cardinality(burnt) - closed_count,
                cardinality(burnt) USING ERRCODE = 'PKR03';
            END IF;
            SELECT h.last_id, h.last_hash INTO head_id, head_hash FROM core_ledgerhead h WHERE h.singleton = 1 FOR UPDATE;
            IF NOT FOUND THEN
              RAISE EXCEPTION 'pkr_burn_held_batch: ledger head row missing' USING ERRCODE = 'PKR03';
            END IF;
            FOREACH i IN ARRAY burnt LOOP
              hi := array_position(h_job, p_job_id[i]);
              FOR k IN 1 .. cardinality(l_side) LOOP
                entry_user := CASE WHEN l_account[k] = 'user_token' THEN h_user[hi] END;
                e_prev := array_append(e_prev, head_hash);
                head_id := head_id + 1;
                head_hash := pkr_ledger_hash(head_id, entry_user, l_side[k], l_account[k], h_units[hi], 'burn', p_job_id[i],
                                             p_created_at[i], head_hash);
                e_id := array_append(e_id, head_id);
                e_user := array_append(e_user, entry_user);
                e_side := array_append(e_side, l_side[k]);
                e_account := array_append(e_account, l_account[k]);
                e_units := array_append(e_units, h_units[hi]);
                e_ref := array_append(e_ref, p_job_id[i]);
                e_created := array_append(e_created, p_created_at[i]);
                e_hash := array_append(e_hash, head_hash);
              END LOOP;
            END LOOP;
            INSERT INTO core_ledgerentry
              (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
            SELECT e.id, e.user_id, e.side, e.account, e.amount_units, 'burn', e.ref_id, e.created_at, e.prev_hash, e.entry_hash
            FROM unnest(e_id, e_user, e_side, e_account, e_units, e_ref, e_created, e_prev, e_hash)
              AS e(id, user_id, side, account, amount_units, ref_id, created_at, prev_hash, entry_hash)
            ORDER BY e.id;
            UPDATE core_ledgerhead SET last_id = head_id, last_hash = head_hash WHERE singleton = 1;
          END IF;
          RETURN QUERY
            SELECT v.n, v.outcome, v.hold_state FROM unnest(o_outcome, o_state) WITH ORDINALITY AS v(outcome, hold_state, n);
        END
        $$;
        CREATE FUNCTION pkr_pair_debit(
          p_provider_tx_id text, p_account text, p_amount_paisa bigint, p_amount_units bigint, p_memo text,
          p_reference text, p_occurred_at text, p_occurred_at_micros bigint, p_recorded_at text,
          p_recorded_at_micros bigint, p_path text,
          i_received_at text, i_message_id text, i_webhook_timestamp text, i_source_address text, i_scheme text,
          i_verification text, i_outcome text, i_error text, i_provider_tx_id text, i_body_bytes bigint
        ) RETURNS text LANGUAGE plpgsql AS $$
        DECLARE
          v_customer text;
          v_job text;
          v_hold_state text;
          v_row bigint;
        BEGIN
          SELECT u.id INTO v_customer FROM core_user u WHERE u.wallet_account = p_account;
          -- The flow's order: the transaction's row (which claims its provider id) first, then the job, then the hold.
          -- A debit this call does not pair is undone with the block, which also lets go of the job and the hold.
          BEGIN
            INSERT INTO core_externaltransaction
              (provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
               occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll)
            VALUES (p_provider_tx_id, p_account, v_customer, 'debit', p_amount_paisa, 'settled', p_memo, p_reference,
                    p_occurred_at, p_occurred_at_micros, p_recorded_at, p_recorded_at_micros, p_path, p_path = 'webhook',
                    p_path = 'poll')
            ON CONFLICT (provider_tx_id) DO NOTHING RETURNING id INTO v_row;
            IF v_row IS NULL THEN
              RETURN NULL;
            END IF;
            SELECT j.id INTO v_job FROM core_chainjob j
            WHERE j.job_type = 'burn' AND (j.id = p_reference OR j.payout_provider_tx_id = p_provider_tx_id)
              AND j.amount_units = p_amount_units
              AND NOT EXISTS (SELECT 1 FROM core_externaltransaction e WHERE e.matched_job_id = j.id)
            LIMIT 1 FOR UPDATE;
            IF v_job IS NULL THEN
              RAISE EXCEPTION 'pkr_pair_debit: no burn to pair' USING ERRCODE = 'PKR21';
            END IF;
            SELECT h.state INTO v_hold_state FROM core_redemptionhold h WHERE h.job_id = v_job FOR UPDATE;
            IF FOUND AND v_hold_state <> 'burnt' THEN
              RAISE EXCEPTION 'pkr_pair_debit: the hold is %', v_hold_state USING ERRCODE = 'PKR21';
            END IF;
            UPDATE core_externaltransaction SET matched_job_id = v_job WHERE id = v_row;
            UPDATE core_chainjob SET payout_state = 'confirmed', payout_provider_tx_id = p_provider_tx_id WHERE id = v_job;
            IF i_verification IS NOT NULL THEN
              INSERT INTO core_webhookinbound
                (received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                 provider_tx_id, job_id, body_bytes, body)
              VALUES (i_received_at, i_message_id, i_webhook_timestamp, i_source_address, i_scheme, i_verification,
                      i_outcome, i_error, i_provider_tx_id, NULL, i_body_bytes, NULL);
            END IF;
            RETURN v_job;
          EXCEPTION WHEN SQLSTATE 'PKR21' THEN
            RETURN NULL;
          END;
        END
        $$;
        """

    /// The update triggers of v1-guards and v4-running-totals ran for every UPDATE of a transaction or a job, with
    /// transition tables, although only a changed customer, or a credit becoming mintable or no longer, is theirs to
    /// check or count: matching a debit to its burn paid for three of them. As row triggers that name their columns
    /// and say when they apply, they run only then. Inserts keep their statement triggers, one per batch.
    static let rowUpdateTriggers = """
        DROP TRIGGER core_externaltransaction_user_updated ON core_externaltransaction;
        DROP TRIGGER core_chainjob_user_updated ON core_chainjob;
        DROP TRIGGER core_externaltransaction_retotaled ON core_externaltransaction;
        DROP FUNCTION pkr_total_credits_changed();
        CREATE FUNCTION pkr_check_user_reference_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM core_user u WHERE u.id = NEW.user_id) THEN
            RAISE EXCEPTION 'a % row refers to a user that does not exist', TG_TABLE_NAME
              USING ERRCODE = 'foreign_key_violation';
          END IF;
          RETURN NULL;
        END
        $$;
        CREATE TRIGGER core_externaltransaction_user_updated AFTER UPDATE OF user_id ON core_externaltransaction
          FOR EACH ROW WHEN (NEW.user_id IS NOT NULL AND NEW.user_id IS DISTINCT FROM OLD.user_id)
          EXECUTE FUNCTION pkr_check_user_reference_row();
        CREATE TRIGGER core_chainjob_user_updated AFTER UPDATE OF user_id ON core_chainjob
          FOR EACH ROW WHEN (NEW.user_id IS NOT NULL AND NEW.user_id IS DISTINCT FROM OLD.user_id)
          EXECUTE FUNCTION pkr_check_user_reference_row();
        CREATE FUNCTION pkr_total_credit_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO core_runningtotal (name, value)
          VALUES ('mintable_credits',
                  CASE WHEN NEW.direction = 'credit' AND NEW.status = 'settled' AND NEW.flag IS NULL AND NEW.user_id IS NOT NULL
                       THEN 1 ELSE -1 END);
          RETURN NULL;
        END
        $$;
        CREATE TRIGGER core_externaltransaction_retotaled
          AFTER UPDATE OF direction, status, flag, user_id ON core_externaltransaction
          FOR EACH ROW WHEN ((OLD.direction = 'credit' AND OLD.status = 'settled' AND OLD.flag IS NULL AND OLD.user_id IS NOT NULL)
                             <> (NEW.direction = 'credit' AND NEW.status = 'settled' AND NEW.flag IS NULL AND NEW.user_id IS NOT NULL))
          EXECUTE FUNCTION pkr_total_credit_changed();
        """

    /// Writers append their changes to a total as rows, from statement-level triggers (one row per statement, not
    /// per mint), so that no writer waits on another's row lock and no lock order among the hot rows changes;
    /// `PostgresStore.compactRunningTotals` folds them into one row per name.
    static let runningTotals = """
        CREATE TABLE core_runningtotal (
          name TEXT NOT NULL
            CHECK (name IN ('minted_units', 'redeemed_units', 'released_units', 'mint_jobs', 'mintable_credits')),
          value BIGINT NOT NULL
        );
        CREATE FUNCTION pkr_total_chainjobs() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO core_runningtotal (name, value)
          SELECT t.name, t.value FROM (
            SELECT 'minted_units' AS name, COALESCE(SUM(amount_units) FILTER (WHERE job_type = 'mint'), 0)::BIGINT AS value FROM added
            UNION ALL SELECT 'redeemed_units', COALESCE(SUM(amount_units) FILTER (WHERE job_type = 'burn'), 0)::BIGINT FROM added
            UNION ALL SELECT 'mint_jobs', COUNT(*) FILTER (WHERE job_type = 'mint') FROM added
          ) t WHERE t.value <> 0;
          RETURN NULL;
        END
        $$;
        CREATE TRIGGER core_chainjob_totaled AFTER INSERT ON core_chainjob
          REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION pkr_total_chainjobs();
        CREATE FUNCTION pkr_total_releases() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO core_runningtotal (name, value)
          SELECT 'released_units', SUM(a.amount_units)::BIGINT FROM new_holds a JOIN old_holds b ON b.job_id = a.job_id
          WHERE a.state = 'released' AND b.state <> 'released' HAVING COUNT(*) > 0;
          RETURN NULL;
        END
        $$;
        CREATE TRIGGER core_redemptionhold_released_totaled AFTER UPDATE ON core_redemptionhold
          REFERENCING OLD TABLE AS old_holds NEW TABLE AS new_holds FOR EACH STATEMENT EXECUTE FUNCTION pkr_total_releases();
        CREATE FUNCTION pkr_total_credits_added() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO core_runningtotal (name, value)
          SELECT 'mintable_credits', COUNT(*) FROM added
          WHERE direction = 'credit' AND status = 'settled' AND flag IS NULL AND user_id IS NOT NULL HAVING COUNT(*) > 0;
          RETURN NULL;
        END
        $$;
        CREATE TRIGGER core_externaltransaction_totaled AFTER INSERT ON core_externaltransaction
          REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION pkr_total_credits_added();
        CREATE FUNCTION pkr_total_credits_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO core_runningtotal (name, value)
          SELECT 'mintable_credits', t.change FROM (
            SELECT (SELECT COUNT(*) FROM new_rows
                    WHERE direction = 'credit' AND status = 'settled' AND flag IS NULL AND user_id IS NOT NULL)
                 - (SELECT COUNT(*) FROM old_rows
                    WHERE direction = 'credit' AND status = 'settled' AND flag IS NULL AND user_id IS NOT NULL) AS change
          ) t WHERE t.change <> 0;
          RETURN NULL;
        END
        $$;
        CREATE TRIGGER core_externaltransaction_retotaled AFTER UPDATE ON core_externaltransaction
          REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pkr_total_credits_changed();
        """

    /// A migration's statements, one by one. A dollar-quoted body (a function's) keeps its own semicolons.
    static func statements(_ sql: String) -> [String] {
        var statements: [String] = []
        var current = ""
        for piece in sql.components(separatedBy: ";\n") {
            current += current.isEmpty ? piece : ";\n" + piece
            // An odd number of pieces around `$$` means every dollar quote opened here has closed.
            guard current.components(separatedBy: "$$").count % 2 == 1 else { continue }
            statements.append(current)
            current = ""
        }
        if !current.isEmpty { statements.append(current) }
        return statements.filter { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
    }

    /// Runs the steps the database has not run yet. A database that ran steps of another history is refused
    /// before anything is written.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws {
        precondition(migrations.map(\.0) == SchemaSteps.names, "PostgreSQL's migration steps are not SchemaSteps.names")
        try await client.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(advisoryLockKey))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS pkr_schema_migrations (version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = Set<String>()
            for try await version in try await connection.query("SELECT version FROM pkr_schema_migrations", logger: logger)
                .decode(String.self)
            {
                applied.insert(version)
            }
            let unknown = SchemaSteps.unknown(applied)
            guard unknown.isEmpty else { throw UnknownSchemaStepsError(steps: unknown) }
            for (version, sql) in migrations where !applied.contains(version) {
                // Statements go one by one (none contains a semicolon inside a literal).
                for statement in statements(sql) {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO pkr_schema_migrations (version) VALUES (\(version))", logger: logger)
                logger.info("migration applied", metadata: ["version": "\(version)"])
            }
        }
    }
}
