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

    /// Every debit webhook looks up the burn it pays: each condition must be an index lookup, not a read of every
    /// debit already paired (a `NOT IN` list did that, and each webhook cost more as history grew).
    @Test func aDebitFindsItsBurnByIndex() async throws {
        let path = try temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
        let store = try SQLiteStore(path: path, limits: MoneyLimits(maxMintUnits: 1, maxPayoutUnits: 1), nowMicros: { 0 })
        try await store.migrate()
        let plan = try await store.database.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + SQLitePrimitives.unmatchedBurnSQL, arguments: ["job", "tx", 1])
                .map { $0["detail"] as String }
        }
        #expect(!plan.isEmpty)
        #expect(plan.allSatisfy { !$0.hasPrefix("SCAN") && !$0.contains("LIST SUBQUERY") }, "\(plan)")
        #expect(plan.contains { $0.contains("core_externaltransaction_matched_job") }, "\(plan)")
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
        // The redeemed tokens are held at the redemption address until the payout ends.
        let (customerUnits, heldUnits) = try await store.database.read {
            (
                try ChainStub.balanceUnits($0, address: user.chainAddress),
                try ChainStub.balanceUnits($0, address: ChainOperation.redemptionAddress)
            )
        }
        #expect(customerUnits == 0 && heldUnits == mintedUnits)
        let snapshot = try await store.reconciliationSnapshot()
        #expect(snapshot.mintedUnits == mintedUnits && snapshot.burnedUnits == mintedUnits && snapshot.heldUnits == mintedUnits)
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
        let (before, refused, after) = try await Self.whileTheWriterIsBusy(store) {
            let before = Task { try await store.apply(Self.credit("TX-before", account: "WALLET-001"), via: .webhook, inbound: nil) }
            try await Task.sleep(for: .milliseconds(50))
            // A redeem for a customer who does not exist is refused before it writes anything.
            let refused = Task {
                try await store.redeem(
                    RedeemCommand(
                        customerID: "nobody", amountUnits: 100 * Money.unitsPerPaisa, memo: "", idempotencyKey: nil,
                        requestFingerprint: "f"))
            }
            try await Task.sleep(for: .milliseconds(50))
            let after = Task { try await store.apply(Self.credit("TX-after", account: "WALLET-001"), via: .webhook, inbound: nil) }
            return (before, refused, after)
        }
        for task in [before, after] {
            guard case .minted = try await task.value else {
                Issue.record("a good credit did not mint")
                return
            }
        }
        await #expect(throws: GatewayError.unknownCustomer("nobody")) { try await refused.value }
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
