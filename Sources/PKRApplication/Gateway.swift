import Foundation
import Logging
import PKRCore
import ServiceLifecycle
import Synchronization

/// The gateway's use cases, shared by the HTTP routes, the background services and the command line.
/// It holds no state of its own beyond caches; the store is the source of truth.
public final class Gateway: Sendable {
    /// A reconciler page: the provider's largest. On SQLite it is one transaction (about 100 ms of the writer
    /// in a backlog, which a webhook arriving then waits behind); on PostgreSQL it is written as mint batches two
    /// at a time, and the pipeline drains at the end of each page. Fewer, larger pages: a 100k SQLite backlog in
    /// 9.2/8.7 s instead of 9.5/10.5 s.
    public static let pollPageSize = 1000
    /// How much of a delivery that failed verification the inbound log keeps.
    public static let unverifiedBodyBytesKept = 1024
    static let pollCursorName = "provider_poll"

    public let config: GatewayConfig
    public let store: any GatewayStore
    /// The wallet provider, reached over HTTP (`HTTPWalletProvider`) in every configuration the server runs.
    public let provider: any WalletProvider
    /// The provider stub when demo mode mounts it in this process: operators see its webhook outbox through the
    /// gateway, and tests and benchmarks act as the provider through it. Money paths never use it.
    public let localProvider: LocalProvider?
    public let verifier: WebhookVerifier
    public let clock: any GatewayClock
    public let metrics: GatewayMetrics
    package let logger: Logger
    private let cachedCustomer = Mutex<Customer?>(nil)
    /// Set once a customer is known to exist; customers are never deleted.
    private let customersExist = Atomic<Bool>(false)
    private let redeemsInFlight = Mutex<Set<String>>([])

    package init(
        config: GatewayConfig, store: any GatewayStore, provider: any WalletProvider, localProvider: LocalProvider?,
        clock: any GatewayClock, metrics: GatewayMetrics = GatewayMetrics(), logger: Logger
    ) {
        self.metrics = metrics
        self.config = config
        self.store = store
        self.provider = provider
        self.localProvider = localProvider
        self.clock = clock
        self.logger = logger
        self.verifier = WebhookVerifier(
            secrets: config.webhookSecrets, toleranceSeconds: config.webhookToleranceSeconds,
            legacyKey: config.legacyWebhookKey)
    }

    // MARK: - Customers

    /// The customer the seed's user endpoints act on: the seed has one user and no sign-in, so it is the demo
    /// customer (`Demo`), created by `seedDemo`.
    public func currentCustomer() async throws -> Customer {
        if let customer = cachedCustomer.withLock({ $0 }) { return customer }
        guard let customer = try await store.customer(email: Demo.email) else { throw GatewayError.demoNotSeeded }
        cachedCustomer.withLock { $0 = customer }
        return customer
    }

    /// The customer an operator's server-to-server call names, or the seed's current one when it names none.
    public func customer(id: String?) async throws -> Customer {
        guard let id else { return try await currentCustomer() }
        guard let customer = try await store.customer(id: id) else { throw GatewayError.unknownCustomer(id) }
        return customer
    }

    public struct CustomerCreation: Sendable {
        public var customer: Customer
        /// False when the same email and account were already bound: the request was a replay.
        public var created: Bool
    }

    /// Binds a provider account to a new customer with a chain address and an empty balance, then has the provider
    /// open the account (idempotently, on a replay too, so a request that failed after the binding is completed by
    /// its retry). Asking again with the same email and account answers the same customer; an email or an account
    /// already bound otherwise is a conflict, and nothing is opened for it.
    public func createCustomer(_ draft: CustomerDraft) async throws -> CustomerCreation {
        let creation: CustomerCreation
        if let existing = try await store.customer(email: draft.email) {
            creation = CustomerCreation(customer: try Self.sameBinding(existing, draft), created: false)
        } else {
            do {
                creation = CustomerCreation(customer: try await bindAccount(draft), created: true)
            } catch let error as GatewayError {
                throw error
            } catch {
                // A concurrent request took the email or the account first: its row decides, as if this request had
                // come second.
                if let winner = try await store.customer(email: draft.email) {
                    creation = CustomerCreation(customer: try Self.sameBinding(winner, draft), created: false)
                } else {
                    creation = CustomerCreation(customer: try await bindAccount(draft), created: true)
                }
            }
        }
        try await provider.openAccount(draft.walletAccount)
        if creation.created {
            logger.info(
                "customer created", metadata: ["user_id": "\(creation.customer.id)", "wallet_account": "\(draft.walletAccount)"])
        }
        return creation
    }

    /// The customer bound to the draft's account: a new one, or a conflict when another email holds it.
    private func bindAccount(_ draft: CustomerDraft) async throws -> Customer {
        let customer = try await store.createCustomer(draft)
        guard customer.email == draft.email else {
            throw GatewayError.customerConflict("wallet account '\(draft.walletAccount)' is already bound to another customer")
        }
        return customer
    }

    private static func sameBinding(_ existing: Customer, _ draft: CustomerDraft) throws -> Customer {
        guard existing.walletAccount == draft.walletAccount else {
            throw GatewayError.customerConflict("email '\(draft.email)' is already bound to another wallet account")
        }
        return existing
    }

    /// Whether any customer exists (the demo one or one an operator created) for deposits to be applied to.
    public func hasCustomer() async throws -> Bool {
        if customersExist.load(ordering: .relaxed) { return true }
        guard try await store.hasCustomers() else { return false }
        customersExist.store(true, ordering: .relaxed)
        return true
    }

    /// Refuses work that needs a customer to act for before there is one: in demo mode before the seed, otherwise
    /// before an operator created the first customer.
    public func requireCustomers() async throws {
        guard try await hasCustomer() else {
            throw config.demoMode ? GatewayError.demoNotSeeded : GatewayError.unknownCustomer("none yet: POST /api/users first")
        }
    }

    // MARK: - Deposits

    /// The demo's "a customer deposits PKR": the provider records it and (with push on) queues its webhook.
    public func demoCredit(amountPaisa: Int64, memo: String) async throws -> ProviderTransaction {
        let customer = try await currentCustomer()
        return try await provider.deposit(account: customer.walletAccount, amountPaisa: amountPaisa, memo: memo)
    }

    public struct IngestResult: Sendable, Equatable {
        public var ingested = 0
        public var minted = 0
        public var duplicates = 0
        public var conflicts = 0
        public var mintedProviderTxIDs: [String] = []
    }

    /// Pulls the provider's transactions since a time and applies each one. With `sinceMicros` nil it continues
    /// from the stored cursor, so a periodic pass reads only what is new.
    public func ingest(sinceMicros: Int64?, progress: (IngestResult) -> Void = { _ in }) async throws -> IngestResult {
        var result = IngestResult()
        var cursor = sinceMicros == nil ? try await store.cursor(named: Self.pollCursorName) : 0
        let since = sinceMicros ?? 0
        let provider = self.provider
        var page = try await provider.transactions(sinceMicros: since, after: cursor, limit: Self.pollPageSize)
        while true {
            // A full page means there may be more: the next one is read while this one is applied.
            let more = page.transactions.count == Self.pollPageSize && page.nextCursor > cursor
            let nextCursor = page.nextCursor
            let nextPage =
                more
                ? Task {
                    try await provider.transactions(sinceMicros: since, after: nextCursor, limit: Self.pollPageSize)
                } : nil
            defer { nextPage?.cancel() }
            let outcomes = try await store.applyPolled(page.transactions)
            for (tx, outcome) in zip(page.transactions, outcomes) {
                switch outcome {
                case .minted(let job):
                    result.ingested += 1
                    result.minted += 1
                    result.mintedProviderTxIDs.append(tx.providerTxID)
                    metrics.minted(job, via: .poll)
                case .recorded: result.ingested += 1
                case .duplicate: result.duplicates += 1
                case .conflict(let fields):
                    result.conflicts += 1
                    logger.error(
                        "provider listing conflicts with a recorded transaction; quarantined",
                        metadata: ["provider_tx_id": "\(tx.providerTxID)", "fields": "\(fields)"])
                }
            }
            if sinceMicros == nil, page.nextCursor > cursor {
                try await store.setCursor(named: Self.pollCursorName, to: page.nextCursor)
            }
            progress(result)
            // A pass over a long backlog stops between pages when the server is shutting down; the cursor
            // already records how far it got.
            guard let nextPage, !Task.isShuttingDownGracefully else { break }
            cursor = nextCursor
            page = try await nextPage.value
        }
        return result
    }

    /// One fallback pass: heal lost webhooks from the provider's listing, resubmit stuck payouts, and ask the provider
    /// how payouts still held ended.
    public func reconcileOnce(progress: (IngestResult) -> Void = { _ in }) async throws -> IngestResult {
        let result: IngestResult
        do {
            result = try await ingest(sinceMicros: nil, progress: progress)
        } catch {
            metrics.reconcilePass(healed: nil, nowMicros: clock.nowMicros())
            throw error
        }
        metrics.reconcilePass(healed: result.minted, nowMicros: clock.nowMicros())
        if result.minted > 0 {
            logger.warning(
                "reconciler minted credits whose webhooks never arrived",
                metadata: ["count": "\(result.minted)", "provider_tx_ids": "\(result.mintedProviderTxIDs.prefix(20))"])
        }
        let stuck = try await store.payouts(
            awaiting: .submission,
            olderThanMicros: clock.nowMicros() - 5 * Timestamp.microsPerSecond,
            limit: 100)
        for payout in stuck {
            await submitPayout(jobID: payout.jobID, account: payout.walletAccount, amountUnits: payout.amountUnits, memo: payout.memo)
        }
        try await settleAwaitingPayouts()
        try await store.compactRunningTotals()
        return result
    }

    // MARK: - Mint and redeem

    public func mint(providerTxID: String) async throws -> ChainJob {
        try await requireCustomers()
        let job = try await store.mint(providerTxID: providerTxID)
        metrics.minted(job, via: .manual)
        return job
    }

    /// Burns and pays out for a customer (the seed's current one when `customerID` is nil). A key seen before
    /// replays its first receipt; a key still being served is refused.
    public func redeem(amountUnits: Int64, memo: String, idempotencyKey: String?, customerID: String? = nil) async throws -> RedeemResult {
        guard amountUnits % Money.unitsPerPaisa == 0 else { throw GatewayError.invalidAmount(field: "amount_units", .notWholePaisa) }
        guard amountUnits <= config.limits.maxPayoutUnits else {
            throw GatewayError.amountAboveLimit(
                field: "amount_units",
                limit: Money.formatPaisa(config.limits.maxPayoutUnits / Money.unitsPerPaisa))
        }
        let customer = try await customer(id: customerID)
        let fingerprint = IdempotencyKey.fingerprint([String(amountUnits), memo])
        if let key = idempotencyKey {
            let inserted = redeemsInFlight.withLock { $0.insert(customer.id + "\u{1f}" + key).inserted }
            guard inserted else { throw GatewayError.idempotencyRequestInFlight }
        }
        defer {
            if let key = idempotencyKey { _ = redeemsInFlight.withLock { $0.remove(customer.id + "\u{1f}" + key) } }
        }
        let command = RedeemCommand(
            customerID: customer.id, amountUnits: amountUnits, memo: memo, idempotencyKey: idempotencyKey,
            requestFingerprint: fingerprint)
        let result = try await store.redeem(command)
        if case .burned(let receipt, let account) = result {
            metrics.redeemed(receipt)
            await submitPayout(jobID: receipt.jobID, account: account, amountUnits: receipt.amountUnits, memo: memo)
        }
        return result
    }

    /// Asks the provider to pay out a redemption, under the key derived from its job (stored with the hold before the
    /// first attempt), so that every retry by anyone is the same request. Failure leaves the payout requested; the
    /// reconciler retries it. The provider's own answer is authoritative: a payout it refused before any money moved
    /// releases the hold at once.
    func submitPayout(jobID: String, account: String, amountUnits: Int64, memo: String) async {
        let payout: Payout
        do {
            let paisa = try Money.unitsToPaisa(amountUnits)
            payout = try await provider.payout(
                PayoutRequest(
                    account: account, amountPaisa: paisa, memo: memo, reference: jobID,
                    idempotencyKey: PayoutRequest.idempotencyKey(reference: jobID)))
        } catch {
            logger.error("payout not submitted; the reconciler will retry", metadata: ["job_id": "\(jobID)", "error": "\(error)"])
            return
        }
        do {
            try await settle(payout, jobID: jobID)
        } catch {
            logger.error(
                "payout answer not recorded; the reconciler will ask again", metadata: ["job_id": "\(jobID)", "error": "\(error)"])
        }
    }

    /// Records the provider's answer to a redemption's payout: paid burns the held tokens, ended before any money
    /// moved gives them back.
    func settle(_ payout: Payout, jobID: String) async throws {
        guard payout.reference == jobID else {
            throw GatewayError.providerUnavailable("the provider answered payout '\(payout.reference)' for redemption '\(jobID)'")
        }
        let outcome = try await store.payoutAnswered(jobID: jobID, providerTxID: payout.providerTxID ?? payout.id, outcome: payout.outcome)
        switch outcome {
        case .released:
            metrics.released(amountUnits: (try? Money.paisaToUnits(payout.amountPaisa)) ?? 0)
            logger.warning(
                "payout ended before its debit; the redemption is released",
                metadata: ["job_id": "\(jobID)", "status": "\(payout.status.rawValue)", "failure_code": "\(payout.failureCode ?? "")"])
        case .burnt where payout.status == .failed:
            logger.warning(
                "payout failed after its debit; its reversal credit gives the tokens back",
                metadata: ["job_id": "\(jobID)", "failure_code": "\(payout.failureCode ?? "")"])
        case .held, .burnt, .alreadyEnded, .noHold:
            break
        }
    }

    /// Redemptions held past their payout's acceptance: asks the provider how each ended (an answer may have been
    /// lost, or the payout was still pending), and burns or releases their holds as the answer says.
    func settleAwaitingPayouts() async throws {
        let awaiting = try await store.payouts(
            awaiting: .outcome, olderThanMicros: clock.nowMicros() - 5 * Timestamp.microsPerSecond, limit: 100)
        for pending in awaiting {
            do {
                guard let payout = try await provider.payout(reference: pending.jobID) else { continue }
                try await settle(payout, jobID: pending.jobID)
            } catch {
                logger.error(
                    "payout outcome not read; the reconciler will ask again", metadata: ["job_id": "\(pending.jobID)", "error": "\(error)"])
            }
        }
    }

    // MARK: - Webhooks

    public struct WebhookDelivery: Sendable {
        public var headers: WebhookHeaders
        public var body: [UInt8]
        public var sourceAddress: String?
        public var receivedAtMicros: Int64

        public init(headers: WebhookHeaders, body: [UInt8], sourceAddress: String?, receivedAtMicros: Int64) {
            self.headers = headers
            self.body = body
            self.sourceAddress = sourceAddress
            self.receivedAtMicros = receivedAtMicros
        }
    }

    /// Verifies, parses and applies one delivery. Every delivery lands in the inbound log, accepted or not.
    public func receiveWebhook(_ delivery: WebhookDelivery) async throws -> ApplyOutcome {
        var draft = InboundDraft(
            receivedAtMicros: delivery.receivedAtMicros, messageID: delivery.headers.id,
            webhookTimestamp: delivery.headers.timestamp, sourceAddress: delivery.sourceAddress,
            scheme: nil, verification: "unverified", errorCode: nil, providerTxID: nil, body: delivery.body)
        let scheme: WebhookScheme
        switch verifier.verify(delivery.headers, body: delivery.body, nowSeconds: delivery.receivedAtMicros / Timestamp.microsPerSecond) {
        case .success(let verified): scheme = verified
        case .failure(let rejection):
            try await store.logRejectedInbound(
                InboundDraft.unverified(
                    delivery.headers, body: delivery.body, sourceAddress: delivery.sourceAddress,
                    receivedAtMicros: delivery.receivedAtMicros, verification: rejection.rawValue, errorCode: rejection.rawValue))
            metrics.webhookRejected(reason: GatewayError.webhookRejected(rejection).code)
            throw GatewayError.webhookRejected(rejection)
        }
        draft.scheme = scheme
        draft.verification = "verified"
        do {
            let tx = try WebhookEvent.parse(delivery.body)
            draft.providerTxID = tx.providerTxID
            try await confirmPayoutEvent(tx)
            let outcome = try await store.apply(tx, via: .webhook, inbound: draft)
            metrics.webhookApplied(outcome, lagMicros: clock.nowMicros() - tx.occurredAtMicros)
            if case .conflict(let fields) = outcome {
                logger.warning(
                    "conflicting webhook quarantined", metadata: ["provider_tx_id": "\(tx.providerTxID)", "fields": "\(fields)"])
                throw GatewayError.webhookConflict(providerTxID: tx.providerTxID, fields: fields)
            }
            return outcome
        } catch let error as GatewayError {
            if case .webhookConflict = error { throw error }
            metrics.webhookRejected(reason: error.code)
            draft.errorCode = error.code
            try await store.logRejectedInbound(draft)
            throw error
        }
    }

    /// A webhook is a hint: an event about a payout changes money only once the provider, asked directly, confirms
    /// it. A settled debit naming a payout's reference must be that payout's debit, paid; a failed one, the debit of a
    /// payout that ended before its money left; a credit naming `<reference>:failed` or `<reference>:returned` must
    /// be that payout's reversal, in that state. Account and amount must agree. A
    /// provider that cannot be asked now answers 502, and the sender retries.
    func confirmPayoutEvent(_ tx: ProviderTransaction) async throws(GatewayError) {
        // A pending debit changes nothing; a settled one pays a redemption, a failed one releases it.
        guard tx.status != .pending, let reference = tx.reference else { return }
        if tx.status == .failed && tx.direction == .credit { return }
        var payoutReference = reference
        var reversalStatus: PayoutStatus?
        if tx.direction == .credit {
            guard let (named, status) = PayoutReversal.parse(reference) else { return }
            payoutReference = named
            reversalStatus = status
        }
        // The provider's own answer to the payout call already named this debit as paid, for this amount and account:
        // there is nothing to ask it again.
        if reversalStatus == nil, tx.status == .settled, let units = try? Money.paisaToUnits(tx.amountPaisa),
            try await storeAnswer({
                try await store.payoutAnswered(jobID: reference, providerTxID: tx.providerTxID, amountUnits: units, account: tx.account)
            })
        {
            return
        }
        let payout: Payout?
        do {
            payout = try await provider.payout(reference: payoutReference)
        } catch {
            throw .providerUnavailable("the payout '\(payoutReference)' could not be confirmed with the provider")
        }
        guard let payout else {
            // A debit under a reference the provider made no payout for is not the gateway's: it is applied, and
            // flagged, as any unmatched debit is. A reversal of no payout is refused.
            if reversalStatus == nil { return }
            throw .payoutNotConfirmed(reference: payoutReference)
        }
        let sameMoney = payout.amountPaisa == tx.amountPaisa && payout.account == tx.account
        let confirmed =
            if let reversalStatus {
                payout.status == reversalStatus && payout.reversalProviderTxID == tx.providerTxID
            } else if tx.status == .failed {
                payout.providerTxID == tx.providerTxID && payout.outcome == .endedBeforeDebit
            } else {
                payout.providerTxID == tx.providerTxID && payout.outcome == .debited
            }
        guard sameMoney && confirmed else { throw .payoutNotConfirmed(reference: payoutReference) }
    }

    /// A store read inside a typed-throwing check: its failure is the store's outage.
    private func storeAnswer<T>(_ read: () async throws -> T) async throws(GatewayError) -> T {
        do { return try await read() } catch let error as GatewayError { throw error } catch {
            throw .storeUnavailable("the payout's burn could not be read")
        }
    }

    /// Logs a delivery refused before it could be verified (its body could not be read).
    public func logUnreadableDelivery(
        _ headers: WebhookHeaders, sourceAddress: String?, receivedAtMicros: Int64,
        error: GatewayError
    ) async throws {
        metrics.webhookRejected(reason: error.code)
        try await store.logRejectedInbound(
            InboundDraft.unverified(
                headers, body: [], sourceAddress: sourceAddress, receivedAtMicros: receivedAtMicros, verification: "unverified",
                errorCode: error.code))
    }

    /// Makes the webhook dispatcher look at the outbox now rather than at its next timer.
    public func wakeDispatcher() { localProvider?.dispatchSignal.signal() }

    // MARK: - Reads

    public func tokenBalanceUnits(customerID: String? = nil) async throws -> Int64 {
        try await store.tokenBalanceUnits(customerID: try await customer(id: customerID).id)
    }

    /// The whole ledger, or both sides of one customer's jobs.
    public func ledgerEntries(_ page: Page, customerID: String? = nil) async throws -> [LedgerEntry] {
        if let customerID { _ = try await customer(id: customerID) }
        return try await store.ledgerEntries(customerID: customerID, limit: page.limit, beforeID: page.beforeID)
    }

    public func externalTransactions(_ page: Page) async throws -> [ExternalTransactionRecord] {
        try await store.externalTransactions(limit: page.limit, beforeID: page.beforeID)
    }

    public func inboundLog(_ page: Page) async throws -> [InboundRecord] {
        try await store.inboundLog(limit: page.limit, beforeID: page.beforeID)
    }

    public func quarantine(_ page: Page) async throws -> [QuarantineRecord] {
        try await store.quarantine(limit: page.limit, beforeID: page.beforeID)
    }

    public func verifyLedger(progress: @escaping @Sendable (Int) -> Void = { _ in }) async throws -> LedgerChainVerifier {
        try await store.verifyLedger(progress: progress)
    }

    // MARK: - The provider stub's outbox, for operators

    /// The provider's outbox, when the provider runs in this process; a remote provider keeps its own.
    private var outbox: any OutboxStore {
        get throws {
            guard let outbox = localProvider?.outbox else {
                throw GatewayError.notFound("the provider runs as its own service; its webhook deliveries are there")
            }
            return outbox
        }
    }

    /// Empty when the provider runs elsewhere: it keeps its deliveries.
    public func deliveries(_ page: Page, state: String?) async throws -> [DeliveryView] {
        guard localProvider != nil else { return [] }
        return try await outbox.list(limit: page.limit, beforeID: page.beforeID, state: state)
    }

    /// A delivery and its attempts; nil for an unknown id.
    public func delivery(id: Int64) async throws -> (DeliveryView, [AttemptView])? {
        guard let attempts = try await outbox.attempts(deliveryID: id),
            let view = try await outbox.list(limit: 1, beforeID: id + 1, state: nil).first, view.id == id
        else { return nil }
        return (view, attempts)
    }

    /// An operator's redelivery: due now, with a fresh retry schedule. False for an unknown id.
    public func redeliver(id: Int64) async throws -> Bool {
        guard try await outbox.redeliver(id: id, nowMicros: clock.nowMicros()) else { return false }
        wakeDispatcher()
        return true
    }

    // MARK: - Reconciliation

    /// Every reconciliation check. By default from the running totals and the ledger's verified checkpoint, at a
    /// cost that does not grow with history; `full` recounts everything from the rows and the whole chain from
    /// genesis, and confirms the running totals and the stored checkpoint against that recount.
    public func reconciliation(full: Bool = false) async throws -> ReconciliationReport {
        let stored = try await store.ledgerCheckpoint()
        let snapshot = try await store.reconciliationSnapshot(full ? .full : .recent(ledgerFrom: stored))
        let chain = try await store.verifyLedger(from: full ? .genesis : stored, confirming: full ? stored : nil, progress: { _ in })
        if chain.firstBreak == nil, chain.head.lastID > stored.head.lastID { try await store.saveLedgerCheckpoint(chain.checkpoint) }
        let reserve = try await provider.reservePaisa()
        let report = ReconciliationReport(snapshot: snapshot, ledger: chain, reservePaisa: reserve)
        metrics.invariants(report)
        return report
    }

    /// Reads the figures the metrics show from the store (the outbox by state, the quarantine), for a scrape.
    /// A store that cannot answer is reported as unavailable, not as an error.
    public func refreshStoredMetrics() async {
        var outboxCounts: [String: Int]?? = .none
        if let outbox = localProvider?.outbox { outboxCounts = .some(try? await outbox.countByState()) }
        let quarantined = try? await store.quarantineCount()
        metrics.stored(outbox: outboxCounts, quarantineEntries: quarantined)
    }
}

extension InboundDraft {
    /// The inbound-log row of a delivery nobody vouched for. Anyone can send unsigned bytes, so it keeps enough to
    /// diagnose and not enough to fill the disk: the first KiB of the body, and the id and timestamp no longer
    /// than a valid delivery's.
    static func unverified(
        _ headers: WebhookHeaders, body: [UInt8], sourceAddress: String?, receivedAtMicros: Int64,
        verification: String, errorCode: String
    ) -> InboundDraft {
        // Whole code points only, so a cut never leaves half a character (which would decode to a longer one).
        func cut(_ text: String?, bytesMax: Int) -> String? {
            guard let text else { return nil }
            var bytes = 0
            var kept = String.UnicodeScalarView()
            for scalar in text.unicodeScalars {
                bytes += UTF8.width(scalar)
                guard bytes <= bytesMax else { break }
                kept.append(scalar)
            }
            return String(kept)
        }
        return InboundDraft(
            receivedAtMicros: receivedAtMicros,
            messageID: cut(headers.id, bytesMax: WebhookVerifier.messageIDBytesMax),
            webhookTimestamp: cut(headers.timestamp, bytesMax: WebhookVerifier.timestampDigitsMax),
            sourceAddress: sourceAddress, scheme: nil, verification: verification, errorCode: errorCode,
            providerTxID: nil, body: Array(body.prefix(Gateway.unverifiedBodyBytesKept)))
    }
}

/// The clock, injected so that tests can fix time.
public protocol GatewayClock: Sendable {
    func nowMicros() -> Int64
}

public struct SystemClock: GatewayClock {
    public init() {}

    public func nowMicros() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * Timestamp.microsPerSecond + Int64(spec.tv_nsec) / 1000
    }
}
