import Foundation
import PKRCore
import PostgresNIO
import Synchronization
import Testing

@testable import PKRApplication
@testable import PKRGateway
@testable import PKRPostgres
@testable import WalletStub

/// The provider's listing is append-only by cursor: a reader that moved past a cursor never meets, later, a
/// transaction at or before it. On PostgreSQL ids come from a sequence, so a transaction that took its id first
/// may commit last; the stub hands ids out under a lock held to the commit, so the ids are in commit order.
@Suite("The provider's listing by cursor")
struct ProviderListingTests {
    @Test(
        "PostgreSQL: a transaction that took its id first and commits last is not skipped by a cursor read meanwhile",
        .enabled(if: TestEngine.postgresAvailable))
    func lateCommitIsNotSkipped() async throws {
        let gateway = try await buildGateway(config: try await testConfig(engine: .postgres), logger: testLogger())
        let stub = try #require(gateway.stub as? PostgresWalletStub)
        let client = try #require(gateway.store as? PostgresStore).client
        try await stub.openAccount("WALLET-L1")
        try await stub.openAccount("WALLET-L2")
        let start = try await stub.transactions(sinceMicros: 0, after: 0, limit: 1000).nextCursor

        let late = ProviderTransaction(
            providerTxID: "TX-late-first", account: "WALLET-L1", direction: .credit, amountPaisa: 1_000, status: .settled,
            occurredAtMicros: SystemClock().nowMicros(), memo: "took its id first")
        let (tookID, tookIDSignal) = AsyncStream.makeStream(of: Void.self)
        let (release, releaseSignal) = AsyncStream.makeStream(of: Void.self)
        // A deposit that takes its id and then waits before committing.
        let slow = Task {
            try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: testLogger())
                try await stub.append(connection, late)
                tookIDSignal.yield()
                for await _ in release { break }
                try await connection.query("COMMIT", logger: testLogger())
            }
        }
        for await _ in tookID { break }
        // A later deposit on another account, and a cursor read while the first is still open.
        let later = Task { try await stub.credit(account: "WALLET-L2", amountPaisa: 2_000, memo: "came second") }
        try await Task.sleep(for: .milliseconds(300))
        let during = try await stub.transactions(sinceMicros: 0, after: start, limit: 1000)
        releaseSignal.yield()
        try await slow.value
        let second = try await later.value
        let after = try await stub.transactions(sinceMicros: 0, after: during.nextCursor, limit: 1000)

        let seen = (during.transactions + after.transactions).map(\.providerTxID)
        #expect(seen.contains(late.providerTxID), "the late commit was skipped by the cursor: \(seen)")
        #expect(seen.contains(second.providerTxID))
        #expect(seen.firstIndex(of: late.providerTxID)! < seen.firstIndex(of: second.providerTxID)!, "listed in id order")
    }
}
