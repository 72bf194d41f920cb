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

/// The wallet stub pays out once per idempotency key and per reference, on both engines, and a refused payout
/// writes nothing.
@Suite("Wallet stub payouts", .serialized)
struct WalletStubPayoutTests {
    static func request(_ amountPaisa: Int64, _ reference: String, key: String? = nil, memo: String = "cash-out") -> PayoutRequest {
        PayoutRequest(
            account: Demo.walletAccount, amountPaisa: amountPaisa, memo: memo, reference: reference,
            idempotencyKey: key ?? PayoutRequest.idempotencyKey(reference: reference))
    }

    @Test(
        "one payout per key and per reference; a reused key, a conflicting, unfunded or unknown-account payout is refused and writes nothing",
        arguments: TestEngine.all)
    func payoutRules(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "1"])) { _, gateway in
            _ = try await gateway.seedDemo()
            let stub = gateway.stub
            let account = Demo.walletAccount
            _ = try await stub.credit(account: account, amountPaisa: 10_000, memo: "reserve")
            let queuedBefore = try await gateway.stubOutbox.countByState()["pending"] ?? 0

            let (paid, firstReplayed) = try await stub.payout(Self.request(4_000, "job-1"))
            #expect(!firstReplayed && paid.status == .paid && paid.amountPaisa == 4_000 && paid.reference == "job-1")
            let debit = try #require(paid.providerTxID)
            // The same request again (a retry after a lost answer) is the first payout, not a second debit.
            let (again, replayed) = try await stub.payout(Self.request(4_000, "job-1"))
            #expect(replayed && again == paid)
            #expect(try await stub.payout(reference: "job-1") == paid)
            #expect(try await stub.payout(id: paid.id) == paid)
            #expect(try await stub.balancePaisa(account: account) == 6_000)
            // The debit is on the listing with the reference, and its webhook was queued with it, once.
            let listed = try await stub.transactions(sinceMicros: 0, after: 0, limit: 100).transactions
            #expect(listed.filter { $0.providerTxID == debit }.map(\.reference) == ["job-1"])
            #expect(try await gateway.stubOutbox.countByState()["pending"] ?? 0 == queuedBefore + 1)

            let key = PayoutRequest.idempotencyKey(reference: "job-1")
            await #expect(throws: ProviderError.idempotencyKeyReused(key)) {
                _ = try await stub.payout(Self.request(4_100, "job-1"))
            }
            await #expect(throws: ProviderError.referenceConflict("job-1")) {
                _ = try await stub.payout(Self.request(4_000, "job-1", key: "another-key"))
            }
            await #expect(throws: ProviderError.insufficientFunds(account: account)) {
                _ = try await stub.payout(Self.request(6_001, "job-2"))
            }
            await #expect(throws: ProviderError.unknownAccount("WALLET-NOBODY")) {
                _ = try await stub.payout(
                    PayoutRequest(account: "WALLET-NOBODY", amountPaisa: 1, memo: "nobody", reference: "job-3", idempotencyKey: "k-3"))
            }
            #expect(try await stub.balancePaisa(account: account) == 6_000)
            #expect(try await gateway.stubOutbox.countByState()["pending"] ?? 0 == queuedBefore + 1)
            #expect(try await stub.payout(reference: "job-2") == nil)
            // A refused reference and key stay free: the exact balance can still be paid out under them.
            let (exact, _) = try await stub.payout(Self.request(6_000, "job-2"))
            #expect(exact.amountPaisa == 6_000 && exact.providerTxID != paid.providerTxID)
            #expect(try await stub.balancePaisa(account: account) == 0)
            #expect(try await stub.reservePaisa() == 0)
        }
    }

    @Test(
        "concurrent payouts of one key pay once; concurrent payouts past the balance are refused, never overdrawn",
        arguments: TestEngine.all)
    func concurrentPayouts(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            _ = try await gateway.seedDemo()
            let stub = gateway.stub
            let account = Demo.walletAccount
            _ = try await stub.credit(account: account, amountPaisa: 1_000, memo: "reserve")
            let same = try await concurrently(8) { _ in
                try await stub.payout(Self.request(100, "same-job", memo: "same")).payout.id
            }
            #expect(Set(same).count == 1)
            // 900 paisa left and 12 payouts of 100 each: exactly nine are paid.
            let outcomes = try await concurrently(12) { index -> Bool in
                do {
                    _ = try await stub.payout(Self.request(100, "many-\(index)", memo: "many"))
                    return true
                } catch ProviderError.insufficientFunds {
                    return false
                }
            }
            #expect(outcomes.filter { $0 }.count == 9)
            #expect(try await stub.balancePaisa(account: account) == 0)
        }
    }

    @Test(
        "PostgreSQL: concurrent payouts their account covers are written by one statement, each as it would be alone",
        .enabled(if: TestEngine.postgresAvailable))
    func payoutsWrittenTogether() async throws {
        try await withApp(try await testConfig(engine: .postgres, ["PKR_WEBHOOK_PUSH": "1"])) { _, gateway in
            _ = try await gateway.seedDemo()
            let stub = try #require(gateway.stub as? PostgresWalletStub)
            let account = Demo.walletAccount
            _ = try await stub.credit(account: account, amountPaisa: 100_000, memo: "reserve")
            let queuedBefore = try await gateway.stubOutbox.countByState()["pending"] ?? 0
            let batchesBefore = stub.paidTogether.batches.load(ordering: .relaxed)
            // 32 payouts, the last four a retry of the first: 28 references.
            let ids = try await concurrently(32) { index in
                let reference = "together-\(index < 28 ? index : 0)"
                return (reference, try await stub.payout(Self.request(1_000, reference, memo: "together")).payout.id)
            }
            #expect(stub.paidTogether.batches.load(ordering: .relaxed) > batchesBefore, "no batch was written by one statement")
            let idsByReference = Dictionary(grouping: ids, by: \.0).mapValues { Set($0.map(\.1)) }
            #expect(idsByReference.count == 28 && idsByReference.values.allSatisfy { $0.count == 1 }, "\(idsByReference)")
            #expect(try await stub.balancePaisa(account: account) == 100_000 - 28 * 1_000)
            let debits = try await stub.transactions(sinceMicros: 0, after: 0, limit: 1_000).transactions.filter { $0.direction == .debit }
            #expect(debits.count == 28 && Set(debits.compactMap(\.reference)) == Set(idsByReference.keys))
            for (reference, payoutIDs) in idsByReference {
                let payout = try #require(try await stub.payout(reference: reference))
                #expect(payout.status == .paid && payout.amountPaisa == 1_000 && payoutIDs == [payout.id])
                #expect(debits.first { $0.reference == reference }?.providerTxID == payout.providerTxID)
            }
            #expect(try await gateway.stubOutbox.countByState()["pending"] ?? 0 == queuedBefore + 28)
        }
    }
}
