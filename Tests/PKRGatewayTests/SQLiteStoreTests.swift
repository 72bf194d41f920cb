import ChainStub
import Foundation
import GRDB
import PKRCore
import Testing

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite
@testable import WalletStub

@Suite struct SQLiteStoreTests {
    /// The writer's commits hand checkpoints to a second connection: pages reach the database file although the
    /// WAL never grew to the writer's own checkpoint threshold.
    @Test func backgroundCheckpointCopiesTheWALIntoTheDatabaseFile() async throws {
        let path = try temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
        let store = try SQLiteStore(path: path, limits: MoneyLimits(maxMintUnits: 1, maxPayoutUnits: 1), nowMicros: { 0 })
        try await store.migrate()
        let sizeBefore = try fileBytes(path)
        let pages = Int(WALCheckpointer.backgroundFramesMin) + 200
        try await store.database.write { db in
            try db.execute(sql: "CREATE TABLE scratch (payload BLOB NOT NULL)")
            for _ in 0..<pages { try db.execute(sql: "INSERT INTO scratch (payload) VALUES (randomblob(3000))") }
        }
        #expect(pages < Int(WALCheckpointer.writerFramesMax))
        var sizeAfter = sizeBefore
        for _ in 0..<100 where sizeAfter < sizeBefore + pages * 3000 {
            try await Task.sleep(for: .milliseconds(50))
            sizeAfter = try fileBytes(path)
        }
        #expect(sizeAfter >= sizeBefore + pages * 3000)
        let count = try await store.database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM scratch") }
        #expect(count == pages)
    }

    /// Every commit the writer makes is synced before it returns: the pool must not leave its writer on GRDB's
    /// WAL default, `synchronous = NORMAL`.
    @Test func theWriterSyncsEveryCommit() async throws {
        let path = try temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
        let store = try SQLiteStore(path: path, limits: MoneyLimits(maxMintUnits: 1, maxPayoutUnits: 1), nowMicros: { 0 })
        try await store.migrate()
        let writerLevel = try await store.database.write { try Int.fetchOne($0, sql: "PRAGMA synchronous") }
        #expect(writerLevel == SQLiteStore.synchronousFull)
        let journalMode = try await store.database.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") }
        #expect(journalMode == "wal")
    }

    /// A database written under the v1 schema keeps every row through the later migrations, its ledger still
    /// verifies, its mint is still found as its credit's, and the uniqueness rules v2 moved into partial indexes
    /// still refuse duplicates. The v1 rows are written as the v1 gateway wrote them, statement by statement.
    @Test func migrationsKeepV1RowsAndTheirUniquenessRules() async throws {
        let path = try temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
        let limits = MoneyLimits(maxMintUnits: 1_000_000_000_000, maxPayoutUnits: 1_000_000_000_000)
        let store = try SQLiteStore(path: path, limits: limits, nowMicros: { 1_800_000_000_000_000 })
        try SQLiteSchema.migrator().migrate(store.database, upTo: "v1-gateway")
        let user = try await store.createCustomer(Demo.customer)
        let credit = ProviderTransaction(
            providerTxID: "TX-v1", account: "WALLET-001", direction: .credit, amountPaisa: 250_000,
            status: .settled, occurredAtMicros: 1_800_000_000_000_000, memo: "v1", reference: nil)
        let mintedUnits: Int64 = 250_000 * Money.unitsPerPaisa, burnedUnits: Int64 = 10_000_000
        let burn = ChainJob(id: "job-burn", jobType: .burn, amountUnits: burnedUnits, txHash: "0xburn", createdAt: "now")
        try await store.database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO core_externaltransaction (provider_tx_id, account, user_id, direction, amount_paisa, status, memo,
                      occurred_at, occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_webhook)
                    VALUES ('TX-v1', 'WALLET-001', ?, 'credit', 250000, 'settled', 'v1', 'now', 0, 'now', 0, 'webhook', 1);
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                    VALUES ('0xmint', 'mint', ?, ?, 'job-mint', 'now'), ('0xburn', 'burn', ?, ?, 'job-burn', 'now');
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, memo, created_at)
                    VALUES ('job-mint', 'mint', ?, ?, 'confirmed', '0xmint', 'TX-v1', 'v1', 'now');
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key, memo,
                      payout_state, payout_provider_tx_id, created_at)
                    VALUES ('job-burn', 'burn', ?, ?, 'confirmed', '0xburn', 'key-1', 'out', 'submitted', 'TX-payout', 'now');
                    INSERT INTO core_idempotencyrecord (user_id, endpoint, idempotency_key, request_fingerprint, response_status,
                      response_body, created_at)
                    VALUES (?, 'POST /api/redeem', 'key-1', 'fingerprint-1', 201, '{"job_id": "job-burn"}', 'now');
                    UPDATE core_tokenbalance SET balance_units = ? WHERE user_id = ?;
                    UPDATE chain_stub_chainstubbalance SET balance_units = ? WHERE address = ?;
                    """,
                arguments: [
                    user.id, user.chainAddress, mintedUnits, user.chainAddress, burnedUnits, user.id, mintedUnits,
                    user.id, burnedUnits, user.id, mintedUnits - burnedUnits, user.id, mintedUnits - burnedUnits,
                    user.chainAddress,
                ])
            var head = LedgerHead.genesis
            for (type, jobID, units) in [(ChainJobType.mint, "job-mint", mintedUnits), (.burn, "job-burn", burnedUnits)] {
                for posting in PostingRules.postings(for: type, amountUnits: units) {
                    let entry = LedgerEntry.next(
                        after: head, userID: posting.account == .userToken ? user.id : nil,
                        posting: posting, refType: type, refID: jobID, createdAt: "now")
                    try db.execute(
                        sql: """
                            INSERT INTO core_ledgerentry
                              (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            entry.id, entry.userID, entry.side.rawValue, entry.account.rawValue, entry.amountUnits,
                            entry.refType.rawValue, entry.refID, entry.createdAt, entry.prevHash, entry.entryHash,
                        ])
                    head = LedgerHead(entry)
                }
            }
            try db.execute(sql: "UPDATE core_ledgerhead SET last_id = ?, last_hash = ?", arguments: [head.lastID, head.lastHash])
        }
        func counts() async throws -> [Int] {
            try await store.database.read { db in
                try ["core_chainjob", "core_externaltransaction", "core_ledgerentry", "core_idempotencyrecord"].map {
                    try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \($0)") ?? -1
                }
            }
        }
        let before = try await counts()
        #expect(before == [2, 1, 4, 1])

        try await store.migrate()
        #expect(try await counts() == before)
        let verifier = try await store.verifyLedger()
        #expect(verifier.firstBreak == nil && verifier.entriesChecked == 4)
        #expect(try await store.tokenBalanceUnits(customerID: user.id) == mintedUnits - burnedUnits)
        // The credit's mint is found through the row id v3 filled in: the credit again is a duplicate of it.
        #expect(try await store.apply(credit, via: .poll, inbound: nil) == .duplicate(jobID: "job-mint"))
        #expect(try await store.reconciliationSnapshot().settledCreditsUnminted.isEmpty)
        try await store.database.write { db in
            let burnRow = try Row.fetchOne(db, sql: "SELECT * FROM core_chainjob WHERE id = ?", arguments: [burn.id])
            #expect(burnRow?["payout_provider_tx_id"] == "TX-payout")
            #expect(burnRow?["idempotency_key"] == "key-1")
            // The stored answer kept its key (v4 rebuilt its table), and a second answer, and so a second burn, for the
            // same user, endpoint and key is still refused.
            #expect(
                try String.fetchOne(
                    db,
                    sql: """
                        SELECT response_body FROM core_idempotencyrecord WHERE user_id = ? AND idempotency_key = 'key-1'
                        """, arguments: [user.id]) == #"{"job_id": "job-burn"}"#)
            #expect(throws: DatabaseError.self) {
                try db.execute(
                    sql: """
                        INSERT INTO core_idempotencyrecord (user_id, endpoint, idempotency_key, request_fingerprint, response_status,
                          response_body, created_at)
                        VALUES (?, 'POST /api/redeem', 'key-1', 'fingerprint-2', 201, '{}', 'now')
                        """, arguments: [user.id])
            }
            // The same payout transaction is still refused. Each job has its own chain receipt, so the payout is the
            // only thing wrong with it.
            try db.execute(
                sql: """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                    VALUES ('0xother2', 'burn', 'a', 10000, 'j2', 'now'), ('0xother3', 'burn', 'a', 10000, 'j3', 'now')
                    """)
            #expect(throws: DatabaseError.self) {
                try db.execute(
                    sql: """
                        INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, payout_state,
                                                   payout_provider_tx_id, created_at)
                        VALUES ('j3', 'burn', ?, 10000, 'confirmed', '0xother3', 'submitted', 'TX-payout', 'now')
                        """, arguments: [user.id])
            }
            // With a fresh payout transaction, a burn passes.
            try db.execute(
                sql: """
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, idempotency_key,
                                               payout_state, created_at)
                    VALUES ('j2', 'burn', ?, 10000, 'confirmed', '0xother2', 'key-2', 'requested', 'now')
                    """, arguments: [user.id])
            // A mint never carries a payout transaction.
            #expect(throws: DatabaseError.self) {
                try db.execute(sql: "UPDATE core_chainjob SET payout_provider_tx_id = 'TX-x' WHERE job_type = 'mint'")
            }
        }
    }

    /// Mints add to the balances once per batch. A redeem in the same batch still sees every earlier mint, and a
    /// redeem that fails after writing those mints' balances (so the batch is written again with a savepoint per
    /// job) does not lose them.
    @Test func aBatchsRedeemsSeeItsMintsThroughARolledBackRedeem() async throws {
        let (store, user) = try await Self.storeWithCustomer()
        let mintedUnits = 100_000 * Money.unitsPerPaisa
        let credit = ProviderTransaction(
            providerTxID: "TX-1", account: "WALLET-001", direction: .credit, amountPaisa: 100_000,
            status: .settled, occurredAtMicros: 1_800_000_000_000_000, memo: "", reference: nil)
        func redeem(_ units: Int64, key: String) -> RedeemCommand {
            RedeemCommand(customerID: user.id, amountUnits: units, memo: "", idempotencyKey: key, requestFingerprint: key)
        }
        // The three changes queue in this order while the writer is busy, so that they share one batch.
        let batchesBefore = store.groupCommit.committedBatchCount.load(ordering: .relaxed)
        let isolatedBefore = store.groupCommit.isolatedBatchCount.load(ordering: .relaxed)
        let (mint, tooMuch, all) = try await Self.whileTheWriterIsBusy(store) {
            let mint = Task { try await store.apply(credit, via: .webhook, inbound: nil) }
            try await Task.sleep(for: .milliseconds(50))
            let tooMuch = Task { try await store.redeem(redeem(mintedUnits + Money.unitsPerPaisa, key: "a")) }
            try await Task.sleep(for: .milliseconds(50))
            let all = Task { try await store.redeem(redeem(mintedUnits, key: "b")) }
            return (mint, tooMuch, all)
        }

        guard case .minted = try await mint.value else {
            Issue.record("the credit did not mint")
            return
        }
        await #expect(
            throws: GatewayError.insufficientBalance(availableUnits: mintedUnits, requestedUnits: mintedUnits + Money.unitsPerPaisa)
        ) {
            try await tooMuch.value
        }
        guard case .burned = try await all.value else {
            Issue.record("the redeem of the whole balance did not burn")
            return
        }
        #expect(
            store.groupCommit.committedBatchCount.load(ordering: .relaxed) == batchesBefore + 1,
            "the mint and both redeems shared one batch")
        #expect(
            store.groupCommit.isolatedBatchCount.load(ordering: .relaxed) == isolatedBefore + 1,
            "the failed redeem had written, so the batch was written again with savepoints")
        #expect(try await store.tokenBalanceUnits(customerID: user.id) == 0)
        let chainUnits = try await store.database.read { try ChainStub.totalSupplyUnits($0) }
        #expect(chainUnits == 0)
        let snapshot = try await store.reconciliationSnapshot()
        #expect(snapshot.mintedUnits == mintedUnits && snapshot.burnedUnits == mintedUnits)
        #expect(try await store.verifyLedger().firstBreak == nil)
    }

    /// A mint whose balance row is missing fails after recording its credit. The batch is written again with a
    /// savepoint per job, which undoes that credit alone; its neighbours in the batch commit.
    @Test func aMintWithoutItsBalanceRowFailsAlone() async throws {
        let (store, user) = try await Self.storeWithCustomer()
        try await store.database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO core_user (id, email, display_name, wallet_account, chain_address, created_at)
                    VALUES ('broken', 'broken@pkr.local', 'Broken', 'WALLET-BROKEN', '0xbroken', 'now');
                    INSERT INTO core_tokenbalance (user_id, balance_units) VALUES ('broken', 0);
                    """)
        }
        let batchesBefore = store.groupCommit.committedBatchCount.load(ordering: .relaxed)
        let isolatedBefore = store.groupCommit.isolatedBatchCount.load(ordering: .relaxed)
        let (broken, good) = try await Self.whileTheWriterIsBusy(store) {
            let broken = Task { try await store.apply(Self.credit("TX-broken", account: "WALLET-BROKEN"), via: .webhook, inbound: nil) }
            try await Task.sleep(for: .milliseconds(50))
            let good = Task { try await store.apply(Self.credit("TX-good", account: "WALLET-001"), via: .webhook, inbound: nil) }
            return (broken, good)
        }
        guard case .minted = try await good.value else {
            Issue.record("the good credit did not mint")
            return
        }
        await #expect(throws: ChainStubError.self) { try await broken.value }
        #expect(store.groupCommit.committedBatchCount.load(ordering: .relaxed) == batchesBefore + 1, "one batch held both")
        #expect(store.groupCommit.isolatedBatchCount.load(ordering: .relaxed) == isolatedBefore + 1)
        #expect(try await store.tokenBalanceUnits(customerID: user.id) == 1_000 * Money.unitsPerPaisa)
        #expect(try await store.tokenBalanceUnits(customerID: "broken") == 0)
        let brokenRecorded = try await store.database.read {
            try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM core_externaltransaction WHERE provider_tx_id = 'TX-broken'")
        }
        #expect(brokenRecorded == 0, "the failed mint's credit record was undone with it")
        let snapshot = try await store.reconciliationSnapshot()
        #expect(snapshot.mintedUnits == 1_000 * Money.unitsPerPaisa && snapshot.chainStubUnits == snapshot.mintedUnits)
        #expect(try await store.verifyLedger().firstBreak == nil)
    }

    /// A change that fails before writing anything needs no undoing: the batch is written once, without
    /// savepoints, and its neighbours before and after it commit.
    @Test func aChangeThatFailsBeforeWritingLeavesTheBatchAsItIs() async throws {
        let (store, user) = try await Self.storeWithCustomer()
        let batchesBefore = store.groupCommit.committedBatchCount.load(ordering: .relaxed)
        let isolatedBefore = store.groupCommit.isolatedBatchCount.load(ordering: .relaxed)
        let (before, unknown, after) = try await Self.whileTheWriterIsBusy(store) {
            let before = Task { try await store.apply(Self.credit("TX-before", account: "WALLET-001"), via: .webhook, inbound: nil) }
            try await Task.sleep(for: .milliseconds(50))
            let unknown = Task { try await store.apply(Self.credit("TX-unknown", account: "WALLET-NOBODY"), via: .webhook, inbound: nil) }
            try await Task.sleep(for: .milliseconds(50))
            let after = Task { try await store.apply(Self.credit("TX-after", account: "WALLET-001"), via: .webhook, inbound: nil) }
            return (before, unknown, after)
        }
        for task in [before, after] {
            guard case .minted = try await task.value else {
                Issue.record("a good credit did not mint")
                return
            }
        }
        await #expect(throws: GatewayError.unknownAccount("WALLET-NOBODY")) { try await unknown.value }
        #expect(store.groupCommit.committedBatchCount.load(ordering: .relaxed) == batchesBefore + 1, "one batch held all three")
        #expect(store.groupCommit.isolatedBatchCount.load(ordering: .relaxed) == isolatedBefore, "it was written once")
        #expect(try await store.tokenBalanceUnits(customerID: user.id) == 2_000 * Money.unitsPerPaisa)
        let snapshot = try await store.reconciliationSnapshot()
        #expect(snapshot.mintedUnits == 2_000 * Money.unitsPerPaisa && snapshot.chainStubUnits == snapshot.mintedUnits)
        let verified = try await store.verifyLedger()
        #expect(verified.firstBreak == nil && verified.entriesChecked == 4)
    }

    /// A migrated store whose clock stands still, with the demo user on WALLET-001.
    private static func storeWithCustomer() async throws -> (SQLiteStore, Customer) {
        let path = try temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
        let limits = MoneyLimits(maxMintUnits: 1_000_000_000_000, maxPayoutUnits: 1_000_000_000_000)
        let store = try SQLiteStore(path: path, limits: limits, nowMicros: { 1_800_000_000_000_000 })
        try await store.migrate()
        return (store, try await store.createCustomer(Demo.customer))
    }

    /// A settled credit of 1,000 PKR.
    private static func credit(_ id: String, account: String) -> ProviderTransaction {
        ProviderTransaction(
            providerTxID: id, account: account, direction: .credit, amountPaisa: 1_000, status: .settled,
            occurredAtMicros: 1_800_000_000_000_000, memo: "", reference: nil)
    }

    /// Runs `start` while the writer is held busy, so that the changes it starts queue for one group-commit batch;
    /// returns once the writer is free again.
    private static func whileTheWriterIsBusy<T>(_ store: SQLiteStore, _ start: () async throws -> T) async throws -> T {
        let release = AsyncStream<Void>.makeStream()
        let held = Task {
            try await store.database.writeWithoutTransaction { _ in
                let semaphore = DispatchSemaphore(value: 0)
                Task {
                    for await _ in release.stream {}; semaphore.signal()
                }
                semaphore.wait()
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        let started = try await start()
        try await Task.sleep(for: .milliseconds(50))
        release.continuation.finish()
        try await held.value
        return started
    }

    private func fileBytes(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }
}
