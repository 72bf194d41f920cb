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
            let demo = try await gateway.seedDemo()
            let other = try await store.createCustomer(
                CustomerDraft(email: "batch@example.com", displayName: "Batch", walletAccount: "ACC-BATCH"))
            #expect(try await store.apply(MintBatchTests.credit("batch-demo", paisa: 10_000), via: .poll, inbound: nil).code == "minted")
            #expect(
                try await store.apply(MintBatchTests.credit("batch-other", paisa: 5_000, account: "ACC-BATCH"), via: .poll, inbound: nil)
                    .code == "minted")
            let now = SystemClock().nowMicros()
            let calls = [
                Self.hold(demo.id, paisa: 6_000, key: "k1", at: now),  // held: 4,000 left
                Self.hold(other.id, paisa: 6_000, key: nil, at: now + 1),  // more than 5,000
                Self.hold(demo.id, paisa: 5_000, key: "k2", at: now + 2),  // more than the 4,000 call 1 left
                Self.hold(demo.id, paisa: 3_000, key: nil, at: now + 3),  // held: 1,000 left
                Self.hold(demo.id, paisa: 500, key: "k1", at: now + 4),  // call 1's key
                Self.hold("no-such-customer", paisa: 100, key: "k9", at: now + 5),
                Self.hold(other.id, paisa: 5_000, key: "k3", at: now + 6),  // held: all of it
                Self.hold(demo.id, paisa: 1_000, key: "k2", at: now + 7),  // a key refused earlier in the batch
            ]
            let answers = try await PostgresStore.holdBatch(calls, store.client, logger: gateway.logger)
            #expect(answers.map(\.outcome) == [1, -1, -1, 1, 0, -3, 1, 0])
            #expect(answers.map(\.availableUnits) == [nil, 5_000 * Self.paisa, 4_000 * Self.paisa, nil, nil, nil, nil, nil])
            #expect(answers.map(\.walletAccount) == [demo.walletAccount, nil, nil, demo.walletAccount, nil, nil, "ACC-BATCH", nil])
            #expect(try await store.tokenBalanceUnits(customerID: demo.id) == 1_000 * Self.paisa)
            #expect(try await store.tokenBalanceUnits(customerID: other.id) == 0)
            // Only the held calls' keys are kept, each with its own call's answer.
            var kept: [String] = []
            for try await (key, fingerprint) in try await store.client.query(
                "SELECT idempotency_key, request_fingerprint FROM core_idempotencyrecord ORDER BY idempotency_key", logger: gateway.logger
            ).decode((String, String).self) {
                kept.append("\(key)=\(fingerprint)")
            }
            #expect(kept == ["k1=fingerprint-6000", "k3=fingerprint-5000"])
            // The key refused in the batch was not kept: the next redeem with it is new.
            let fits = try await gateway.redeem(amountUnits: 1_000 * Self.paisa, memo: "after", idempotencyKey: "k2")
            #expect(!fits.isReplay)
            var held = try await gateway.reconciliation()
            MintBatchTests.expectConsistent(held)
            #expect(held.snapshot.heldUnits == (6_000 + 3_000 + 5_000 + 1_000) * Self.paisa)

            let burns = [
                Self.burn(calls[0].job.id, providerTxID: "TX-batch-a"), Self.burn(calls[6].job.id, providerTxID: "TX-batch-b"),
                Self.burn(calls[0].job.id, providerTxID: "TX-batch-c"), Self.burn("no-such-job", providerTxID: "TX-batch-d"),
                Self.burn(calls[3].job.id, providerTxID: "TX-batch-e"),
            ]
            let burnt = try await PostgresStore.burnBatch(burns, store.client, logger: gateway.logger)
            #expect(burnt.map(\.outcome) == [1, 1, 2, 0, 1])
            #expect(burnt.map(\.holdState) == ["burnt", "burnt", "burnt", nil, "burnt"])
            // A job answered twice keeps the first answer's transaction id.
            var payoutIDs: [String] = []
            for try await id in try await store.client.query(
                "SELECT payout_provider_tx_id FROM core_chainjob WHERE id = \(calls[0].job.id)", logger: gateway.logger
            ).decode(String.self) {
                payoutIDs.append(id)
            }
            #expect(payoutIDs == ["TX-batch-a"])
            held = try await gateway.reconciliation()
            MintBatchTests.expectConsistent(held)
            #expect(held.snapshot.heldUnits == 1_000 * Self.paisa && held.snapshot.redemptionAddressUnits == 1_000 * Self.paisa)
            // Redemptions accepted and not released: the three burnt and the one still held.
            #expect(held.snapshot.burnedUnits == (6_000 + 5_000 + 3_000 + 1_000) * Self.paisa)
            // Two mints and three burns, two entries each, chained without a break.
            let verifier = try await store.verifyLedger()
            #expect(verifier.firstBreak == nil && verifier.entriesChecked == 2 * (2 + 3))
            // Burning the last held tokens empties the redemption address, whose row then goes.
            let last = try await PostgresStore.burnBatch(
                [Self.burn(fits.receipt.jobID, providerTxID: "TX-batch-f")], store.client, logger: gateway.logger)
            #expect(last.map(\.outcome) == [1])
            var rows = 0
            for try await _ in try await store.client.query(
                "SELECT 1 FROM chain_stub_chainstubbalance WHERE address = \(ChainOperation.redemptionAddress)", logger: gateway.logger)
            {
                rows += 1
            }
            #expect(rows == 0)
            MintBatchTests.expectConsistent(try await gateway.reconciliation())
            #expect(try await store.verifyLedger().entriesChecked == 2 * (2 + 4))
        }
    }
}
