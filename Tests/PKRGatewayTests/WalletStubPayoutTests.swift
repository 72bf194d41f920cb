import Foundation
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

/// The wallet stub pays out once per reference, on both engines, and a refused payout writes nothing.
@Suite("Wallet stub payouts", .serialized)
struct WalletStubPayoutTests {
    @Test(
        "one payout per reference; a conflicting, unfunded or unknown-account payout is refused and writes nothing",
        arguments: TestEngine.all)
    func payoutRules(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "1"])) { _, gateway in
            _ = try await gateway.seedDemo()
            let stub = gateway.walletStub
            let account = Demo.walletAccount
            _ = try await stub.credit(account: account, amountPaisa: 10_000, memo: "reserve")
            let queuedBefore = try await gateway.outbox.countByState()["pending"] ?? 0

            let paid = try await stub.payout(account: account, amountPaisa: 4_000, memo: "cash-out", reference: "job-1")
            #expect(paid.direction == .debit && paid.amountPaisa == 4_000 && paid.reference == "job-1")
            // The same payout again (a retry after a lost answer) is the first one, not a second debit.
            let again = try await stub.payout(account: account, amountPaisa: 4_000, memo: "cash-out", reference: "job-1")
            #expect(again.providerTxID == paid.providerTxID)
            #expect(try await stub.balancePaisa(account: account) == 6_000)
            // With push on, the payout's webhook was queued with it, once.
            #expect(try await gateway.outbox.countByState()["pending"] ?? 0 == queuedBefore + 1)

            await #expect(throws: ProviderError.referenceConflict("job-1")) {
                _ = try await stub.payout(account: account, amountPaisa: 4_100, memo: "cash-out", reference: "job-1")
            }
            await #expect(throws: ProviderError.insufficientFunds(account: account)) {
                _ = try await stub.payout(account: account, amountPaisa: 6_001, memo: "too much", reference: "job-2")
            }
            await #expect(throws: ProviderError.unknownAccount("WALLET-NOBODY")) {
                _ = try await stub.payout(account: "WALLET-NOBODY", amountPaisa: 1, memo: "nobody", reference: "job-3")
            }
            #expect(try await stub.balancePaisa(account: account) == 6_000)
            #expect(try await gateway.outbox.countByState()["pending"] ?? 0 == queuedBefore + 1)
            // A refused reference stays free: the exact balance can still be paid out under it.
            let exact = try await stub.payout(account: account, amountPaisa: 6_000, memo: "all of it", reference: "job-2")
            #expect(exact.amountPaisa == 6_000 && exact.providerTxID != paid.providerTxID)
            #expect(try await stub.balancePaisa(account: account) == 0)
            #expect(try await stub.reservePaisa() == 0)
        }
    }

    @Test(
        "concurrent payouts of one reference pay once; concurrent payouts past the balance are refused, never overdrawn",
        arguments: TestEngine.all)
    func concurrentPayouts(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            _ = try await gateway.seedDemo()
            let stub = gateway.walletStub
            let account = Demo.walletAccount
            _ = try await stub.credit(account: account, amountPaisa: 1_000, memo: "reserve")
            let same = try await concurrently(8) { _ in
                try await stub.payout(account: account, amountPaisa: 100, memo: "same", reference: "same-job").providerTxID
            }
            #expect(Set(same).count == 1)
            // 900 paisa left and 12 payouts of 100 each: exactly nine are paid.
            let outcomes = try await concurrently(12) { index -> Bool in
                do {
                    _ = try await stub.payout(account: account, amountPaisa: 100, memo: "many", reference: "many-\(index)")
                    return true
                } catch ProviderError.insufficientFunds {
                    return false
                }
            }
            #expect(outcomes.filter { $0 }.count == 9)
            #expect(try await stub.balancePaisa(account: account) == 0)
        }
    }
}
