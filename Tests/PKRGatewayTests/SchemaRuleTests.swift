import Foundation
import GRDB
import PKRCore
import PostgresNIO
import Testing

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite
@testable import WalletStub

/// The references between money rows are rules of the schema on both engines, whatever enforces them: foreign
/// keys on SQLite, statement-level checks and append-only guards on PostgreSQL (migration v1-guards).
@Suite("Schema rules", .serialized)
struct SchemaRuleTests {
    @Test("SQLite: v3 rebuilds the chain receipts with their rows, the index jobs refer to, and every reference intact")
    func receiptsRebuiltByV3() throws {
        let path = try temporaryDirectory().appendingPathComponent("v2.sqlite3").path
        // GRDB opens connections with foreign keys on.
        let queue = try DatabaseQueue(path: path)
        try SQLiteSchema.migrator().migrate(queue, upTo: "v2-payouts")
        try queue.write { db in
            try db.execute(
                sql: Self.oneMint + """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                      VALUES ('0xb', 'burn', '0xabc', 10000, 'job-b', 'now');
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, payout_state, created_at)
                      VALUES ('job-b', 'burn', 'u1', 10000, 'confirmed', '0xb', 'submitted', '\(Self.epoch)');
                    """)
        }
        try SQLiteSchema.migrate(queue)
        let (ops, violations, indexes, holds) = try queue.read { db in
            (
                try String.fetchAll(db, sql: "SELECT op FROM chain_stub_chainstubreceipt ORDER BY tx_hash"),
                try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count,
                try db.indexes(on: "chain_stub_chainstubreceipt").map(\.name),
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM core_redemptionhold")
            )
        }
        #expect(ops == ["burn", "mint"] && violations == 0)
        #expect(indexes.contains("chain_stub_chainstubreceipt_reference_tx_hash"))
        // A redemption from before holds has none: it was burnt when it was accepted.
        #expect(holds == 0)
        try queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                      VALUES ('0xh', 'hold', '0xabc', 10000, 'job-h', 'now')
                    """)
        }
        // A job still needs its receipt.
        #expect(throws: DatabaseError.self) {
            try queue.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, payout_state, created_at_micros)
                          VALUES ('job-x', 'burn', 'u1', 10000, 'confirmed', '0xnone', 'requested', 0)
                        """)
            }
        }
    }

    @Test("SQLite: v5 rebuilds the inbound log with its rows, their bodies and the quarantine's references intact")
    func inboundRebuiltByV5() throws {
        let path = try temporaryDirectory().appendingPathComponent("v4.sqlite3").path
        let queue = try DatabaseQueue(path: path)
        try SQLiteSchema.migrator().migrate(queue, upTo: "v4-running-totals")
        try queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO core_webhookinbound (id, received_at, verification, outcome, body_bytes, body)
                      VALUES (7, 'now', 'verified', 'minted', 3, X'616263'), (8, 'now', 'verified', 'conflict', 2, X'7B7D');
                    INSERT INTO core_webhookquarantine (inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at)
                      VALUES (8, 'TX-1', 'webhook', 'amount_pkr', X'7B7D', 'now');
                    """)
        }
        try SQLiteSchema.migrate(queue)
        let (bodies, violations, nextID) = try queue.read { db in
            (
                try Row.fetchAll(db, sql: "SELECT id, body FROM core_webhookinbound ORDER BY id").map { row -> [Int64: Data] in
                    [row[0]: row[1]]
                },
                try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count,
                try Int64.fetchOne(db, sql: "SELECT max(id) + 1 FROM core_webhookinbound")
            )
        }
        // Rows logged before the step keep their bodies until they are pruned.
        #expect(bodies == [[7: Data("abc".utf8)], [8: Data("{}".utf8)]] && violations == 0 && nextID == 9)
        // The quarantine still refers to the log: a row it names is found, a row it does not is refused.
        try queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO core_webhookquarantine (inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at)
                      VALUES (7, 'TX-2', 'webhook', 'amount_pkr', X'7B7D', 'now')
                    """)
        }
        #expect(throws: DatabaseError.self) {
            try queue.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO core_webhookquarantine (inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at)
                          VALUES (99, 'TX-3', 'webhook', 'amount_pkr', X'7B7D', 'now')
                        """)
            }
        }
    }

    @Test("SQLite: v6 keeps each ledger hash as its 32 bytes and reads back the same chain, links included")
    func ledgerCompactedByV6() throws {
        let path = try temporaryDirectory().appendingPathComponent("v5.sqlite3").path
        let queue = try DatabaseQueue(path: path)
        try SQLiteSchema.migrator().migrate(queue, upTo: "v5-inbound-bodies")
        // A mint's two entries as v1 to v5 stored them: hashes as hex text, each with its link.
        let (first, second) = Self.oneMintEntries()
        try queue.write { db in
            try db.execute(sql: Self.oneMint)
            for entry in [first, second] {
                try db.execute(
                    sql: """
                        INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash,
                          entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        entry.id, entry.userID, entry.side.rawValue, entry.account.rawValue, entry.amountUnits, entry.refType.rawValue,
                        entry.refID, entry.createdAt, entry.prevHash, entry.entryHash,
                    ])
            }
        }
        try SQLiteSchema.migrate(queue)
        let (stored, links, violations) = try queue.read { db in
            (
                try Row.fetchAll(db, sql: "SELECT typeof(entry_hash), length(entry_hash) FROM core_ledgerentry ORDER BY id").map {
                    "\($0[0] as String) \($0[1] as Int)"
                },
                try Row.fetchAll(db, sql: "SELECT \(SQLiteStore.ledgerColumns) FROM core_ledgerentry e ORDER BY e.id").map {
                    [$0[8] as String, $0[9] as String]
                },
                try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count
            )
        }
        #expect(stored == ["blob 32", "blob 32"] && violations == 0)
        #expect(links == [[first.prevHash, first.entryHash], [second.prevHash, second.entryHash]])
        // A hash stored as text, or of another length, is refused by its own check (the burn job has no entries).
        try queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                      VALUES ('0xb', 'burn', '0xabc', 10000, 'job-b', 'now');
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, payout_state, created_at_micros)
                      VALUES ('job-b', 'burn', 'u1', 10000, 'confirmed', '0xb', 'confirmed', 0);
                    """)
        }
        for hash in ["'\(second.entryHash)'", "zeroblob(31)"] {
            let error = #expect(throws: DatabaseError.self) {
                try queue.write { db in
                    try db.execute(
                        sql: """
                            INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, job_row, created_at_micros,
                              entry_hash)
                              SELECT 3, NULL, 'debit', 'issuer_token', 1, 'burn', row_id, 0, \(hash) FROM core_chainjob WHERE id = 'job-b'
                            """)
                }
            }
            #expect(error?.message?.contains("CHECK constraint failed") == true, "\(String(describing: error))")
        }
    }

    @Test("SQLite: v7 names each entry's job by the job's row, derives its times, and keeps every row, rule and total")
    func compactRowsByV7() throws {
        let path = try temporaryDirectory().appendingPathComponent("v6.sqlite3").path
        let queue = try DatabaseQueue(path: path)
        try SQLiteSchema.migrator().migrate(queue, upTo: "v6-compact-ledger")
        let (first, second) = Self.oneMintEntries()
        try queue.write { db in
            // A burn first, so that the mint's row is not the first row.
            try db.execute(
                sql: Self.oneMint + """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                      VALUES ('0xb', 'burn', '0xabc', 10000, 'job-b', 'now');
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, payout_state, created_at)
                      VALUES ('job-b', 'burn', 'u1', 10000, 'confirmed', '0xb', 'confirmed', '2026-12-07T01:02:03.456789Z');
                    """)
            for entry in [first, second] {
                try db.execute(
                    sql: """
                        INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, entry_hash)
                          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        entry.id, entry.userID, entry.side.rawValue, entry.account.rawValue, entry.amountUnits, entry.refType.rawValue,
                        entry.refID, entry.createdAt, Data(try SQLitePrimitives.hashBytes(entry)),
                    ])
            }
        }
        try SQLiteSchema.migrate(queue)
        let (jobs, entries, violations, columns) = try queue.read { db in
            (
                try Row.fetchAll(db, sql: "SELECT row_id, id, external_tx_row_id, created_at FROM core_chainjob ORDER BY row_id").map {
                    "\($0[0] as Int) \($0[1] as String) \(($0[2] as Int?).map(String.init) ?? "-") \($0[3] as String)"
                },
                try Row.fetchAll(db, sql: "SELECT \(SQLiteStore.ledgerColumns) FROM core_ledgerentry e ORDER BY e.id").map {
                    [$0[6] as String, $0[7] as String, $0[8] as String, $0[9] as String]
                },
                try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count,
                try db.columns(in: "core_chainjob").map(\.name) + db.columns(in: "core_ledgerentry").map(\.name)
            )
        }
        #expect(jobs == ["1 job-m 1 \(Self.epoch)", "2 job-b - 2026-12-07T01:02:03.456789Z"] && violations == 0)
        #expect(
            entries == [
                ["job-m", Self.epoch, first.prevHash, first.entryHash], ["job-m", Self.epoch, second.prevHash, second.entryHash],
            ])
        #expect(!columns.contains("external_tx_id") && !columns.contains("ref_id"))
        #expect(try queue.read { try $0.indexes(on: "core_ledgerentry").map(\.name).contains("core_ledgerentry_customer") })
        try queue.write { db in
            // The rules and the total survive the rebuild: one mint per transaction, one entry per job and account.
            try db.execute(
                sql: """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                      VALUES ('0xm2', 'mint', '0xabc', 1, 'job-m2', 'now')
                    """)
            for refused in [
                """
                INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, created_at_micros)
                  VALUES ('job-m2', 'mint', 'u1', 1, 'confirmed', '0xm2', 1, 0)
                """,
                "UPDATE core_chainjob SET external_tx_row_id = NULL WHERE id = 'job-m'",
                "UPDATE core_ledgerentry SET account = 'user_token' WHERE id = 1",
                "UPDATE core_ledgerentry SET job_row = 3 WHERE id = 1",
                "DELETE FROM core_chainjob WHERE id = 'job-m'",
            ] {
                #expect(throws: DatabaseError.self, "\(refused)") {
                    try db.inSavepoint {
                        try db.execute(sql: refused); return .commit
                    }
                }
            }
            let redeemed = try Int64.fetchOne(db, sql: "SELECT value FROM core_runningtotal WHERE name = 'redeemed_units'")
            try db.execute(
                sql: """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                      VALUES ('0xb2', 'burn', '0xabc', 20000, 'job-b2', 'now');
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, payout_state, created_at_micros)
                      VALUES ('job-b2', 'burn', 'u1', 20000, 'confirmed', '0xb2', 'confirmed', 0);
                    """)
            #expect(
                try Int64.fetchOne(db, sql: "SELECT value FROM core_runningtotal WHERE name = 'redeemed_units'")
                    == redeemed.map { $0 + 20_000 })
        }
    }

    @Test("SQLite: v7 stops at an entry that names no job, and the database stays at v6")
    func compactRowsStopAtAnOrphan() throws {
        let path = try temporaryDirectory().appendingPathComponent("v6-orphan.sqlite3").path
        let queue = try DatabaseQueue(path: path)
        try SQLiteSchema.migrator().migrate(queue, upTo: "v6-compact-ledger")
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: Self.oneMint)
            // Only by hand, with the foreign keys off.
            try db.execute(sql: "PRAGMA foreign_keys = OFF")
            try db.execute(
                sql: """
                    INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, entry_hash)
                      VALUES (1, NULL, 'credit', 'issuer_token', 10000, 'mint', 'job-gone', '\(Self.epoch)', zeroblob(32))
                    """)
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        let error = #expect(throws: DatabaseError.self) { try SQLiteSchema.migrate(queue) }
        #expect(error?.message?.contains("name no job") == true, "\(String(describing: error))")
        let (applied, columns) = try queue.read { db in
            (try SQLiteSchema.migrator().appliedIdentifiers(db), try db.columns(in: "core_ledgerentry").map(\.name))
        }
        #expect(!applied.contains("v7-compact-rows") && columns.contains("ref_id"))
    }

    @Test("SQLite derives a time's text exactly as Timestamp.format writes it, over every year RFC 3339 can name")
    func derivedTimesMatchTheFormat() throws {
        let queue = try DatabaseQueue()
        var generator = SystemRandomNumberGenerator()
        let edges: [Int64] = [
            0, -1, 1, 999_999, 1_000_000, -1_000_000, -1_000_001, 951_782_400_000_000, 1_796_604_349_228_304,
            Timestamp.earliestMicros, Timestamp.endMicros - 1,
        ]
        let samples = edges + (0..<2_000).map { _ in Int64.random(in: Timestamp.earliestMicros..<Timestamp.endMicros, using: &generator) }
        try queue.read { db in
            let statement = try db.makeStatement(sql: "WITH t(m) AS (VALUES (?)) SELECT \(SQLiteSchema.rfc3339(micros: "m")) FROM t")
            for micros in samples {
                let derived = try String.fetchOne(statement, arguments: [micros])
                #expect(derived == Timestamp.format(micros: micros), "\(micros)")
            }
        }
    }

    @Test("SQLite: v7 derives a transaction's text times from its microseconds, and stops at a row where they differ")
    func derivedTimesByV7() throws {
        let occurred: Int64 = 1_796_604_349_228_304
        let recorded: Int64 = occurred + 1_500_000
        for agreeing in [true, false] {
            let path = try temporaryDirectory().appendingPathComponent("v6-\(agreeing).sqlite3").path
            let queue = try DatabaseQueue(path: path)
            try SQLiteSchema.migrator().migrate(queue, upTo: "v6-compact-ledger")
            try queue.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO core_externaltransaction (provider_tx_id, account, direction, amount_paisa, status, occurred_at,
                          occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via)
                          VALUES ('TX-1', 'W-1', 'debit', 1, 'failed', ?, ?, ?, ?, 'poll')
                        """,
                    arguments: [
                        Timestamp.format(micros: occurred), occurred,
                        agreeing ? Timestamp.format(micros: recorded) : "2026-01-01T00:00:00Z",
                        recorded,
                    ])
            }
            guard agreeing else {
                let error = #expect(throws: DatabaseError.self) { try SQLiteSchema.migrate(queue) }
                #expect(error?.message?.contains("not their microseconds") == true, "\(String(describing: error))")
                #expect(try queue.read { try !SQLiteSchema.migrator().appliedIdentifiers($0).contains("v7-compact-rows") })
                continue
            }
            try SQLiteSchema.migrate(queue)
            let (times, indexes, triggers) = try queue.read { db in
                (
                    try Row.fetchAll(db, sql: "SELECT occurred_at, recorded_at FROM core_externaltransaction").map {
                        [$0[0] as String, $0[1] as String]
                    },
                    try db.indexes(on: "core_externaltransaction").count,
                    try String.fetchAll(
                        db, sql: "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'core_externaltransaction'")
                )
            }
            #expect(times == [[Timestamp.format(micros: occurred), Timestamp.format(micros: recorded)]])
            #expect(indexes == 7 && Set(triggers) == ["core_externaltransaction_totaled", "core_externaltransaction_retotaled"])
            // The text is no longer written, and a time no RFC 3339 year can name is refused.
            for refused in [
                "UPDATE core_externaltransaction SET occurred_at = 'now'",
                "UPDATE core_externaltransaction SET occurred_at_micros = \(Timestamp.endMicros)",
                "UPDATE core_externaltransaction SET recorded_at_micros = \(Timestamp.earliestMicros - 1)",
            ] {
                #expect(throws: DatabaseError.self, "\(refused)") { try queue.write { try $0.execute(sql: refused) } }
            }
        }
    }

    @Test("an inbound-log row keeps its delivery's body whole or not at all", arguments: TestEngine.all)
    func inboundBodyWhole(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            func insert(bodyBytes: Int, body: String) -> String {
                """
                INSERT INTO core_webhookinbound (received_at, verification, outcome, body_bytes, body)
                  VALUES ('now', 'verified', 'minted', \(bodyBytes), \(body))
                """
            }
            let abc = engine == .sqlite ? "X'616263'" : "'\\x616263'::bytea"
            try await executeRawSQL(gateway, insert(bodyBytes: 3, body: abc))
            try await executeRawSQL(gateway, insert(bodyBytes: 3, body: "NULL"))
            await Self.expectRefused(gateway, insert(bodyBytes: 5, body: abc))
            await Self.expectRefused(gateway, insert(bodyBytes: -1, body: "NULL"))
        }
    }

    @Test(
        "a redemption's hold ends once, burnt or released, naming the chain transaction that ended it; receipts take holds",
        arguments: TestEngine.all)
    func holdRules(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            let user = try await gateway.seedDemo()
            _ = try await gateway.stub.credit(account: Demo.walletAccount, amountPaisa: 10_000, memo: "deposit")
            #expect(try await gateway.reconcileOnce().minted == 1)
            // Held: the stub pays it, and the answer burns the hold.
            let redeemed = try await gateway.redeem(amountUnits: 100 * Money.unitsPerPaisa, memo: "", idempotencyKey: nil)
            let jobID = redeemed.receipt.jobID
            let refused = [
                "UPDATE core_redemptionhold SET state = 'released'",
                "UPDATE core_redemptionhold SET closing_tx_hash = NULL",
                "DELETE FROM core_redemptionhold",
                "UPDATE core_redemptionhold SET state = 'spent'",
                "UPDATE core_redemptionhold SET amount_units = 1",
                """
                INSERT INTO core_redemptionhold (job_id, user_id, amount_units, state, created_at)
                VALUES ('\(jobID)', '\(user.id)', 1000000, 'held', 'now')
                """,
                """
                INSERT INTO core_redemptionhold (job_id, user_id, amount_units, state, created_at)
                VALUES ('no-such-job', '\(user.id)', 1000000, 'held', 'now')
                """,
                """
                INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                VALUES ('0xspent', 'spend', '\(user.chainAddress)', 1, 'ref-spent', 'now')
                """,
            ]
            for sql in refused { await Self.expectRefused(gateway, sql) }
            let view = try #require(try await gateway.redemption(jobID: jobID))
            #expect(view.state == .paid)
            #expect(try await gateway.reconciliation().ok)
        }
    }

    @Test(
        "a row naming a user or job that does not exist is refused, and a user or job referred to is never deleted or renamed",
        arguments: TestEngine.all)
    func references(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            let user = try await gateway.seedDemo()
            _ = try await gateway.stub.credit(account: Demo.walletAccount, amountPaisa: 10_000, memo: "deposit")
            #expect(try await gateway.reconcileOnce().minted == 1)
            let jobID = try #require(try await gateway.store.ledgerEntries(customerID: nil, limit: 10, beforeID: nil).first?.refID)
            let hash = String(repeating: "0", count: 64)

            // SQLite stores the hash as bytes and no link (v6-compact-ledger), and names the job by its row
            // (v7-compact-rows); so does a SQLite mint its transaction.
            let (hashes, job, noJob, mintOf) =
                engine == .sqlite
                ? (("entry_hash", "zeroblob(32)"), "job_row", "-1", ("external_tx_row_id", "1"))
                : (("prev_hash, entry_hash", "'\(hash)', '\(hash)'"), "ref_id", "'no-such-job'", ("external_tx_id", "'TX-x'"))
            let created = Self.createdAt(engine)
            let refused = [
                """
                INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, \(job), \(created.column), \(hashes.0))
                VALUES (1000, NULL, 'credit', 'issuer_token', 1, 'mint', \(noJob), \(created.value), \(hashes.1))
                """,
                "UPDATE core_ledgerentry SET \(job) = \(noJob) WHERE id = 1",
                "UPDATE core_ledgerentry SET user_id = 'nobody' WHERE user_id IS NOT NULL",
                """
                INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, \(mintOf.0), memo, \(created.column))
                VALUES ('job-x', 'mint', 'nobody', 1, 'confirmed', 'hash-x', \(mintOf.1), '', \(created.value))
                """,
                "UPDATE core_chainjob SET user_id = 'nobody' WHERE id = '\(jobID)'",
                Self.insertExternal(gateway, providerTxID: "TX-nobody", userID: "nobody"),
                "UPDATE core_externaltransaction SET user_id = 'nobody'",
                "DELETE FROM core_chainjob WHERE id = '\(jobID)'",
                "UPDATE core_chainjob SET id = 'renamed' WHERE id = '\(jobID)'",
                "DELETE FROM core_user",
                "UPDATE core_user SET id = 'renamed'",
            ]
            for sql in refused { await Self.expectRefused(gateway, sql) }

            // The same kinds of statement with real references pass: the rules refuse what is wrong, not everything.
            try await executeRawSQL(gateway, Self.insertExternal(gateway, providerTxID: "TX-linked", userID: user.id))
            try await executeRawSQL(gateway, "UPDATE core_chainjob SET memo = 'checked', id = id WHERE id = '\(jobID)'")
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET \(job) = \(job), user_id = user_id")
            // Nothing refused was written.
            let verified = try await gateway.store.verifyLedger()
            #expect(verified.firstBreak == nil && verified.entriesChecked == 2)
            #expect(try await gateway.store.tokenBalanceUnits(customerID: user.id) == 10_000 * Money.unitsPerPaisa)
        }
    }

    @Test(
        "two jobs never share a chain transaction hash, and two mints never share a provider transaction",
        arguments: TestEngine.all)
    func oneJobPerKey(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            let user = try await gateway.seedDemo()
            for amountPaisa in [10_000, 20_000] as [Int64] {
                _ = try await gateway.stub.credit(account: Demo.walletAccount, amountPaisa: amountPaisa, memo: "deposit")
            }
            #expect(try await gateway.reconcileOnce().minted == 2)
            let jobIDs = try await gateway.store.ledgerEntries(customerID: nil, limit: 10, beforeID: nil).map(\.refID)
            let first = try #require(jobIDs.last), second = try #require(jobIDs.first)
            try #require(first != second)
            func other(_ column: String) -> String { "(SELECT \(column) FROM core_chainjob WHERE id = '\(second)')" }

            // A SQLite mint names its provider transaction by that transaction's row (v7-compact-rows).
            let mintOf = engine == .sqlite ? "external_tx_row_id" : "external_tx_id"
            let refused = [
                "UPDATE core_chainjob SET tx_hash = \(other("tx_hash")) WHERE id = '\(first)'",
                "UPDATE core_chainjob SET \(mintOf) = \(other(mintOf)) WHERE id = '\(first)'",
            ]
            for sql in refused { await Self.expectRefused(gateway, sql) }

            // Rewriting a job's own keys passes, and nothing refused was written.
            try await executeRawSQL(gateway, "UPDATE core_chainjob SET tx_hash = tx_hash, \(mintOf) = \(mintOf)")
            let snapshot = try await gateway.store.reconciliationSnapshot()
            #expect(snapshot.creditsMintedMoreThanOnce.isEmpty && snapshot.settledCreditsUnminted.isEmpty)
            #expect(try await gateway.store.tokenBalanceUnits(customerID: user.id) == 30_000 * Money.unitsPerPaisa)
        }
    }

    @Test(
        "a redeem's idempotency key has one stored answer, a payout transaction pays one burn, and a mint is never paid out",
        arguments: TestEngine.all)
    func burnKeys(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            let user = try await gateway.seedDemo()
            _ = try await gateway.stub.credit(account: Demo.walletAccount, amountPaisa: 10_000, memo: "deposit")
            #expect(try await gateway.reconcileOnce().minted == 1)
            #expect(
                try await gateway.redeem(amountUnits: 1_000 * Money.unitsPerPaisa, memo: "out", idempotencyKey: "key-1").isReplay == false)
            try await executeRawSQL(
                gateway,
                """
                UPDATE core_chainjob SET payout_state = 'submitted', payout_provider_tx_id = 'TX-payout' WHERE job_type = 'burn'
                """)
            // Each burn written below has a chain receipt of its own, so a refused one is refused for its payout alone.
            try await executeRawSQL(
                gateway,
                """
                INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                VALUES ('0xother2', 'burn', 'a', 10000, 'j2', 'now'), ('0xother3', 'burn', 'a', 10000, 'j3', 'now')
                """)

            let created = Self.createdAt(engine)
            let refused = [
                // A second answer, and so a second burn, for the same user, endpoint and key.
                """
                INSERT INTO core_idempotencyrecord (user_id, endpoint, idempotency_key, request_fingerprint, response_status,
                  response_body, created_at)
                SELECT user_id, endpoint, idempotency_key, 'other', response_status, '{}', created_at FROM core_idempotencyrecord
                """,
                """
                INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, payout_state,
                  payout_provider_tx_id, \(created.column))
                VALUES ('j3', 'burn', '\(user.id)', 10000, 'confirmed', '0xother3', 'submitted', 'TX-payout', \(created.value))
                """,
                "UPDATE core_chainjob SET payout_provider_tx_id = 'TX-x' WHERE job_type = 'mint'",
            ]
            for sql in refused { await Self.expectRefused(gateway, sql) }

            // With a payout transaction and a key of its own, a burn passes.
            try await executeRawSQL(
                gateway,
                """
                INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key, payout_state,
                  \(created.column))
                VALUES ('j2', 'burn', '\(user.id)', 10000, 'confirmed', '0xother2', 'key-2', 'requested', \(created.value))
                """)
        }
    }

    @Test(
        "both engines migrate through the same steps, by the same names and in the same order, and refuse another history's",
        arguments: TestEngine.all)
    func migrationSteps(engine: TestEngine) async throws {
        #expect(SQLiteSchema.migrator().migrations == SchemaSteps.names)
        #expect(PostgresSchema.migrations.map(\.0) == SchemaSteps.names)
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            #expect(try await Self.appliedSteps(gateway) == Set(SchemaSteps.names))
            // Migrating again runs nothing.
            try await gateway.store.migrate()
            // A database that ran a step this history does not have (one migrated before the steps started again at
            // v1) is refused, not migrated on top of.
            try await executeRawSQL(
                gateway,
                engine == .sqlite
                    ? "INSERT INTO grdb_migrations (identifier) VALUES ('v2-fewer-index-entries')"
                    : "INSERT INTO pkr_schema_migrations (version) VALUES ('v2-fewer-index-entries')")
            await #expect(throws: UnknownSchemaStepsError.self) { try await gateway.store.migrate() }
        }
    }

    /// `oneMint`'s two ledger entries, the first of the chain.
    static func oneMintEntries() -> (LedgerEntry, LedgerEntry) {
        let postings = PostingRules.postings(for: .mint, amountUnits: 10_000)
        let first = LedgerEntry.next(after: .genesis, userID: nil, posting: postings[0], refType: .mint, refID: "job-m", createdAt: epoch)
        let second = LedgerEntry.next(
            after: LedgerHead(first), userID: "u1", posting: postings[1], refType: .mint, refID: "job-m", createdAt: epoch)
        return (first, second)
    }

    /// The epoch in the stored form of every time: the time rows of the fixtures carry.
    static let epoch = Timestamp.format(micros: 0)

    /// A customer and one mint with its receipt and transaction, as the schema has stated them since v2.
    static let oneMint = """
        INSERT INTO core_user (id, email, display_name, wallet_account, chain_address, created_at)
          VALUES ('u1', 'u1@example.com', 'U', 'W-1', '0xabc', 'now');
        INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
          VALUES ('0xm', 'mint', '0xabc', 10000, 'job-m', 'now');
        INSERT INTO core_externaltransaction (id, provider_tx_id, account, user_id, direction, amount_paisa, status,
          occurred_at, occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via)
          VALUES (1, 'TX-1', 'W-1', 'u1', 'credit', 1, 'settled', '1970-01-01T00:00:00.000000Z', 0,
            '1970-01-01T00:00:00.000000Z', 0, 'poll');
        INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, external_tx_id,
          created_at) VALUES ('job-m', 'mint', 'u1', 10000, 'confirmed', '0xm', 1, 'TX-1', '\(epoch)');

        """

    /// The steps the database records as run.
    static func appliedSteps(_ gateway: Gateway) async throws -> Set<String> {
        switch gateway.store {
        case let sqlite as SQLiteStore:
            return try await sqlite.database.read { try String.fetchSet($0, sql: "SELECT identifier FROM grdb_migrations") }
        case let postgres as PostgresStore:
            var steps = Set<String>()
            for try await step in try await postgres.client.query("SELECT version FROM pkr_schema_migrations", logger: testLogger())
                .decode(String.self)
            {
                steps.insert(step)
            }
            return steps
        default:
            Issue.record("unknown store \(type(of: gateway.store))")
            return []
        }
    }

    /// The statement must fail, and fail on a rule of the schema (not, say, on a typo).
    static func expectRefused(_ gateway: Gateway, _ sql: String) async {
        do {
            try await executeRawSQL(gateway, sql)
            Issue.record("accepted: \(sql)")
        } catch {
            #expect(isConstraintViolation(error), "\(sql): \(String(reflecting: error))")
        }
    }

    static func insertExternal(_ gateway: Gateway, providerTxID: String, userID: String) -> String {
        let times = transactionTimes(gateway, occurredMicros: 0, recordedMicros: 0)
        return """
            INSERT INTO core_externaltransaction (provider_tx_id, account, user_id, direction, amount_paisa, status, memo,
              \(times.columns), first_seen_via)
            VALUES ('\(providerTxID)', 'WALLET-X', '\(userID)', 'debit', 1, 'failed', '', \(times.values), 'poll')
            """
    }

    /// A job's or ledger entry's time column and a value for it: SQLite stores the microseconds and derives the
    /// text (v7-compact-rows).
    static func createdAt(_ engine: TestEngine) -> (column: String, value: String) {
        engine == .sqlite ? ("created_at_micros", "0") : ("created_at", "'\(epoch)'")
    }

    /// A transaction's time columns and their values, as each engine's schema takes them now: SQLite derives the
    /// text times from the microseconds (v7-compact-rows).
    static func transactionTimes(_ gateway: Gateway, occurredMicros: Int64, recordedMicros: Int64) -> (columns: String, values: String) {
        if gateway.store is SQLiteStore { return ("occurred_at_micros, recorded_at_micros", "\(occurredMicros), \(recordedMicros)") }
        return (
            "occurred_at, occurred_at_micros, recorded_at, recorded_at_micros",
            "'\(Timestamp.format(micros: occurredMicros))', \(occurredMicros), '\(Timestamp.format(micros: recordedMicros))', \(recordedMicros)"
        )
    }

    static func isConstraintViolation(_ error: any Error) -> Bool {
        if let error = error as? DatabaseError { return error.resultCode == .SQLITE_CONSTRAINT }
        // foreign_key_violation, restrict_violation, unique_violation and check_violation.
        if let error = error as? PSQLError {
            return ["23503", "23001", "23505", "23514"].contains(error.serverInfo?[.sqlState] ?? "")
        }
        return false
    }
}
