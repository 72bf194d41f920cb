import PKRApplication
import PKRCore
import PKRGateway

/// Many customers and a long history, for the questions an issuer sizing hardware asks: does a mint or a redeem
/// cost more when the customers are many, and when the database holds millions of past transactions?
extension Benchmark {
    /// Deposits one provider transaction records at most when growing the history: a block per account.
    static let historyBlockDepositsMax = 10_000
    /// Deposits one reconciler pass mints at most when growing the history. A pass keeps the ids of what it minted,
    /// so an unbounded one would hold millions of them.
    static let historyPassDepositsMax = 100_000
    /// What each deposit of the grown history is: 1.00 PKR, as the mint workload's.
    public static let historyDepositPaisa: Int64 = 100

    /// The demo customer, then `count - 1` new customers, each bound to a provider account of its own through
    /// `POST /api/users` on the server as an operator would (the server has its provider open the account). Their ids
    /// are read back through the gateway's store.
    public static func bindCustomers(_ gateway: Gateway, port: Int, count: Int) async throws -> [Customer] {
        precondition(count >= 1, "the demo customer is always one")
        let drafts = (1..<count).map {
            CustomerDraft(email: "bench-\($0)@pkr.local", displayName: "Bench \($0)", walletAccount: "BENCH-\($0)")
        }
        if !drafts.isEmpty {
            let created = try await drive(port: port, requests: drafts.map(userRequest), concurrency: min(16, drafts.count))
            guard created.okCount == drafts.count else { throw BenchmarkError.customersNotBound(created.nonSuccess) }
        }
        var customers = [try await gateway.currentCustomer()]
        for draft in drafts {
            guard let customer = try await gateway.store.customer(email: draft.email) else {
                throw BenchmarkError.customersNotBound(1)
            }
            customers.append(customer)
        }
        return customers
    }

    static func userRequest(_ draft: CustomerDraft) -> Request {
        let body = JSONText.object([
            ("email", .string(draft.email)), ("wallet_account", .string(draft.walletAccount)), ("display_name", .string(draft.displayName)),
        ])
        return Request(method: .POST, path: "/api/users", headers: browserHeaders(idempotencyKey: nil), body: Array(body.utf8))
    }

    /// Credits `account` with one deposit whose webhook is lost and mints it by a reconciler pass: money for
    /// redeems that the mint workload does not bring (it spreads its deposits over every customer).
    public static func fund(_ gateway: Gateway, account: String, amountPaisa: Int64) async throws {
        try await providerStore(gateway).recordUnannouncedDeposits(account: account, amountsPaisa: [amountPaisa], memo: "bench funding")
        let result = try await withLocalProvider(gateway) { try await gateway.ingest(sinceMicros: nil) }
        guard result.minted == 1 else { throw BenchmarkError.historyNotMinted(expected: 1, minted: result.minted) }
    }

    /// Where growing the history spent its time: the provider recording the deposits, and the reconciler's passes
    /// reading its listing and minting them.
    public struct HistoryTiming: Sendable {
        public var recordMicros: Int64 = 0
        public var mintMicros: Int64 = 0
    }

    /// Grows the history by `count` deposits of 1.00 PKR spread evenly over `accounts`, through the paths a real
    /// outage's backlog takes: the provider records them with their webhooks lost, and reconciler passes (the
    /// gateway's batch path) record and mint them. `progress` hears the deposits minted so far.
    public static func growHistory(
        _ gateway: Gateway, accounts: [String], count: Int, progress: @escaping @Sendable (Int) -> Void = { _ in }
    ) async throws -> HistoryTiming {
        let provider = try providerStore(gateway)
        let blocks = historyBlocks(accounts: accounts, count: count)
        let clock = SystemClock()
        let timing = try await withLocalProvider(gateway) {
            var timing = HistoryTiming()
            var recorded = 0
            var minted = 0
            for (index, block) in blocks.enumerated() {
                let amounts = [Int64](repeating: historyDepositPaisa, count: block.count)
                let recordStarted = clock.nowMicros()
                try await provider.recordUnannouncedDeposits(account: block.account, amountsPaisa: amounts, memo: "history")
                timing.recordMicros += clock.nowMicros() - recordStarted
                recorded += block.count
                guard recorded - minted >= historyPassDepositsMax || index == blocks.count - 1 else { continue }
                let mintStarted = clock.nowMicros()
                minted += try await gateway.ingest(sinceMicros: nil).minted
                timing.mintMicros += clock.nowMicros() - mintStarted
                guard minted == recorded else { throw BenchmarkError.historyNotMinted(expected: recorded, minted: minted) }
                progress(minted)
            }
            return timing
        }
        try await gateway.store.checkpoint()
        return timing
    }

    /// Each account's share of `count` deposits (the first `count % accounts.count` one more), cut into blocks of at
    /// most `historyBlockDepositsMax`, one provider transaction each.
    static func historyBlocks(accounts: [String], count: Int) -> [(account: String, count: Int)] {
        var blocks: [(account: String, count: Int)] = []
        for (index, account) in accounts.enumerated() {
            var share = count / accounts.count + (index < count % accounts.count ? 1 : 0)
            while share > 0 {
                let block = min(share, historyBlockDepositsMax)
                blocks.append((account, block))
                share -= block
            }
        }
        return blocks
    }

    /// Records `count` deposits of 1.00 PKR at the provider, never pushed, spread round-robin over `accounts`:
    /// one provider transaction per account.
    static func recordRoundRobin(_ gateway: Gateway, accounts: [String], count: Int) async throws {
        for (index, account) in accounts.enumerated() {
            let share = count / accounts.count + (index < count % accounts.count ? 1 : 0)
            guard share > 0 else { continue }
            let amounts = [Int64](repeating: historyDepositPaisa, count: share)
            try await providerStore(gateway).recordUnannouncedDeposits(account: account, amountsPaisa: amounts, memo: "bench")
        }
        try await gateway.store.checkpoint()
    }

    /// `transactions` reordered so that consecutive ones go to consecutive accounts, as `recordRoundRobin` dealt them:
    /// every connection of the load generator, which takes a contiguous slice, then reaches every customer.
    static func roundRobin(_ transactions: [ProviderTransaction], accounts: [String]) -> [ProviderTransaction] {
        let byAccount = Dictionary(grouping: transactions, by: \.account)
        let queues = accounts.map { byAccount[$0] ?? [] }
        let rounds = queues.map(\.count).max() ?? 0
        return (0..<rounds).flatMap { round in queues.compactMap { round < $0.count ? $0[round] : nil } }
    }
}
