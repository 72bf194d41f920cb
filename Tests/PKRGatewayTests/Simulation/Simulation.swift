import Foundation
import GRDB
import Logging
import PKRCore
import Synchronization
import WalletStub

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite

/// The simulation's one source of randomness, shared by the network, the provider and the script.
final class SimRandom: Sendable {
    private let generator: Mutex<SplitMix64>

    init(seed: UInt64) { generator = Mutex(SplitMix64(seed: seed)) }

    func int(_ range: ClosedRange<Int64>) -> Int64 { generator.withLock { Int64.random(in: range, using: &$0) } }
    func index(_ count: Int) -> Int { generator.withLock { Int.random(in: 0..<count, using: &$0) } }
    func percent(_ chance: Int) -> Bool { int(0...99) < chance }

    /// Picks one of the cases by weight.
    func weighted<T>(_ choices: [(Int, T)]) -> T {
        let total = choices.reduce(0) { $0 + $1.0 }
        var roll = Int(int(0...Int64(total - 1)))
        for (weight, choice) in choices {
            if roll < weight { return choice }
            roll -= weight
        }
        return choices[choices.count - 1].1
    }
}

/// Time moves only when the simulation says so.
final class SimClock: GatewayClock {
    private let micros: Mutex<Int64>

    init(startMicros: Int64) { micros = Mutex(startMicros) }

    func nowMicros() -> Int64 { micros.withLock { $0 } }
    func advance(byMicros delta: Int64) { micros.withLock { $0 += delta } }
}

/// The provider as the gateway sees it, with outages and lost payout answers.
final class SimProvider: WalletProvider {
    struct State {
        var down = false
        /// Once the faults stop, payouts are paid at once and answered.
        var calm = false
        /// Payouts the provider made whose answer the gateway never saw: burn job id and amount.
        var lostPayouts: [(jobID: String, paisa: Int64)] = []
        var payoutTxIDs: [String] = []
        /// Payouts that are paid, which the bank may still return.
        var paid: [Payout] = []
        /// The credits that put failed and returned payouts' money back.
        var reversals: [ProviderTransaction] = []
        /// Payouts left pending (their debit pending), which the provider will pay, fail or cancel later.
        var pending: [Payout] = []
        /// Payouts that ended before their money left (failed or cancelled while pending): burn job id and amount.
        var endedBeforeDebit: [(jobID: String, paisa: Int64)] = []
    }

    let inner: any WalletProvider
    /// The stub behind `inner`, for what only the provider itself does: fail a payout after its debit, return one.
    let store: any WalletStubStore
    let random: SimRandom
    let state = Mutex(State())

    init(store: any WalletStubStore, random: SimRandom) {
        self.inner = DirectProvider(store: store)
        self.store = store
        self.random = random
    }

    /// The reversal credit a failed or returned payout made, as the provider lists it.
    static func reversal(of payout: Payout) -> ProviderTransaction? {
        guard let id = payout.reversalProviderTxID else { return nil }
        return ProviderTransaction(
            providerTxID: id, account: payout.account, direction: .credit, amountPaisa: payout.amountPaisa, status: .settled,
            occurredAtMicros: payout.updatedAtMicros, memo: "payout \(payout.id) \(payout.status.rawValue)",
            reference: PayoutReversal.reference(payoutReference: payout.reference, status: payout.status))
    }

    /// A pending payout moves on: processing, paid, failed or cancelled. `all` ends every one still open (paid).
    func advanceOne(all: Bool = false) async throws -> String {
        var notes: [String] = []
        while let candidate = state.withLock({ $0.pending.isEmpty ? nil : $0.pending.remove(at: random.index($0.pending.count)) }) {
            // Only a pending payout may start processing or be cancelled.
            var choices: [(Int, PayoutStatus)] = [(5, .paid), (2, .failed)]
            if candidate.status == .pending { choices += [(2, .processing), (2, .canceled)] }
            let next: PayoutStatus = all ? .paid : random.weighted(choices)
            let moved = try await store.advancePayout(id: candidate.id, to: next, failureCode: nil)
            state.withLock {
                switch next {
                case .processing: $0.pending.append(moved)
                case .paid: $0.paid.append(moved)
                default:
                    $0.endedBeforeDebit.append((candidate.reference, candidate.amountPaisa))
                    // Its money is back: a lost answer no longer stands for money that left.
                    $0.lostPayouts.removeAll { $0.jobID == candidate.reference }
                }
            }
            notes.append("\(candidate.reference) \(next.rawValue)")
            if !all { break }
        }
        return notes.isEmpty ? "nothing pending" : notes.joined(separator: ", ")
    }

    /// The bank sends a paid payout back.
    func returnOne() async throws -> String {
        guard let candidate = state.withLock({ $0.paid.isEmpty ? nil : $0.paid.remove(at: random.index($0.paid.count)) }) else {
            return "nothing paid to return"
        }
        let returned = try await store.returnPayout(id: candidate.id)
        if let reversal = Self.reversal(of: returned) { state.withLock { $0.reversals.append(reversal) } }
        return "\(candidate.reference) returned"
    }

    func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage {
        if state.withLock({ $0.down }) { throw GatewayError.providerUnavailable("simulated provider outage") }
        return try await inner.transactions(sinceMicros: sinceMicros, after: cursor, limit: limit)
    }

    func payout(_ request: PayoutRequest) async throws -> Payout {
        if state.withLock({ $0.down }) { throw GatewayError.providerUnavailable("simulated provider outage") }
        // One payout in ten fails: half refused before any money moves, half after the debit.
        let calm = state.withLock { $0.calm }
        let failing = !calm && random.percent(10) ? PayoutFailure(code: .railRejected, afterDebit: random.percent(50)) : nil
        // Some payouts stay pending: the provider pays, fails or cancels them later.
        let pending = !calm && failing == nil && random.percent(15)
        let (payout, replayed) = try await store.payout(request, failing: failing, pending: pending)
        if !replayed {
            state.withLock {
                if payout.status == .pending { $0.pending.append(payout) }
                if payout.status == .paid { $0.paid.append(payout) }
                if let reversal = Self.reversal(of: payout) { $0.reversals.append(reversal) }
            }
        }
        let lost = !calm && random.percent(10)
        state.withLock {
            // A payout refused before its debit moved no money and is on no listing.
            guard let txID = payout.providerTxID else { return }
            if !$0.payoutTxIDs.contains(txID) { $0.payoutTxIDs.append(txID) }
            if lost, !$0.lostPayouts.contains(where: { $0.jobID == request.reference }) {
                $0.lostPayouts.append((request.reference, request.amountPaisa))
            }
        }
        // The provider acted, but its answer never reached the gateway: the reconciler must finish the job.
        if lost { throw GatewayError.providerUnavailable("simulated lost payout answer") }
        // Now and then the provider answers before the payout settles: the gateway keeps the tokens held until the
        // debit arrives or the reconciler asks again.
        if !calm && payout.status == .paid && random.percent(15) {
            var early = payout
            early.status = .processing
            early.providerTxID = nil
            return early
        }
        return payout
    }

    /// Outages hit the listing and payouts, where the gateway must heal; opening an account is an operator's call,
    /// retried by the operator.
    func openAccount(_ accountNo: String) async throws { try await inner.openAccount(accountNo) }

    func deposit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction {
        try await inner.deposit(account: account, amountPaisa: amountPaisa, memo: memo)
    }

    func payout(reference: String) async throws -> Payout? { try await inner.payout(reference: reference) }

    func reservePaisa() async throws -> Int64 { try await inner.reservePaisa() }
}

/// The wire between the wallet stub's dispatcher and the gateway's receiver: it drops, duplicates, delays
/// (and so reorders) deliveries and loses answers, as chosen by the seed.
final class SimNetwork: WebhookTransport {
    struct State {
        var healthy = false
        var delayed: [SignedWebhook] = []
        var captured: [SignedWebhook] = []
        var faults: [String] = []
        var trace: [String] = []
    }

    static let capturedMax = 64

    let random: SimRandom
    let clock: SimClock
    let gateway: Gateway
    let state = Mutex(State())

    init(random: SimRandom, clock: SimClock, gateway: Gateway) {
        self.random = random
        self.clock = clock
        self.gateway = gateway
    }

    enum Fate: String {
        case deliver, dropRequest = "drop request", loseAnswer = "lose answer", delay, duplicate
    }

    func send(_ webhook: SignedWebhook) async -> WebhookAttemptResult {
        let healthy = state.withLock { $0.healthy }
        let fate: Fate =
            healthy
            ? .deliver
            : random.weighted([
                (55, .deliver), (12, .dropRequest), (10, .loseAnswer),
                (13, .delay), (10, .duplicate),
            ])
        state.withLock {
            $0.trace.append("  send \(webhook.messageID) -> \(fate.rawValue)")
            $0.captured.append(webhook)
            if $0.captured.count > Self.capturedMax { $0.captured.removeFirst() }
        }
        switch fate {
        case .deliver:
            return WebhookAttemptResult(httpStatus: await receive(webhook), failure: nil)
        case .dropRequest:
            return WebhookAttemptResult(httpStatus: nil, failure: "simulated: connection refused")
        case .loseAnswer:
            _ = await receive(webhook)
            return WebhookAttemptResult(httpStatus: nil, failure: "simulated: connection reset before the answer")
        case .delay:
            state.withLock { $0.delayed.append(webhook) }
            return WebhookAttemptResult(httpStatus: nil, failure: "simulated: timed out")
        case .duplicate:
            _ = await receive(webhook)
            return WebhookAttemptResult(httpStatus: await receive(webhook), failure: nil)
        }
    }

    func shutdown() async throws {}

    /// Hands one delivery to the gateway as its HTTP route would and returns the status the route would answer.
    func receive(_ webhook: SignedWebhook) async -> Int {
        let headers = WebhookHeaders(
            id: webhook.messageID, timestamp: String(webhook.timestampSeconds),
            signature: webhook.signature)
        do {
            let outcome = try await gateway.receiveWebhook(
                Gateway.WebhookDelivery(
                    headers: headers, body: webhook.body, sourceAddress: "192.0.2.1", receivedAtMicros: clock.nowMicros()))
            state.withLock { $0.trace.append("  receive \(webhook.messageID): 200 \(outcome.code)") }
            return 200
        } catch let error as GatewayError {
            let status = Int(ErrorMapping.status(for: error).code)
            state.withLock { $0.trace.append("  receive \(webhook.messageID): \(status) \(error.code)") }
            return status
        } catch {
            state.withLock { $0.faults.append("the receiver failed with an untyped error: \(error)") }
            return 500
        }
    }

    /// Delivers one delayed request now, after others overtook it.
    func deliverDelayed() async -> String {
        let webhook: SignedWebhook? = state.withLock {
            $0.delayed.isEmpty ? nil : $0.delayed.remove(at: random.index($0.delayed.count))
        }
        guard let webhook else { return "nothing delayed" }
        return "delivered late: \(await receive(webhook))"
    }
}

struct SimulationFailure: Error, CustomStringConvertible {
    var seed: UInt64
    var step: Int
    var message: String
    var trace: [String]

    var description: String {
        """
        simulation seed \(seed) failed at step \(step): \(message)
        replay: PKR_SIM_SEED=\(seed) swift test --skip-build --filter SimulationTests
        last steps:
        \(trace.suffix(40).joined(separator: "\n"))
        """
    }
}

/// One seeded run: provider, dispatcher, network, gateway and reconciler, interleaved step by step on one task,
/// with every invariant checked after every step and convergence checked once the faults stop.
final class Simulation {
    static let startMicros: Int64 = 1_767_225_600 * Timestamp.microsPerSecond
    static let retryScheduleMillis: [Int64] = [1000, 5000, 30_000]
    static let mintCeilingPaisa: Int64 = 10_000_000

    let seed: UInt64
    let stepCount: Int
    let random: SimRandom
    let clock: SimClock
    let gateway: Gateway
    let provider: SimProvider
    let network: SimNetwork
    let dispatcher: WebhookDispatcher

    /// Besides the demo customer's account: one bound from the start, and one nobody holds until an operator binds it.
    static let boundAccount = "WALLET-S1"
    static let laterAccount = "WALLET-S2"

    /// What the provider really holds, in the order it happened.
    private var credits: [ProviderTransaction] = []
    private var redeemKeys: [(key: String, customerID: String, amountUnits: Int64, memo: String, receipt: BurnReceipt)] = []
    /// Provider account → the customer bound to it, as the operator set them up.
    private var customers: [String: String] = [:]
    private var trace: [String] = []
    private var step = 0

    private init(
        seed: UInt64, stepCount: Int, random: SimRandom, clock: SimClock, gateway: Gateway, provider: SimProvider,
        network: SimNetwork, dispatcher: WebhookDispatcher
    ) {
        self.seed = seed
        self.stepCount = stepCount
        self.random = random
        self.clock = clock
        self.gateway = gateway
        self.provider = provider
        self.network = network
        self.dispatcher = dispatcher
    }

    static func make(seed: UInt64, stepCount: Int) async throws -> Simulation {
        let random = SimRandom(seed: seed)
        let clock = SimClock(startMicros: startMicros)
        let config = try await testConfig(
            engine: .sqlite,
            [
                "PKR_WEBHOOK_PUSH": "1",
                "MAX_SINGLE_MINT_PKR": Money.formatPaisa(mintCeilingPaisa),
                "PKR_WEBHOOK_RETRY_SCHEDULE_MS": retryScheduleMillis.map(String.init).joined(separator: ","),
            ])
        let built = try await buildGateway(config: config, clock: clock, logger: testLogger())
        guard let local = built.localProvider else { throw BenchmarkError.noLocalProvider }
        let provider = SimProvider(store: local.store, random: random)
        let gateway = Gateway(
            config: config, store: built.store, provider: provider, localProvider: local, clock: clock, logger: built.logger)
        let demo = try await gateway.seedDemo()
        let bound = try await gateway.createCustomer(
            CustomerDraft(email: "s1@sim.example", displayName: "S1", walletAccount: boundAccount))
        try await gateway.stub.openAccount(laterAccount)
        let network = SimNetwork(random: random, clock: clock, gateway: gateway)
        let dispatcher = WebhookDispatcher(
            outbox: local.outbox, signal: WakeSignal(), secret: devSecret, scheduleMillis: retryScheduleMillis, clock: clock,
            transport: network, jitter: { millis in millis * random.int(80...120) / 100 }, logger: testLogger())
        let simulation = Simulation(
            seed: seed, stepCount: stepCount, random: random, clock: clock, gateway: gateway,
            provider: provider, network: network, dispatcher: dispatcher)
        simulation.customers = [Demo.walletAccount: demo.id, boundAccount: bound.customer.id]
        return simulation
    }

    enum Action: String, CaseIterable {
        case deposit, dispatch, deliverDelayed = "deliver delayed", advanceClock = "advance clock", reconcile, redeem
        case replayRedeem = "replay redeem", conflictingReplay = "conflicting replay", pendingCopy = "pending copy"
        case forged, staleReplay = "stale replay", providerOutage = "provider outage", operatorRetry = "operator retry"
        case bindAccount = "bind account", mintUnbound = "mint unbound", returnPayout = "return payout"
        case advancePayout = "advance payout"
    }

    /// A claimed batch sent one delivery after another, so that a seed replays exactly; its attempts are recorded
    /// together, as the dispatcher records a batch.
    func deliverInOrder(_ due: [OutboxDelivery]) async {
        var attempts: [OutboxAttempt] = []
        for delivery in due { attempts.append(await dispatcher.attempt(delivery)) }
        await dispatcher.record(attempts)
    }

    func run() async throws {
        for index in 1...stepCount {
            step = index
            let action = random.weighted([
                (16, Action.deposit), (20, .dispatch), (6, .deliverDelayed), (12, .advanceClock), (6, .reconcile),
                (10, .redeem), (4, .replayRedeem), (4, .conflictingReplay), (4, .pendingCopy), (3, .forged),
                (4, .staleReplay), (3, .providerOutage), (2, .operatorRetry), (1, .bindAccount), (2, .mintUnbound),
                (2, .returnPayout), (3, .advancePayout),
            ])
            let outcome = try await perform(action)
            note("#\(index) \(action.rawValue): \(outcome)")
            try await checkSafety()
        }
        try await converge()
    }

    // MARK: - Actions

    private func perform(_ action: Action) async throws -> String {
        switch action {
        case .deposit:
            // Mostly ordinary deposits to the demo customer; now and then one above the mint ceiling, which must be
            // held, not minted; some to the other accounts, bound or not yet.
            let account = random.weighted([(6, Demo.walletAccount), (3, Self.boundAccount), (2, Self.laterAccount)])
            if account != Demo.walletAccount {
                let tx = try await gateway.stub.credit(account: account, amountPaisa: random.int(1...2_000_000), memo: "sim")
                credits.append(tx)
                return "\(tx.providerTxID) \(Money.formatPaisa(tx.amountPaisa)) to \(account)"
            }
            let paisa = random.percent(8) ? Self.mintCeilingPaisa + random.int(1...1_000_000) : random.int(1...2_000_000)
            let tx = try await gateway.demoCredit(amountPaisa: paisa, memo: "sim")
            credits.append(tx)
            return "\(tx.providerTxID) \(Money.formatPaisa(paisa))"
        case .dispatch:
            let due = try await gateway.stubOutbox.claimDue(nowMicros: clock.nowMicros(), limit: Int(random.int(1...4)))
            await deliverInOrder(due)
            return "\(due.count) due"
        case .deliverDelayed:
            return await network.deliverDelayed()
        case .advanceClock:
            let micros = random.weighted([
                (6, random.int(1...999) * 1000), (3, random.int(1...60) * 1_000_000),
                (1, random.int(5...20) * 60 * 1_000_000),
            ])
            clock.advance(byMicros: micros)
            return "+\(micros / 1000) ms"
        case .reconcile:
            do {
                let result = try await gateway.reconcileOnce()
                return "ingested \(result.ingested), minted \(result.minted), duplicates \(result.duplicates)"
            } catch GatewayError.providerUnavailable {
                return "provider unavailable"
            }
        case .redeem:
            return try await redeem()
        case .replayRedeem:
            return try await replayRedeem()
        case .conflictingReplay:
            return try await conflictingReplay()
        case .pendingCopy:
            guard !credits.isEmpty else { return "no credit yet" }
            var tx = credits[random.index(credits.count)]
            tx.status = .pending
            return "\(tx.providerTxID): \(await sendSigned(WebhookEvent.encode(tx)))"
        case .forged:
            let key = Crypto.randomBytes(32)
            let tx = ProviderTransaction(
                providerTxID: "TX-forged-\(step)", account: Demo.walletAccount, direction: .credit,
                amountPaisa: 100_000, status: .settled, occurredAtMicros: clock.nowMicros(), memo: "forged")
            let status = await sendSigned(WebhookEvent.encode(tx), secret: try WebhookSecret(keyBytes: key))
            guard status == 401 else { throw failure("a webhook signed with a foreign key got \(status), not 401") }
            return "refused"
        case .staleReplay:
            return try await staleReplay()
        case .providerOutage:
            let down = provider.state.withLock {
                $0.down.toggle(); return $0.down
            }
            return down ? "provider down" : "provider up"
        case .operatorRetry:
            guard let dead = try await gateway.stubOutbox.list(limit: 1, beforeID: nil, state: "dead").first else { return "none dead" }
            _ = try await gateway.stubOutbox.redeliver(id: dead.id, nowMicros: clock.nowMicros())
            return "redeliver \(dead.id)"
        case .bindAccount:
            return try await bindLaterAccount()
        case .mintUnbound:
            return try await mintUnbound(all: false)
        case .returnPayout:
            return try await provider.returnOne()
        case .advancePayout:
            return try await provider.advanceOne()
        }
    }

    /// The operator binds the account nobody held to a new customer.
    private func bindLaterAccount() async throws -> String {
        guard customers[Self.laterAccount] == nil else { return "already bound" }
        let creation = try await gateway.createCustomer(
            CustomerDraft(email: "s2@sim.example", displayName: "S2", walletAccount: Self.laterAccount))
        guard creation.created else { throw failure("binding \(Self.laterAccount) found a customer already") }
        customers[Self.laterAccount] = creation.customer.id
        return "bound \(Self.laterAccount)"
    }

    /// The operator mints credits recorded while their account was unbound: refused while it still is, minted once
    /// it is bound.
    private func mintUnbound(all: Bool) async throws -> String {
        let waiting = try await recordedTransactions().values.filter {
            $0.customerID == nil && $0.tx.direction == .credit && $0.tx.status == .settled && $0.mintJobID == nil
        }.sorted { $0.id < $1.id }
        guard !waiting.isEmpty else { return "none unbound" }
        var minted = 0
        for record in all ? waiting : [waiting[random.index(waiting.count)]] {
            do {
                let job = try await gateway.mint(providerTxID: record.tx.providerTxID)
                guard customers[record.tx.account] != nil else { throw failure("minted a credit on an unbound account") }
                guard job.amountUnits == record.tx.amountPaisa * Money.unitsPerPaisa else { throw failure("minted \(job)") }
                minted += 1
            } catch GatewayError.unknownAccount {
                guard customers[record.tx.account] == nil else { throw failure("a bound account's credit was refused") }
            }
        }
        return "\(minted) of \(waiting.count) minted"
    }

    private func redeem() async throws -> String {
        let accounts = customers.keys.sorted()
        let customerID = customers[accounts[random.index(accounts.count)]]!
        let balance = try await gateway.store.tokenBalanceUnits(customerID: customerID)
        let paisaMax = max(1, balance / Money.unitsPerPaisa * 11 / 10)
        var units = random.int(1...paisaMax) * Money.unitsPerPaisa
        let wholePaisa = !random.percent(5)
        if !wholePaisa { units += random.int(1...9999) }
        let key = random.percent(80) ? "sim-\(seed)-\(step)" : nil
        let memo = "sim redeem \(step)"
        do {
            let answer = try await gateway.redeem(amountUnits: units, memo: memo, idempotencyKey: key, customerID: customerID)
            guard !answer.isReplay, answer.receipt.amountUnits == units else { throw failure("a new redeem answered \(answer)") }
            guard units <= balance, wholePaisa else { throw failure("redeem of \(units) succeeded with balance \(balance)") }
            if let key { redeemKeys.append((key, customerID, units, memo, answer.receipt)) }
            return "burned \(units)"
        } catch GatewayError.insufficientBalance {
            guard units > balance else { throw failure("redeem of \(units) refused with balance \(balance)") }
            return "insufficient balance"
        } catch GatewayError.invalidAmount(_, .notWholePaisa) {
            guard !wholePaisa else { throw failure("a whole-paisa redeem was refused as not whole") }
            return "not whole paisa"
        }
    }

    private func replayRedeem() async throws -> String {
        guard !redeemKeys.isEmpty else { return "no key yet" }
        let first = redeemKeys[random.index(redeemKeys.count)]
        if random.percent(25) {
            do {
                _ = try await gateway.redeem(
                    amountUnits: first.amountUnits + Money.unitsPerPaisa, memo: first.memo,
                    idempotencyKey: first.key, customerID: first.customerID)
                throw failure("key \(first.key) reused for a different amount was accepted")
            } catch GatewayError.idempotencyKeyReused {
                return "\(first.key) reused with another body: refused"
            }
        }
        let answer = try await gateway.redeem(
            amountUnits: first.amountUnits, memo: first.memo, idempotencyKey: first.key, customerID: first.customerID)
        guard answer.isReplay, answer.receipt == first.receipt else {
            throw failure("replay of \(first.key) answered \(answer), first answer \(first.receipt)")
        }
        return "\(first.key) replayed"
    }

    /// The provider's key signs a redelivery whose money differs from what was recorded: quarantine, no mint.
    private func conflictingReplay() async throws -> String {
        let recorded = try await gateway.store.externalTransactions(limit: 50, beforeID: nil).filter { $0.tx.direction == .credit }
        guard !recorded.isEmpty else { return "nothing recorded yet" }
        var tx = recorded[random.index(recorded.count)].tx
        if random.percent(50) { tx.amountPaisa += random.int(1...10_000) } else { tx.direction = .debit }
        let status = await sendSigned(WebhookEvent.encode(tx))
        // A payout's reversal credit is confirmed with the provider before anything else, and refused there (422).
        let expected = tx.direction == .credit && tx.reference.flatMap(PayoutReversal.parse) != nil ? 422 : 409
        guard status == expected else {
            throw failure("a conflicting redelivery of \(tx.providerTxID) got \(status), not \(expected)")
        }
        return "\(tx.providerTxID) \(expected == 409 ? "quarantined" : "refused as unconfirmed")"
    }

    /// A captured delivery sent again as it was: outside the window it must be refused, inside it must change nothing.
    private func staleReplay() async throws -> String {
        let captured = network.state.withLock { $0.captured }
        guard !captured.isEmpty else { return "nothing captured yet" }
        let webhook = captured[random.index(captured.count)]
        let ageSeconds = clock.nowMicros() / Timestamp.microsPerSecond - webhook.timestampSeconds
        let before = try await gateway.store.reconciliationSnapshot().mintedUnits
        let status = await network.receive(webhook)
        let after = try await gateway.store.reconciliationSnapshot().mintedUnits
        if ageSeconds > gateway.config.webhookToleranceSeconds {
            guard status == 401, before == after else {
                throw failure("a replay \(ageSeconds) s old got \(status); minted units \(before) -> \(after)")
            }
        }
        return "\(webhook.messageID) aged \(ageSeconds) s: \(status)"
    }

    private func sendSigned(_ body: [UInt8], secret: WebhookSecret = devSecret) async -> Int {
        let timestamp = clock.nowMicros() / Timestamp.microsPerSecond
        let id = "msg_sim_\(seed)_\(step)"
        return await network.receive(
            SignedWebhook(
                messageID: id, timestampSeconds: timestamp,
                signature: WebhookSigner.signature(secret: secret, id: id, timestampSeconds: timestamp, body: body), body: body))
    }

    // MARK: - Invariants

    /// What must hold after every step, whatever the faults: nothing minted twice or without money, nothing
    /// recorded that the provider did not do, the ledger balanced and its chain intact.
    private func checkSafety() async throws {
        let faults = network.state.withLock { $0.faults }
        guard faults.isEmpty else { throw failure(faults.joined(separator: "; ")) }
        let report = try await gateway.reconciliation()
        for check in report.checks where check.name != "supply_equals_reserve" && !check.ok {
            throw failure("\(check.name): \(check.detail)")
        }
        let snapshot = report.snapshot
        guard Int128(snapshot.chainStubUnits) <= report.reserveUnits else {
            throw failure("supply \(snapshot.chainStubUnits) exceeds the reserve \(report.reserveUnits): tokens without money")
        }
        let recorded = try await recordedTransactions()
        let payoutIDs = Set(provider.state.withLock { $0.payoutTxIDs })
        var unrecordedCreditUnits: Int128 = 0
        let allCredits = credits + provider.state.withLock { $0.reversals }
        for credit in allCredits {
            guard let record = recorded[credit.providerTxID] else {
                unrecordedCreditUnits += Int128(credit.amountPaisa * Money.unitsPerPaisa)
                continue
            }
            guard record.tx.differingFields(from: credit).isEmpty else {
                throw failure("\(credit.providerTxID) was recorded with content the provider never sent")
            }
            if record.tx.status != .settled { unrecordedCreditUnits += Int128(credit.amountPaisa * Money.unitsPerPaisa) }
        }
        let creditIDs = Set(allCredits.map(\.providerTxID))
        for id in recorded.keys where !creditIDs.contains(id) && !payoutIDs.contains(id) {
            throw failure("\(id) is recorded but the provider never made it")
        }
        // The reserve exceeds what the gateway accounts for by exactly the credits it has not heard of yet, less
        // the payouts the provider made but whose answer was lost while the gateway still counts them as requested.
        let gap =
            report.reserveUnits - Int128(snapshot.chainStubUnits) - Int128(snapshot.payoutRequestedUnits) - report.heldCreditUnits
            - report.unboundCreditUnits
        let paidButRequestedUnits = try await paidPayoutsStillRequestedUnits()
        let endedButHeldUnits = try await payoutsEndedButStillHeldUnits()
        guard gap == unrecordedCreditUnits - paidButRequestedUnits + endedButHeldUnits else {
            throw failure(
                "reserve gap \(gap) units, but unrecorded credits come to \(unrecordedCreditUnits), paid payouts still "
                    + "counted as requested to \(paidButRequestedUnits), and payouts ended before their debit but still held "
                    + "to \(endedButHeldUnits)")
        }
    }

    /// Payouts that ended before their money left while the gateway, not told yet, still holds their redemption as
    /// accepted: their money is back in the reserve.
    private func payoutsEndedButStillHeldUnits() async throws -> Int128 {
        let ended = provider.state.withLock { $0.endedBeforeDebit }
        guard !ended.isEmpty, let sqlite = gateway.store as? SQLiteStore else { return 0 }
        let states = try await sqlite.database.read { db in
            try ended.map {
                try String.fetchOne(
                    db,
                    sql: """
                        SELECT h.state FROM core_redemptionhold h JOIN core_chainjob j ON j.id = h.job_id
                        WHERE h.job_id = ? AND j.payout_state <> 'requested'
                        """, arguments: [$0.jobID])
            }
        }
        return zip(ended, states).reduce(Int128(0)) { sum, pair in
            pair.1 == "held" ? sum + Int128(pair.0.paisa) * Int128(Money.unitsPerPaisa) : sum
        }
    }

    private func paidPayoutsStillRequestedUnits() async throws -> Int128 {
        let lost = provider.state.withLock { $0.lostPayouts }
        guard !lost.isEmpty, let sqlite = gateway.store as? SQLiteStore else { return 0 }
        let states = try await sqlite.database.read { db in
            try lost.map { try String.fetchOne(db, sql: "SELECT payout_state FROM core_chainjob WHERE id = ?", arguments: [$0.jobID]) }
        }
        return zip(lost, states).reduce(Int128(0)) { sum, pair in
            pair.1 == "requested" ? sum + Int128(pair.0.paisa) * Int128(Money.unitsPerPaisa) : sum
        }
    }

    private func recordedTransactions() async throws -> [String: ExternalTransactionRecord] {
        var all: [String: ExternalTransactionRecord] = [:]
        var before: Int64?
        while true {
            let page = try await gateway.store.externalTransactions(limit: 500, beforeID: before)
            for record in page { all[record.tx.providerTxID] = record }
            guard page.count == 500, let last = page.last else { return all }
            before = last.id
        }
    }

    /// Once the faults stop, everything converges: every credit minted exactly once, every burn paid out once,
    /// and every reconciliation check passes.
    private func converge() async throws {
        provider.state.withLock {
            $0.down = false
            $0.calm = true
        }
        network.state.withLock { $0.healthy = true }
        note("converge: network healthy, provider up, \(try await bindLaterAccount()); \(try await provider.advanceOne(all: true))")
        for round in 1...8 {
            step = stepCount + round
            clock.advance(byMicros: 10 * 60 * Timestamp.microsPerSecond)
            while network.state.withLock({ !$0.delayed.isEmpty }) { _ = await network.deliverDelayed() }
            while true {
                let due = try await gateway.stubOutbox.claimDue(nowMicros: clock.nowMicros(), limit: 32)
                if due.isEmpty { break }
                await deliverInOrder(due)
            }
            let result = try await gateway.reconcileOnce()
            note("converge round \(round): reconciler minted \(result.minted), operator \(try await mintUnbound(all: true))")
            try await checkSafety()
            let report = try await gateway.reconciliation()
            let pending = try await gateway.stubOutbox.countByState()["pending"] ?? 0
            if report.ok && report.snapshot.burnsAwaitingDebit.isEmpty && pending == 0 && report.snapshot.unboundCreditPaisa == 0 {
                let recorded = try await recordedTransactions()
                let reversals = provider.state.withLock { $0.reversals }
                for credit in credits + reversals where recorded[credit.providerTxID]?.tx.status != .settled {
                    throw failure("\(credit.providerTxID) never settled at the gateway")
                }
                return
            }
        }
        let report = try await gateway.reconciliation()
        throw failure(
            "no convergence: \(report.failed.map { "\($0.name): \($0.detail)" }); burns awaiting their debit: \(report.snapshot.burnsAwaitingDebit)"
        )
    }

    var traceText: String { "seed \(seed):\n" + trace.joined(separator: "\n") }

    /// The run's steps with random identifiers removed: equal for equal seeds.
    var replayFingerprint: [String] {
        trace.map { $0.replacing(/TX-[0-9a-f]+|msg_[0-9A-Za-z]+|sim-[0-9]+-[0-9]+/, with: "ID") }
    }

    private func note(_ line: String) {
        let network = network.state.withLock { state in
            defer { state.trace.removeAll() }
            return state.trace
        }
        trace.append(contentsOf: network)
        trace.append(line)
    }

    private func failure(_ message: String) -> SimulationFailure {
        note("FAILED: \(message)")
        return SimulationFailure(seed: seed, step: step, message: message, trace: trace)
    }
}
