import CoreMetrics
import PKRCore

/// What the gateway counts, through swift-metrics: the composition root gives a Prometheus factory, tools and
/// tests that do not scrape give none. Every series a label can take is made here, once, so that recording is a
/// lookup in a small table and the exposition lists every series from the start (at zero).
public final class GatewayMetrics: Sendable {
    /// The outcomes an accepted webhook delivery can have (`ApplyOutcome.code`).
    static let acceptedOutcomes = ["minted", "recorded", "duplicate", "conflict"]
    static let outboxStates = ["pending", "delivered", "dead"]

    private let factory: any MetricsFactory
    private let deliveries: [String: Counter]
    private let mints: [ArrivalPathOrManual: Counter]
    private let redeems: Counter
    private let mintedUnits: Counter
    private let redeemedUnits: Counter
    private let releases: Counter
    private let releasedUnits: Counter
    private let webhookMintLag: Timer
    private let reconcileRuns: [Bool: Counter]
    private let reconcileHealed: Counter
    private let reconcileLastSuccess: Gauge
    private let outbox: [String: Gauge]
    private let quarantineEntries: Gauge
    private let storeAvailable: Gauge

    enum ArrivalPathOrManual: String, CaseIterable {
        case webhook, poll, manual
    }

    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        self.factory = factory
        var deliveries: [String: Counter] = [:]
        for outcome in Self.acceptedOutcomes {
            deliveries[outcome] = Counter(
                label: "pkr_webhook_deliveries_total", dimensions: [("outcome", outcome), ("reason", "")], factory: factory)
        }
        self.deliveries = deliveries
        var mints: [ArrivalPathOrManual: Counter] = [:]
        for via in ArrivalPathOrManual.allCases {
            mints[via] = Counter(label: "pkr_mints_total", dimensions: [("via", via.rawValue)], factory: factory)
        }
        self.mints = mints
        redeems = Counter(label: "pkr_redeems_total", factory: factory)
        mintedUnits = Counter(label: "pkr_minted_units_total", factory: factory)
        redeemedUnits = Counter(label: "pkr_redeemed_units_total", factory: factory)
        releases = Counter(label: "pkr_releases_total", factory: factory)
        releasedUnits = Counter(label: "pkr_released_units_total", factory: factory)
        webhookMintLag = Timer(label: "pkr_webhook_mint_lag_seconds", factory: factory)
        reconcileRuns = [
            true: Counter(label: "pkr_reconcile_runs_total", dimensions: [("result", "ok")], factory: factory),
            false: Counter(label: "pkr_reconcile_runs_total", dimensions: [("result", "error")], factory: factory),
        ]
        reconcileHealed = Counter(label: "pkr_reconcile_healed_total", factory: factory)
        reconcileLastSuccess = Gauge(label: "pkr_reconcile_last_success_timestamp_seconds", factory: factory)
        var outbox: [String: Gauge] = [:]
        for state in Self.outboxStates {
            outbox[state] = Gauge(label: "pkr_outbox_deliveries", dimensions: [("state", state)], factory: factory)
        }
        self.outbox = outbox
        quarantineEntries = Gauge(label: "pkr_quarantine_entries", factory: factory)
        storeAvailable = Gauge(label: "pkr_store_available", factory: factory)
    }

    /// A delivery that reached the settlement rules, and what it did. `lagMicros`: from the provider's time to now.
    package func webhookApplied(_ outcome: ApplyOutcome, lagMicros: Int64) {
        deliveries[outcome.code]?.increment()
        if case .minted(let job) = outcome {
            minted(job, via: .webhook)
            webhookMintLag.recordMicroseconds(max(0, lagMicros))
        }
    }

    /// A delivery turned away, by its error code (a bad signature, a malformed body, an unknown account...).
    func webhookRejected(reason: String) {
        // Error codes are a fixed set in the core, so the series stay few.
        Counter(
            label: "pkr_webhook_deliveries_total", dimensions: [("outcome", "rejected"), ("reason", reason)], factory: factory
        ).increment()
    }

    func minted(_ job: ChainJob, via: ArrivalPathOrManual) {
        mints[via]?.increment()
        mintedUnits.increment(by: job.amountUnits)
    }

    func redeemed(_ receipt: BurnReceipt) {
        redeems.increment()
        redeemedUnits.increment(by: receipt.amountUnits)
    }

    /// A redemption whose payout ended before any money moved, its tokens given back.
    func released(amountUnits: Int64) {
        releases.increment()
        releasedUnits.increment(by: amountUnits)
    }

    func reconcilePass(healed: Int?, nowMicros: Int64) {
        guard let healed else {
            reconcileRuns[false]?.increment()
            return
        }
        reconcileRuns[true]?.increment()
        reconcileHealed.increment(by: healed)
        reconcileLastSuccess.record(nowMicros / Timestamp.microsPerSecond)
    }

    /// Each reconciliation check as 1 (holds) or 0, set whenever a report is made.
    func invariants(_ report: ReconciliationReport) {
        for check in report.checks {
            Gauge(label: "pkr_invariant_ok", dimensions: [("check", check.name)], factory: factory).record(check.ok ? 1 : 0)
        }
    }

    /// The figures read from the store when the metrics are scraped. `outbox` is nil when it could not be read, and
    /// absent when the provider runs elsewhere and keeps its own.
    func stored(outbox counts: [String: Int]??, quarantineEntries entries: Int?) {
        storeAvailable.record(counts != .some(nil) && entries != nil ? 1 : 0)
        if case .some(.some(let counts)) = counts {
            for state in Self.outboxStates { outbox[state]?.record(counts[state] ?? 0) }
        }
        if let entries { quarantineEntries.record(entries) }
    }
}
