import Foundation
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

/// PostgreSQL's fast paths (the mint batch with `pkr_mint_batch`, `pkr_hold` and `pkr_burn_held`) implement the settlement flow in
/// fewer round trips. The same changes through a fast path and through the flow must leave the same rows.
@Suite("PostgreSQL: fast paths leave what the flow leaves", .serialized, .enabled(if: TestEngine.postgresAvailable))
struct FastPathEquivalenceTests {
    /// The same credits (webhook and poll, new, repeated, pending then settled, held above the ceiling) and redeems
    /// (keyed, replayed, unkeyed, too large) on two fresh databases: one with the fast paths, one without.
    @Test("credits and redeems through the fast paths and through the flow leave the same rows")
    func sameRows() async throws {
        let fast = try await Self.run(fastPaths: true)
        let plain = try await Self.run(fastPaths: false)
        #expect(fast.batchedMints > 0 && fast.holdCalls > 0 && fast.burnCalls > 0 && fast.pairCalls == 1, "the fast paths ran")
        #expect(plain.batchedMints == 0 && plain.holdCalls == 0 && plain.burnCalls == 0 && plain.pairCalls == 0, "the flow ran alone")
        #expect(fast.rows.count == plain.rows.count)
        for (table, (fastRows, plainRows)) in zip(Self.shapeQueries.map(\.table), zip(fast.rows, plain.rows)) {
            #expect(fastRows == plainRows, "\(table)")
        }
    }

    struct Run: Sendable {
        var rows: [[String]]
        var batchedMints: Int
        var holdCalls: Int
        var burnCalls: Int
        var pairCalls: Int
    }

    static func run(fastPaths: Bool) async throws -> Run {
        try await withApp(try await testConfig(engine: .postgres, ["MAX_SINGLE_MINT_PKR": "900.00"])) { _, gateway in
            let store = try #require(gateway.store as? PostgresStore)
            store.mintBatchEnabled.store(fastPaths, ordering: .relaxed)
            store.callFunctionsEnabled.store(fastPaths, ordering: .relaxed)
            _ = try await gateway.seedDemo()
            let credits = (0..<6).map { MintBatchTests.credit("eq-credit-\($0)", paisa: 10_000 + Int64($0) * 100) }
            for (index, credit) in credits.enumerated() {
                let inbound = index.isMultiple(of: 2) ? MintBatchTests.inbound(credit, messageID: "msg_eq_\(index)") : nil
                #expect(try await store.apply(credit, via: inbound == nil ? .poll : .webhook, inbound: inbound).code == "minted")
            }
            // A redelivery, a pending credit that settles, a credit held above the ceiling, a polled page.
            #expect(try await store.apply(credits[0], via: .poll, inbound: nil).code == "duplicate")
            let pending = MintBatchTests.credit("eq-pending", paisa: 5_000, status: .pending)
            #expect(
                try await store.apply(pending, via: .webhook, inbound: MintBatchTests.inbound(pending, messageID: "msg_eq_p")).code
                    == "recorded")
            var settled = pending
            settled.status = .settled
            #expect(try await store.apply(settled, via: .poll, inbound: nil).code == "minted")
            let held = MintBatchTests.credit("eq-held", paisa: 100_000)
            #expect(try await store.apply(held, via: .poll, inbound: nil).code == "recorded")
            let page = (0..<4).map { MintBatchTests.credit("eq-page-\($0)", paisa: 2_000) } + [credits[1]]
            #expect(try await store.applyPolled(page).map(\.code) == ["minted", "minted", "minted", "minted", "duplicate"])

            let first = try await gateway.redeem(amountUnits: 2_500 * Money.unitsPerPaisa, memo: "eq", idempotencyKey: "eq-key")
            let again = try await gateway.redeem(amountUnits: 2_500 * Money.unitsPerPaisa, memo: "eq", idempotencyKey: "eq-key")
            #expect(!first.isReplay && again.isReplay && again.receipt == first.receipt)
            await #expect(throws: GatewayError.idempotencyKeyReused) {
                _ = try await gateway.redeem(amountUnits: 2_600 * Money.unitsPerPaisa, memo: "eq", idempotencyKey: "eq-key")
            }
            let balance = try await gateway.tokenBalanceUnits()
            await #expect(throws: GatewayError.insufficientBalance(availableUnits: balance, requestedUnits: balance + Money.unitsPerPaisa))
            {
                _ = try await gateway.redeem(amountUnits: balance + Money.unitsPerPaisa, memo: "eq", idempotencyKey: "eq-too-much")
            }
            let unkeyed = try await gateway.redeem(amountUnits: 100 * Money.unitsPerPaisa, memo: "eq unkeyed", idempotencyKey: nil)
            let reused = try await gateway.redeem(amountUnits: 300 * Money.unitsPerPaisa, memo: "eq reused", idempotencyKey: "eq-too-much")
            // The provider holds none of this money, so it refused the payouts; the answers are given here. Paid twice
            // (the second finds the hold burnt), refused before any money moved, still pending.
            #expect(try await store.payoutAnswered(jobID: first.receipt.jobID, providerTxID: "TX-eq-1", outcome: .debited) == .burnt)
            #expect(
                try await store.payoutAnswered(jobID: first.receipt.jobID, providerTxID: "TX-eq-1", outcome: .debited)
                    == .alreadyEnded(.burnt))
            #expect(
                try await store.payoutAnswered(jobID: unkeyed.receipt.jobID, providerTxID: "po-eq-2", outcome: .endedBeforeDebit)
                    == .released)
            #expect(
                try await store.payoutAnswered(jobID: unkeyed.receipt.jobID, providerTxID: "TX-eq-2", outcome: .debited)
                    == .alreadyEnded(.released))
            #expect(try await store.payoutAnswered(jobID: reused.receipt.jobID, providerTxID: "po-eq-3", outcome: .inFlight) == .held)
            #expect(try await store.payoutAnswered(jobID: "no-such-job", providerTxID: "TX-eq-4", outcome: .debited) == .noHold)
            MintBatchTests.expectConsistent(try await gateway.reconciliation())
            // The debits the provider lists for them: one paying a burnt redemption (the paired fast path), one paying a
            // redemption still held (burnt by the flow), one of a released redemption and one naming nothing (flagged),
            // and the first again (a duplicate).
            func debit(_ id: String, paisa: Int64, reference: String?) -> ProviderTransaction {
                ProviderTransaction(
                    providerTxID: id, account: Demo.walletAccount, direction: .debit, amountPaisa: paisa, status: .settled,
                    occurredAtMicros: SystemClock().nowMicros(), memo: "payout", reference: reference)
            }
            let debits = [
                debit("TX-eq-1", paisa: 2_500, reference: first.receipt.jobID),
                debit("TX-eq-3", paisa: 300, reference: reused.receipt.jobID),
                debit("TX-eq-2", paisa: 100, reference: unkeyed.receipt.jobID),
                debit("TX-eq-5", paisa: 700, reference: nil),
            ]
            for (index, tx) in debits.enumerated() {
                let inbound = MintBatchTests.inbound(tx, messageID: "msg_eq_debit_\(index)")
                #expect(try await store.apply(tx, via: .webhook, inbound: inbound).code == "recorded")
            }
            #expect(try await store.apply(debits[0], via: .poll, inbound: nil).code == "duplicate")
            // The two debits no held or burnt redemption explains are left to an operator, and only they (the reserve
            // is not checked: the provider holds none of this money).
            let failing = try await gateway.reconciliation().checks.filter { !$0.ok && $0.name != "supply_equals_reserve" }
            #expect(failing.map(\.name) == ["no_unmatched_debits"])
            #expect(failing.first?.detail.contains("\"TX-eq-2\", \"TX-eq-5\"") == true)
            var rows: [[String]] = []
            for query in shapeQueries {
                var table: [String] = []
                for try await text in try await store.client.query(PostgresQuery(unsafeSQL: query.sql), logger: gateway.logger)
                    .decode(String.self)
                {
                    table.append(text)
                }
                rows.append(table)
            }
            return Run(
                rows: rows, batchedMints: store.mintBatch.mintedCount.load(ordering: .relaxed),
                holdCalls: store.holdOneCallCount.load(ordering: .relaxed), burnCalls: store.burnOneCallCount.load(ordering: .relaxed),
                pairCalls: store.pairOneCallCount.load(ordering: .relaxed))
        }
    }

    /// `Timestamp.format` of a microseconds column, in SQL: the text a row's time must read.
    static func rfc3339(_ column: String) -> String {
        "to_char((timestamptz 'epoch' + \(column) * interval '1 microsecond') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    }

    /// Every row the flows write, without the ids, hashes and times that differ from run to run.
    static let shapeQueries: [(table: String, sql: String)] = [
        (
            "core_externaltransaction",
            """
            SELECT concat_ws('|', provider_tx_id, account, direction, amount_paisa, status, memo, first_seen_via, seen_via_webhook,
                             seen_via_poll, coalesce(flag, '-'), matched_job_id IS NOT NULL, user_id IS NOT NULL,
                             coalesce(reference IN (SELECT id FROM core_chainjob), reference IS NULL),
                             occurred_at = \(Self.rfc3339("occurred_at_micros")), recorded_at = \(Self.rfc3339("recorded_at_micros")),
                             matched_job_id IN (SELECT id FROM core_chainjob WHERE payout_provider_tx_id = provider_tx_id))
            FROM core_externaltransaction ORDER BY provider_tx_id
            """
        ),
        (
            "core_chainjob",
            """
            SELECT concat_ws('|', job_type, amount_units, status, memo, coalesce(external_tx_id, '-'),
                             coalesce(idempotency_key, '-'), coalesce(payout_state, '-'), coalesce(payout_provider_tx_id, '-'),
                             tx_hash IN (SELECT tx_hash FROM chain_stub_chainstubreceipt))
            FROM core_chainjob ORDER BY job_type, coalesce(external_tx_id, ''), amount_units
            """
        ),
        (
            "chain_stub_chainstubreceipt",
            """
            SELECT concat_ws('|', op, amount_units, address = '\(ChainOperation.redemptionAddress)', reference IN (SELECT id FROM core_chainjob),
                             reference IN (SELECT id || ':burn' FROM core_chainjob), reference IN (SELECT id || ':release' FROM core_chainjob))
            FROM chain_stub_chainstubreceipt ORDER BY op, amount_units
            """
        ),
        (
            "core_ledgerentry",
            """
            SELECT concat_ws('|', e.side, e.account, e.amount_units, e.ref_type, e.user_id IS NOT NULL, j.amount_units = e.amount_units)
            FROM core_ledgerentry e JOIN core_chainjob j ON j.id = e.ref_id ORDER BY e.id
            """
        ),
        (
            "core_ledgerhead",
            """
            SELECT concat_ws('|', h.last_id, h.last_hash = (SELECT entry_hash FROM core_ledgerentry ORDER BY id DESC LIMIT 1))
            FROM core_ledgerhead h
            """
        ),
        (
            "core_redemptionhold",
            """
            SELECT concat_ws('|', amount_units, state, coalesce(closing_tx_hash IN (SELECT tx_hash FROM chain_stub_chainstubreceipt), false),
                             closed_at IS NOT NULL)
            FROM core_redemptionhold ORDER BY amount_units
            """
        ),
        ("core_tokenbalance", "SELECT balance_units::text FROM core_tokenbalance"),
        ("chain_stub_chainstubbalance", "SELECT balance_units::text FROM chain_stub_chainstubbalance"),
        (
            "core_webhookinbound",
            """
            SELECT concat_ws('|', coalesce(provider_tx_id, '-'), message_id, outcome, coalesce(error, '-'), verification,
                             job_id IS NOT NULL, body_bytes, body IS NOT NULL, coalesce(webhook_timestamp, '-'),
                             coalesce(source_address, '-'), coalesce(scheme, '-'))
            FROM core_webhookinbound ORDER BY provider_tx_id, message_id
            """
        ),
        (
            "core_idempotencyrecord",
            """
            SELECT concat_ws('|', r.idempotency_key, r.endpoint, r.request_fingerprint, r.response_status,
                             r.response_body LIKE '%"job_id": "' || j.id || '"%')
            FROM core_idempotencyrecord r JOIN core_chainjob j ON j.idempotency_key = r.idempotency_key ORDER BY r.idempotency_key
            """
        ),
    ]
}
