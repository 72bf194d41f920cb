import Foundation
import PKRCore
import Synchronization
import Testing

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite
@testable import WalletStub

/// Concurrent changes share transactions (group commit on SQLite, the mint batch on PostgreSQL); every caller must
/// still get its own answer, exactly as if it had been applied alone.
@Suite("Batched mints answer each change on its own", .serialized)
struct MintBatchTests {
    static func credit(
        _ id: String, paisa: Int64, account: String = Demo.walletAccount, status: TransactionStatus = .settled,
        memo: String = "batch"
    ) -> ProviderTransaction {
        ProviderTransaction(
            providerTxID: id, account: account, direction: .credit, amountPaisa: paisa, status: status,
            occurredAtMicros: SystemClock().nowMicros(), memo: memo)
    }

    static func inbound(_ tx: ProviderTransaction, messageID: String?) -> InboundDraft {
        InboundDraft(
            receivedAtMicros: SystemClock().nowMicros(), messageID: messageID, webhookTimestamp: messageID.map { _ in "1700000000" },
            sourceAddress: nil, scheme: messageID == nil ? nil : .standardV1, verification: "verified", errorCode: nil,
            providerTxID: tx.providerTxID, body: WebhookEvent.encode(tx))
    }

    /// The outcome of one concurrent apply: what it returned, or the error it threw.
    enum Answer: Sendable {
        case outcome(ApplyOutcome)
        case failure(String)

        var minted: ChainJob? {
            if case .outcome(.minted(let job)) = self { return job }
            return nil
        }
    }

    /// Every reconciliation check but the reserve's: these credits were applied straight to the store, so the wallet
    /// stub holds no money for them.
    static func expectConsistent(_ report: ReconciliationReport, sourceLocation: SourceLocation = #_sourceLocation) {
        for check in report.checks where check.name != "supply_equals_reserve" {
            #expect(check.ok, "\(check.name): \(check.detail)", sourceLocation: sourceLocation)
        }
        #expect(report.checks.count > 5, sourceLocation: sourceLocation)
    }

    /// Runs `count` tasks at once; the results come back in index order.
    static func inOrder<T: Sendable>(_ count: Int, _ work: @escaping @Sendable (Int) async throws -> T) async throws -> [T] {
        let pairs = try await concurrently(count) { index in (index, try await work(index)) }
        return pairs.sorted { $0.0 < $1.0 }.map(\.1)
    }

    @Test(
        "40 new credits, 6 deliveries of one more, an unknown account and a value the database refuses, all at once",
        arguments: TestEngine.all)
    func mixedConcurrentWebhooks(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            _ = try await gateway.seedDemo()
            let fresh = (0..<40).map { Self.credit("batch-\($0)", paisa: 100 + Int64($0)) }
            let repeated = Self.credit("batch-repeated", paisa: 5_000)
            let stranger = Self.credit("batch-stranger", paisa: 700, account: "WALLET-NOBODY")
            // PostgreSQL refuses a NUL in text; SQLite stores it. Either way it must not take its neighbours with it.
            let refused = Self.credit("batch-nul", paisa: 900, memo: "nul\u{0}memo")
            let deliveries = fresh + Array(repeating: repeated, count: 6) + [stranger, refused]
            let answers = try await Self.inOrder(deliveries.count) { index -> Answer in
                let tx = deliveries[index]
                do {
                    return .outcome(try await gateway.store.apply(tx, via: .webhook, inbound: Self.inbound(tx, messageID: "msg_\(index)")))
                } catch {
                    return .failure("\(error)")
                }
            }
            for index in fresh.indices {
                let job = try #require(answers[index].minted, "\(answers[index])")
                #expect(job.amountUnits == fresh[index].amountPaisa * Money.unitsPerPaisa)
            }
            let repeatAnswers = answers[fresh.count..<fresh.count + 6]
            #expect(repeatAnswers.compactMap(\.minted).count == 1, "\(repeatAnswers)")
            let mintedRepeat = try #require(repeatAnswers.compactMap(\.minted).first)
            for answer in repeatAnswers where answer.minted == nil {
                guard case .outcome(.duplicate(let jobID)) = answer else {
                    Issue.record("a repeat answered \(answer)")
                    continue
                }
                #expect(jobID == mintedRepeat.id)
            }
            // An account no customer is bound to: recorded, not minted, waiting for an operator.
            guard case .outcome(.recorded(let strangerNote)) = answers[fresh.count + 6] else {
                Issue.record("a credit for an unbound account answered \(answers[fresh.count + 6])")
                return
            }
            #expect(strangerNote.contains("WALLET-NOBODY"))
            let refusedAnswer = answers[fresh.count + 7]
            var mintedPaisa = fresh.map(\.amountPaisa).reduce(0, +) + repeated.amountPaisa
            switch engine {
            case .postgres:
                guard case .failure = refusedAnswer else {
                    Issue.record("PostgreSQL accepted a NUL in text: \(refusedAnswer)")
                    return
                }
                let batch = try #require((gateway.store as? PostgresStore)?.mintBatch)
                #expect(batch.rolledBackCount.load(ordering: .relaxed) >= 1, "the refused credit's batch rolled back")
            case .sqlite:
                #expect(refusedAnswer.minted != nil, "\(refusedAnswer)")
                mintedPaisa += refused.amountPaisa
            }

            let report = try await gateway.reconciliation()
            Self.expectConsistent(report)
            #expect(report.snapshot.mintedUnits == mintedPaisa * Money.unitsPerPaisa)
            #expect(report.snapshot.tokenBalanceUnits == mintedPaisa * Money.unitsPerPaisa)
            #expect(report.snapshot.chainStubUnits == mintedPaisa * Money.unitsPerPaisa)
            let verifier = try await gateway.store.verifyLedger()
            #expect(verifier.firstBreak == nil)
            #expect(verifier.entriesChecked == Int64(2 * (fresh.count + 1 + (engine == .sqlite ? 1 : 0))))
            // Every delivery that reached the store left its inbound-log row, with its own outcome and job.
            let logged = try await gateway.store.inboundLog(limit: 100, beforeID: nil)
            for index in fresh.indices {
                let row = try #require(logged.first { $0.message_id == "msg_\(index)" })
                #expect(row.outcome == "minted")
                #expect(row.job_id == answers[index].minted?.id)
                #expect(row.scheme == WebhookScheme.standardV1.rawValue)
                #expect(row.body_bytes == WebhookEvent.encode(fresh[index]).count)
            }
            #expect(logged.filter { $0.provider_tx_id == repeated.providerTxID }.count == 6)
            let strangerRow = try #require(logged.first { $0.provider_tx_id == stranger.providerTxID })
            #expect(strangerRow.outcome == "recorded" && strangerRow.job_id == nil, "an unbound credit is logged, not minted")
        }
    }

    @Test(
        "PostgreSQL: a polled backlog is written two batches at a time, each after the one chained before it",
        .enabled(if: TestEngine.postgresAvailable))
    func polledBatchesInFlight() async throws {
        try await withApp(try await testConfig(engine: .postgres)) { _, gateway in
            _ = try await gateway.seedDemo()
            let store = try #require(gateway.store as? PostgresStore)
            // The first pass learns the ledger head; the second is 80 batches of up to 128, two in flight.
            try await Benchmark.loadBacklog(gateway, count: 10)
            #expect(try await gateway.reconcileOnce().minted == 10)
            let before = store.mintBatchCounts
            try await Benchmark.loadBacklog(gateway, count: 10_000)
            #expect(try await gateway.reconcileOnce().minted == 10_000)
            let after = store.mintBatchCounts
            // The baton keeps the second of a pair from taking the locks first and being refused (without it, about
            // one batch in twelve to six was). Two connections give no arrival order, so a rare refusal stays possible.
            #expect(after.oneCall - before.oneCall >= 78, "one-call batches: \(after.oneCall - before.oneCall) of 80")
            #expect(after.refused - before.refused <= 2, "refused: \(after.refused - before.refused)")
            #expect(after.rolledBack == before.rolledBack)

            let report = try await gateway.reconciliation()
            Self.expectConsistent(report)
            #expect(report.snapshot.mintedUnits == report.snapshot.tokenBalanceUnits)
            let verifier = try await gateway.store.verifyLedger()
            #expect(verifier.firstBreak == nil && verifier.entriesChecked == 2 * 10_010)
        }
    }

    @Test(
        "PostgreSQL: a batch after the process's own last batch is one call; after a redeem moved the ledger head it is refused and written in a transaction",
        .enabled(if: TestEngine.postgresAvailable))
    func oneCallBatchAndMovedHead() async throws {
        try await withApp(try await testConfig(engine: .postgres)) { _, gateway in
            _ = try await gateway.seedDemo()
            let batch = try #require((gateway.store as? PostgresStore)?.mintBatch)
            func mint(_ id: String) async throws {
                guard
                    case .minted = try await gateway.store.apply(
                        Self.credit(id, paisa: 1_000), via: .webhook,
                        inbound: Self.inbound(Self.credit(id, paisa: 1_000), messageID: id))
                else {
                    Issue.record("\(id) was not minted")
                    return
                }
            }
            func counts() -> (minted: Int, missed: Int, rolledBack: Int, calls: Int) {
                (
                    batch.mintedCount.load(ordering: .relaxed), batch.oneCallMissCount.load(ordering: .relaxed),
                    batch.rolledBackCount.load(ordering: .relaxed), batch.oneCallCount.load(ordering: .relaxed)
                )
            }
            // The first batch learns the head in a transaction; the second chains after it in one call.
            try await mint("one-call-1")
            let afterFirst = counts()
            #expect(afterFirst.calls == 0)
            try await mint("one-call-2")
            #expect(counts().minted == afterFirst.minted + 1 && counts().missed == afterFirst.missed && counts().calls == 1)
            // A paid redemption's burn appends to the ledger on its own: the next batch's head is stale, so the call is
            // refused before it writes, and the transaction path mints instead and learns the new head.
            let redeemed = try await gateway.redeem(amountUnits: 500 * Money.unitsPerPaisa, memo: "", idempotencyKey: "one-call-redeem")
            #expect(
                try await gateway.store.payoutAnswered(jobID: redeemed.receipt.jobID, providerTxID: "TX-one-call", outcome: .debited)
                    == .burnt)
            try await mint("one-call-3")
            #expect(counts().minted == afterFirst.minted + 2 && counts().missed == afterFirst.missed + 1)
            #expect(counts().calls == 1)
            try await mint("one-call-4")
            #expect(counts().minted == afterFirst.minted + 3 && counts().missed == afterFirst.missed + 1 && counts().calls == 2)
            #expect(counts().rolledBack == afterFirst.rolledBack)
            // A credit already recorded is refused by the call too and answered by the full rules.
            let again = try await gateway.store.apply(Self.credit("one-call-4", paisa: 1_000), via: .webhook, inbound: nil)
            #expect(again.code == "duplicate")

            let report = try await gateway.reconciliation()
            Self.expectConsistent(report)
            #expect(report.snapshot.mintedUnits == 4_000 * Money.unitsPerPaisa)
            #expect(report.snapshot.tokenBalanceUnits == 3_500 * Money.unitsPerPaisa)
            let verifier = try await gateway.store.verifyLedger()
            #expect(verifier.firstBreak == nil && verifier.entriesChecked == 10)
            let logged = try await gateway.store.inboundLog(limit: 10, beforeID: nil)
            #expect(logged.filter { $0.outcome == "minted" }.count == 4)
        }
    }

    @Test(
        "a polled page mixes new credits with known, advancing, pending and unknown-account ones; outcomes keep its order",
        arguments: TestEngine.all)
    func polledPage(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            _ = try await gateway.seedDemo()
            let known = Self.credit("poll-known", paisa: 300)
            let pendingFirst = Self.credit("poll-advances", paisa: 400, status: .pending)
            guard case .minted = try await gateway.store.apply(known, via: .webhook, inbound: nil) else {
                Issue.record("setup: the known credit was not minted")
                return
            }
            guard case .recorded = try await gateway.store.apply(pendingFirst, via: .webhook, inbound: nil) else {
                Issue.record("setup: the pending credit was not recorded")
                return
            }
            var settled = pendingFirst
            settled.status = .settled
            let page = [
                Self.credit("poll-new-1", paisa: 101), known, settled, Self.credit("poll-stranger", paisa: 5, account: "WALLET-NOBODY"),
                Self.credit("poll-new-2", paisa: 102), Self.credit("poll-pending", paisa: 7, status: .pending),
            ]
            let batchedBefore = (gateway.store as? PostgresStore)?.mintBatch.mintedCount.load(ordering: .relaxed)
            let outcomes = try await gateway.store.applyPolled(page)
            #expect(outcomes.map(\.code) == ["minted", "duplicate", "minted", "recorded", "minted", "recorded"])
            if let batch = (gateway.store as? PostgresStore)?.mintBatch, let batchedBefore {
                #expect(batch.mintedCount.load(ordering: .relaxed) - batchedBefore == 2, "the two new settled credits were batched")
            }
            let again = try await gateway.store.applyPolled(page)
            #expect(again.map(\.code) == ["duplicate", "duplicate", "duplicate", "duplicate", "duplicate", "duplicate"])
            let report = try await gateway.reconciliation()
            Self.expectConsistent(report)
            #expect(report.snapshot.mintedUnits == (300 + 400 + 101 + 102) * Money.unitsPerPaisa)
            let verifier = try await gateway.store.verifyLedger()
            #expect(verifier.firstBreak == nil)
            #expect(verifier.entriesChecked == 8)
        }
    }
}
