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

/// A PostgreSQL redeem is one call to `pkr_hold`; `pkr_ledger_hash` renders entries as the Swift side does.
@Suite("PostgreSQL: a redeem in one call", .serialized, .enabled(if: TestEngine.postgresAvailable))
struct PostgresBurnTests {
    @Test("pkr_ledger_hash renders an entry exactly as LedgerEntry.computedHash does")
    func serverHashMatchesSwift() async throws {
        try await withApp(try await testConfig(engine: .postgres)) { _, gateway in
            let store = try #require(gateway.store as? PostgresStore)
            let entries = [
                LedgerEntry(
                    id: 1, userID: nil, side: .credit, account: .issuerToken, amountUnits: 1, refType: .burn, refID: "job-1",
                    createdAt: "2026-11-27T03:00:00.000000Z", prevHash: LedgerHead.genesisHash, entryHash: ""),
                LedgerEntry(
                    id: 9_223_372_036_854_775_000, userID: "user-ß-€-🙂", side: .debit, account: .userToken,
                    amountUnits: Int64.max, refType: .burn, refID: "ref|with:separators~", createdAt: "",
                    prevHash: String(repeating: "ab", count: 32), entryHash: ""),
                LedgerEntry(
                    id: 42, userID: "", side: .credit, account: .userToken, amountUnits: 10_000, refType: .mint,
                    refID: "ünïcode", createdAt: "2026-11-27T03:00:00.000001Z", prevHash: String(repeating: "0", count: 64),
                    entryHash: ""),
            ]
            for entry in entries {
                let rows = try await store.client.query(
                    """
                    SELECT pkr_ledger_hash(\(entry.id), \(entry.userID), \(entry.side.rawValue), \(entry.account.rawValue),
                                           \(entry.amountUnits), \(entry.refType.rawValue), \(entry.refID), \(entry.createdAt),
                                           \(entry.prevHash))
                    """, logger: gateway.logger)
                var serverHash: String?
                for try await hash in rows.decode(String.self) { serverHash = hash }
                #expect(serverHash == entry.computedHash(), "entry \(entry.id)")
            }
        }
    }

    @Test("new redeems hold in one call between batched mints; a replay, a too-large redeem and the ledger stay right")
    func burnsInOneCall() async throws {
        try await withApp(try await testConfig(engine: .postgres)) { _, gateway in
            _ = try await gateway.seedDemo()
            let store = try #require(gateway.store as? PostgresStore)
            for index in 0..<3 {
                let credit = MintBatchTests.credit("burn-credit-\(index)", paisa: 10_000)
                #expect(try await gateway.store.apply(credit, via: .poll, inbound: nil).code == "minted")
            }
            let first = try await gateway.redeem(amountUnits: 2_500 * Money.unitsPerPaisa, memo: "one call", idempotencyKey: "burn-key")
            #expect(!first.isReplay && first.receipt.amountUnits == 2_500 * Money.unitsPerPaisa)
            #expect(store.holdOneCallCount.load(ordering: .relaxed) == 1)
            // The same key again finds it taken: the flow replays the stored receipt.
            let again = try await gateway.redeem(amountUnits: 2_500 * Money.unitsPerPaisa, memo: "one call", idempotencyKey: "burn-key")
            #expect(again.isReplay && again.receipt == first.receipt)
            await #expect(throws: GatewayError.idempotencyKeyReused) {
                _ = try await gateway.redeem(amountUnits: 2_600 * Money.unitsPerPaisa, memo: "one call", idempotencyKey: "burn-key")
            }
            // More than the balance: refused with the balance, and nothing of it written.
            let before = try await gateway.reconciliation().snapshot
            let entriesBefore = try await gateway.store.verifyLedger().entriesChecked
            await #expect(
                throws: GatewayError.insufficientBalance(
                    availableUnits: 27_500 * Money.unitsPerPaisa,
                    requestedUnits: 27_600 * Money.unitsPerPaisa)
            ) {
                _ = try await gateway.redeem(amountUnits: 27_600 * Money.unitsPerPaisa, memo: "too much", idempotencyKey: "burn-too-much")
            }
            let after = try await gateway.reconciliation().snapshot
            #expect(
                after.tokenBalanceUnits == before.tokenBalanceUnits && after.burnedUnits == before.burnedUnits
                    && after.chainStubUnits == before.chainStubUnits)
            #expect(try await gateway.store.verifyLedger().entriesChecked == entriesBefore)
            // The refused key was not kept: it can be used for a redeem that fits.
            let fits = try await gateway.redeem(amountUnits: 7_500 * Money.unitsPerPaisa, memo: "fits", idempotencyKey: "burn-too-much")
            #expect(!fits.isReplay && fits.receipt.amountUnits == 7_500 * Money.unitsPerPaisa)
            let unkeyed = try await gateway.redeem(amountUnits: 100 * Money.unitsPerPaisa, memo: "no key", idempotencyKey: nil)
            #expect(!unkeyed.isReplay)
            #expect(store.holdOneCallCount.load(ordering: .relaxed) == 3)
            // A mint after the burns chains after the head they left.
            #expect(
                try await gateway.store.apply(MintBatchTests.credit("burn-credit-3", paisa: 1_000), via: .poll, inbound: nil).code
                    == "minted")

            let report = try await gateway.reconciliation()
            MintBatchTests.expectConsistent(report)
            #expect(report.snapshot.tokenBalanceUnits == (31_000 - 2_500 - 7_500 - 100) * Money.unitsPerPaisa)
            // The provider holds none of this money (the credits were recorded straight into the store), so the payouts
            // are refused for want of funds and the three redemptions stay held: the ledger has the four mints only.
            #expect(report.snapshot.heldUnits == (2_500 + 7_500 + 100) * Money.unitsPerPaisa)
            #expect(try await gateway.store.verifyLedger().entriesChecked == 2 * 4)
            // Paid, a hold is burnt and posted after the head the mints left.
            #expect(
                try await gateway.store.payoutAnswered(jobID: unkeyed.receipt.jobID, providerTxID: "TX-paid", outcome: .debited)
                    == .burnt)
            let verifier = try await gateway.store.verifyLedger()
            #expect(verifier.firstBreak == nil && verifier.entriesChecked == 2 * (4 + 1))
        }
    }
}
