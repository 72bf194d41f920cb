import Foundation
import PKRCore
import PostgresNIO
import Testing

@testable import PKRApplication
@testable import PKRGateway
@testable import PKRPostgres

/// `pkr_hold_batch` and `pkr_burn_held_batch` decide a whole batch at once. Each call must get the answer it would
/// have got alone, after the calls before it: a customer's later call sees the balance the earlier ones left, a
/// refused call keeps nothing, and a call repeated within the batch finds the first one's work.
@Suite("PostgreSQL: a batch of redeems decides each call as if alone", .serialized, .enabled(if: TestEngine.postgresAvailable))
struct BatchedRedeemTests {
    static let paisa = Money.unitsPerPaisa

    static func hold(_ customerID: String, paisa: Int64, key: String?, at micros: Int64) -> PostgresStore.HoldCall {
        let job = ChainJob(
            id: Identifiers.timeOrderedUUID(unixMillis: micros / 1000), jobType: .burn, amountUnits: paisa * Self.paisa,
            txHash: Identifiers.chainTxHash(unixMillis: micros / 1000), createdAt: Timestamp.format(micros: micros))
        let command = RedeemCommand(
            customerID: customerID, amountUnits: paisa * Self.paisa, memo: "batch", idempotencyKey: key,
            requestFingerprint: "fingerprint-\(paisa)")
        return PostgresStore.HoldCall(command: command, job: job, responseBody: BurnReceipt(job).storedForm)
    }

    static func burn(_ jobID: String, providerTxID: String) -> PostgresStore.BurnCall {
        let micros = SystemClock().nowMicros()
        return PostgresStore.BurnCall(
            jobID: jobID, providerTxID: providerTxID, txHash: Identifiers.chainTxHash(unixMillis: micros / 1000),
            createdAt: Timestamp.format(micros: micros))
    }

    @Test("holds and paid burns in one batch each: balances, refusals, repeats and the ledger")
    func batchDecidesInOrder() async throws {
        try await withApp(try await testConfig(engine: .postgres)) { _, gateway in
            let store = try #require(gateway.store as? PostgresStore)
            let logger = gateway.logger
            let demo = try await gateway.seedDemo()
            let other = try await store.createCustomer(
                CustomerDraft(email: "batch@example.com", displayName: "Batch", walletAccount: "ACC-BATCH"))
            let short = try await store.createCustomer(
                CustomerDraft(email: "short@example.com", displayName: "Short", walletAccount: "ACC-SHORT"))
            for (id, account, paisa) in [
                ("batch-demo", Demo.walletAccount, 10_000), ("batch-other", "ACC-BATCH", 5_000), ("batch-short", "ACC-SHORT", 1_000),
            ] {
                #expect(
                    try await store.apply(MintBatchTests.credit(id, paisa: Int64(paisa), account: account), via: .poll, inbound: nil).code
                        == "minted")
            }
            // The chain holds less for this customer than the gateway's books: the chain refuses what it cannot cover.
            let shortfall = 500 * Self.paisa
            try await store.client.query(
                "UPDATE chain_stub_chainstubbalance SET balance_units = balance_units - \(shortfall) WHERE address = \(short.chainAddress)",
                logger: logger)
            let now = SystemClock().nowMicros()
            let calls = [
                Self.hold(demo.id, paisa: 6_000, key: "k1", at: now),  // held: 4,000 left
                Self.hold(other.id, paisa: 6_000, key: nil, at: now + 1),  // more than 5,000
                Self.hold(demo.id, paisa: 5_000, key: "k2", at: now + 2),  // more than the 4,000 call 1 left
                Self.hold(demo.id, paisa: 3_000, key: nil, at: now + 3),  // held: 1,000 left
                Self.hold(demo.id, paisa: 500, key: "k1", at: now + 4),  // call 1's key: left to the flow
                Self.hold("no-such-customer", paisa: 100, key: "k9", at: now + 5),
                Self.hold(other.id, paisa: 5_000, key: "k3", at: now + 6),  // held: all of it
                Self.hold(demo.id, paisa: 1_000, key: "k2", at: now + 7),  // call 3's refused key: held, taking it
                Self.hold(short.id, paisa: 800, key: "k5", at: now + 8),  // the chain holds only 500
                Self.hold(short.id, paisa: 400, key: "k4", at: now + 9),  // held
            ]
            let answers = try await PostgresStore.holdBatch(calls, store.client, logger: logger)
            #expect(answers.map(\.outcome) == [1, -1, -1, 1, 0, -3, 1, 1, -2, 1])
            #expect(
                answers.map(\.availableUnits) == [nil, 5_000 * Self.paisa, 4_000 * Self.paisa, nil, nil, nil, nil, nil, nil, nil])
            #expect(
                answers.map(\.walletAccount) == [
                    demo.walletAccount, nil, nil, demo.walletAccount, nil, nil, "ACC-BATCH", demo.walletAccount, nil, "ACC-SHORT",
                ])
            #expect(try await store.tokenBalanceUnits(customerID: demo.id) == 0)
            #expect(try await store.tokenBalanceUnits(customerID: other.id) == 0)
            #expect(try await store.tokenBalanceUnits(customerID: short.id) == 600 * Self.paisa)
            try await store.client.query(
                "UPDATE chain_stub_chainstubbalance SET balance_units = balance_units + \(shortfall) WHERE address = \(short.chainAddress)",
                logger: logger)
            // The held calls' keys are kept, each with the answer of the call that holds it; the refused ones are not.
            var kept: [String] = []
            for try await (key, fingerprint, body) in try await store.client.query(
                "SELECT idempotency_key, request_fingerprint, response_body FROM core_idempotencyrecord ORDER BY idempotency_key",
                logger: logger
            ).decode((String, String, String).self) {
                kept.append("\(key)=\(fingerprint)")
                let holder = try #require(calls.first { $0.command.idempotencyKey == key && $0.command.requestFingerprint == fingerprint })
                #expect(body == holder.responseBody, "\(key)")
            }
            #expect(kept == ["k1=fingerprint-6000", "k2=fingerprint-1000", "k3=fingerprint-5000", "k4=fingerprint-400"])
            var held = try await gateway.reconciliation()
            MintBatchTests.expectConsistent(held)
            #expect(held.snapshot.heldUnits == (6_000 + 3_000 + 5_000 + 1_000 + 400) * Self.paisa)

            let burns = [
                Self.burn(calls[0].job.id, providerTxID: "TX-batch-a"), Self.burn(calls[6].job.id, providerTxID: "TX-batch-b"),
                Self.burn(calls[0].job.id, providerTxID: "TX-batch-c"), Self.burn("no-such-job", providerTxID: "TX-batch-d"),
                Self.burn(calls[3].job.id, providerTxID: "TX-batch-e"),
            ]
            let burnt = try await PostgresStore.burnBatch(burns, store.client, logger: logger)
            #expect(burnt.map(\.outcome) == [1, 1, 2, 0, 1])
            #expect(burnt.map(\.holdState) == ["burnt", "burnt", "burnt", nil, "burnt"])
            // A job answered twice keeps the first answer's transaction id.
            var payoutIDs: [String] = []
            for try await id in try await store.client.query(
                "SELECT payout_provider_tx_id FROM core_chainjob WHERE id = \(calls[0].job.id)", logger: logger
            ).decode(String.self) {
                payoutIDs.append(id)
            }
            #expect(payoutIDs == ["TX-batch-a"])
            // The burns are posted in call order, two entries each.
            var postedJobs: [String] = []
            for try await refID in try await store.client.query(
                "SELECT ref_id FROM core_ledgerentry WHERE ref_type = 'burn' ORDER BY id", logger: logger
            ).decode(String.self) {
                postedJobs.append(refID)
            }
            #expect(postedJobs == [0, 0, 6, 6, 3, 3].map { calls[$0].job.id })
            held = try await gateway.reconciliation()
            MintBatchTests.expectConsistent(held)
            #expect(held.snapshot.heldUnits == 1_400 * Self.paisa && held.snapshot.redemptionAddressUnits == 1_400 * Self.paisa)
            // Redemptions accepted and not released: the three burnt and the two still held.
            #expect(held.snapshot.burnedUnits == (6_000 + 5_000 + 3_000 + 1_000 + 400) * Self.paisa)
            // Three mints and three burns, two entries each, chained without a break.
            let verifier = try await store.verifyLedger()
            #expect(verifier.firstBreak == nil && verifier.entriesChecked == 2 * (3 + 3))
            // Burning the last held tokens empties the redemption address, whose row then goes.
            let last = try await PostgresStore.burnBatch(
                [Self.burn(calls[7].job.id, providerTxID: "TX-batch-f"), Self.burn(calls[9].job.id, providerTxID: "TX-batch-g")],
                store.client, logger: logger)
            #expect(last.map(\.outcome) == [1, 1])
            var rows = 0
            for try await _ in try await store.client.query(
                "SELECT 1 FROM chain_stub_chainstubbalance WHERE address = \(ChainOperation.redemptionAddress)", logger: logger)
            {
                rows += 1
            }
            #expect(rows == 0)
            MintBatchTests.expectConsistent(try await gateway.reconciliation())
            #expect(try await store.verifyLedger().entriesChecked == 2 * (3 + 5))
        }
    }

    @Test("a paid debit delivered by webhook and polled at once is recorded and paired once")
    func debitTwiceAtOnce() async throws {
        try await withApp(try await testConfig(engine: .postgres)) { _, gateway in
            let store = try #require(gateway.store as? PostgresStore)
            let logger = gateway.logger
            let demo = try await gateway.seedDemo()
            #expect(try await store.apply(MintBatchTests.credit("race-credit", paisa: 10_000), via: .poll, inbound: nil).code == "minted")
            let now = SystemClock().nowMicros()
            let holds = (0..<8).map { Self.hold(demo.id, paisa: 100, key: nil, at: now + Int64($0)) }
            #expect(try await PostgresStore.holdBatch(holds, store.client, logger: logger).map(\.outcome) == Array(repeating: 1, count: 8))
            let burns = holds.indices.map { Self.burn(holds[$0].job.id, providerTxID: "TX-race-\($0)") }
            #expect(try await PostgresStore.burnBatch(burns, store.client, logger: logger).map(\.outcome) == Array(repeating: 1, count: 8))
            for (index, hold) in holds.enumerated() {
                let debit = ProviderTransaction(
                    providerTxID: "TX-race-\(index)", account: Demo.walletAccount, direction: .debit, amountPaisa: 100, status: .settled,
                    occurredAtMicros: now, memo: "payout", reference: hold.job.id)
                async let pushed = store.apply(debit, via: .webhook, inbound: MintBatchTests.inbound(debit, messageID: "msg_race_\(index)"))
                async let polled = store.applyPolled([debit])
                let codes = [try await pushed.code, try await polled.map(\.code).first ?? "-"].sorted()
                #expect(codes == ["duplicate", "recorded"], "debit \(index)")
            }
            let report = try await gateway.reconciliation()
            MintBatchTests.expectConsistent(report)
            #expect(report.snapshot.heldUnits == 0)
            var matched = 0
            for try await count in try await store.client.query(
                "SELECT count(*) FROM core_externaltransaction WHERE direction = 'debit' AND matched_job_id IS NOT NULL", logger: logger
            ).decode(Int64.self) {
                matched = Int(count)
            }
            #expect(matched == 8)
        }
    }
}
