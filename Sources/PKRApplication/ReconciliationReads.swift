import PKRCore

/// The reconciliation's reads, written once in SQL both engines run. A store runs every query in one read
/// transaction and hands the answers back to `snapshot(_:)`.
///
/// `.recent` must cost the same at ten million transactions as at ten: every query reads a running total, the rows
/// of one customer table, a bounded window, or a partial index of what is in flight (v4-running-totals). `.full`
/// recounts every figure from the rows, and the running totals beside them so that the report can compare.
public struct ReconciliationReads: Sendable {
    public enum Dialect: Sendable { case sqlite, postgres }

    /// What a store answered, by query key.
    public struct Answers: Sendable {
        public var integers: [String: Int64] = [:]
        public var lists: [String: [String]] = [:]
        public var totals: [String: Int64] = [:]
        public var arrivals = ArrivalFigures()
        public var latest: [ExternalTransactionRecord] = []

        public init() {}
    }

    public let scope: ReconciliationScope
    public let dialect: Dialect
    /// Queries answering one integer each.
    public private(set) var integers: [(key: String, sql: String)] = []
    /// Queries answering one text column (and then `listsAfter(totals:)`).
    public private(set) var lists: [(key: String, sql: String)] = []
    /// Answers `(name, value)` rows: the running totals.
    public let totalsSQL: String
    /// Answers `(webhook, poll, lag_micros)` rows over the window (or, for `.full`, the history), a lag ahead of
    /// our clock as 0. SQLite reads them in process into an `ArrivalFigures.Counter`.
    public let arrivalsSQL: String
    /// Answers one row, `(webhook_only, poll_only, both, lag_p50, lag_p90, lag_p99, lag_max)`, NULL lags over no
    /// rows: PostgreSQL counts and ranks where the rows are instead of sending them (InvariantCheckTests pins the
    /// two to each other).
    public let arrivalFiguresSQL: String
    public let latestLimit = 10

    public init(_ scope: ReconciliationScope, dialect: Dialect) {
        self.scope = scope
        self.dialect = dialect
        // PostgreSQL sums bigints as numeric.
        let sum: (String) -> String = { dialect == .postgres ? "COALESCE(SUM(\($0)), 0)::BIGINT" : "COALESCE(SUM(\($0)), 0)" }
        let minted = dialect == .postgres ? "j.external_tx_id = e.provider_tx_id" : "j.external_tx_row_id = e.id"
        let notReleased = "NOT EXISTS (SELECT 1 FROM core_redemptionhold h WHERE h.job_id = j.id AND h.state = 'released')"
        totalsSQL = "SELECT name, \(sum("value")) FROM core_runningtotal GROUP BY name"
        let full = scope == .full
        let window = ReconciliationScope.arrivalsWindow
        // Only the columns the figures need are read, not whole transactions.
        let windowed =
            full
            ? "core_externaltransaction"
            : "(SELECT id, provider_tx_id, first_seen_via FROM core_externaltransaction ORDER BY id DESC LIMIT \(window)) w"
        let source =
            full
            ? "core_externaltransaction"
            : """
            (SELECT seen_via_webhook, seen_via_poll, recorded_at_micros, occurred_at_micros FROM core_externaltransaction
             ORDER BY id DESC LIMIT \(window)) latest
            """
        arrivalsSQL = """
            SELECT seen_via_webhook AS webhook, seen_via_poll AS poll,
                   CASE WHEN recorded_at_micros > occurred_at_micros THEN recorded_at_micros - occurred_at_micros ELSE 0 END AS lag
            FROM \(source)
            """
        // percentile_disc(p) is the value at rank ceil(n * p): the nearest rank `ArrivalFigures.Counter` takes.
        arrivalFiguresSQL = """
            WITH w AS (\(arrivalsSQL))
            SELECT \(sum("CASE WHEN webhook AND NOT poll THEN 1 ELSE 0 END")), \(sum("CASE WHEN NOT webhook THEN 1 ELSE 0 END")),
                   \(sum("CASE WHEN webhook AND poll THEN 1 ELSE 0 END")), percentile_disc(0.5) WITHIN GROUP (ORDER BY lag),
                   percentile_disc(0.9) WITHIN GROUP (ORDER BY lag), percentile_disc(0.99) WITHIN GROUP (ORDER BY lag), MAX(lag)
            FROM w
            """

        func integer(_ key: String, _ sql: String) { integers.append((key, sql)) }
        func list(_ key: String, _ sql: String) { lists.append((key, sql)) }
        integer("token_balance", "SELECT \(sum("balance_units")) FROM core_tokenbalance")
        integer(
            "chain_stub",
            "SELECT \(sum("balance_units")) FROM chain_stub_chainstubbalance WHERE address <> '\(ChainOperation.redemptionAddress)'")
        integer(
            "redemption_address",
            "SELECT \(sum("balance_units")) FROM chain_stub_chainstubbalance WHERE address = '\(ChainOperation.redemptionAddress)'")
        integer("held_credit", "SELECT \(sum("amount_paisa")) FROM core_externaltransaction WHERE flag = 'above_mint_limit'")
        integer(
            "unbound_credit",
            """
            SELECT \(sum("e.amount_paisa")) FROM core_externaltransaction e
            WHERE e.user_id IS NULL AND e.direction = 'credit' AND e.status = 'settled'
              AND NOT EXISTS (SELECT 1 FROM core_chainjob j WHERE \(minted))
            """)
        integer(
            "payout_requested",
            """
            SELECT \(sum("j.amount_units")) FROM core_chainjob j
            WHERE j.job_type = 'burn' AND j.payout_state = 'requested' AND \(notReleased)
            """)
        integer("held", "SELECT \(sum("amount_units")) FROM core_redemptionhold WHERE state = 'held'")
        integer(
            "held_submitted",
            """
            SELECT \(sum("h.amount_units")) FROM core_redemptionhold h JOIN core_chainjob j ON j.id = h.job_id
            WHERE h.state = 'held' AND j.payout_state <> 'requested'
            """)
        // Reversal credits are the only credits with a reference.
        integer(
            "returned",
            """
            SELECT \(sum("e.amount_paisa")) * 10000 FROM core_externaltransaction e
            WHERE e.direction = 'credit' AND e.reference IS NOT NULL AND e.reference LIKE '%:returned'
            """)
        let ledgerFrom: Int64
        if case .recent(let checkpoint) = scope { ledgerFrom = checkpoint.head.lastID } else { ledgerFrom = 0 }
        integer(
            "ledger_user_net",
            """
            SELECT \(sum("CASE side WHEN 'debit' THEN amount_units ELSE -amount_units END"))
            FROM core_ledgerentry WHERE account = 'user_token' AND id > \(ledgerFrom)
            """)
        list(
            "burns_awaiting_debit",
            """
            SELECT j.id FROM core_chainjob j
            WHERE j.job_type = 'burn' AND j.payout_state IN ('requested', 'submitted') AND \(notReleased)
            ORDER BY j.created_at
            """)
        list(
            "unmatched_debits",
            """
            SELECT provider_tx_id FROM (
              SELECT id, provider_tx_id FROM core_externaltransaction WHERE flag IN ('unmatched_debit', 'failed_payout')
              UNION
              SELECT id, provider_tx_id FROM core_externaltransaction
              WHERE direction = 'debit' AND matched_job_id IS NULL AND status = 'settled'
            ) u ORDER BY id
            """)
        list(
            "found_by_poll_first",
            "SELECT provider_tx_id FROM \(windowed) WHERE first_seen_via = 'poll' ORDER BY id DESC LIMIT 50")
        let unminted = """
            SELECT e.provider_tx_id FROM core_externaltransaction e
            WHERE e.direction = 'credit' AND e.status = 'settled' AND e.flag IS NULL AND e.user_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM core_chainjob j WHERE \(minted))
            """
        if full {
            integer("minted", "SELECT \(sum("amount_units")) FROM core_chainjob WHERE job_type = 'mint'")
            integer("burned", "SELECT \(sum("j.amount_units")) FROM core_chainjob j WHERE j.job_type = 'burn' AND \(notReleased)")
            integer("redeemed", "SELECT \(sum("amount_units")) FROM core_chainjob WHERE job_type = 'burn'")
            integer("released", "SELECT \(sum("amount_units")) FROM core_redemptionhold WHERE state = 'released'")
            integer("mint_jobs", "SELECT COUNT(*) FROM core_chainjob WHERE job_type = 'mint'")
            integer("mintable_credits", "SELECT COUNT(*) FROM core_externaltransaction WHERE \(Self.mintableCredit)")
            list("settled_credits_unminted", unminted)
            // SQLite's mint names its transaction by row only (v7-compact-rows).
            list(
                "credits_minted_more_than_once",
                dialect == .postgres
                    ? "SELECT external_tx_id FROM core_chainjob WHERE job_type = 'mint' GROUP BY external_tx_id HAVING COUNT(*) > 1"
                    : """
                    SELECT COALESCE(min(e.provider_tx_id), 'row ' || j.external_tx_row_id)
                    FROM core_chainjob j LEFT JOIN core_externaltransaction e ON e.id = j.external_tx_row_id
                    WHERE j.job_type = 'mint' GROUP BY j.external_tx_row_id HAVING COUNT(*) > 1
                    """)
            list(
                "burns_with_several_debits",
                """
                SELECT matched_job_id FROM core_externaltransaction WHERE matched_job_id IS NOT NULL
                GROUP BY matched_job_id HAVING COUNT(*) > 1
                """)
        } else {
            unmintedSQL = unminted
        }
    }

    /// Without a recount, the list of unminted credits is read only when the running totals say there is one.
    private var unmintedSQL: String?

    /// The queries to run once the running totals are read.
    public func listsAfter(totals: [String: Int64]) -> [(key: String, sql: String)] {
        // Each mintable credit has one mint exactly when the two counts agree, since a credit that was minted stays
        // mintable (its status, flag and customer are settled for good by then). Only a disagreement pays for the
        // list of which credits.
        let stored = RunningTotals(named: totals)
        guard let unmintedSQL, stored.mintableCredits != stored.mintJobs else { return [] }
        return [("settled_credits_unminted", unmintedSQL)]
    }

    /// A credit that must have exactly one mint, as the running total `mintable_credits` counts it.
    public static let mintableCredit = "direction = 'credit' AND status = 'settled' AND flag IS NULL AND user_id IS NOT NULL"

    public func snapshot(_ answers: Answers) -> ReconciliationSnapshot {
        let int = { (key: String) in answers.integers[key] ?? 0 }
        let list = { (key: String) in answers.lists[key] ?? [] }
        let stored = RunningTotals(named: answers.totals)
        let full = scope == .full
        var ledgerUserNet = int("ledger_user_net")
        if case .recent(let checkpoint) = scope { ledgerUserNet &+= checkpoint.userNetUnits }
        var snapshot = ReconciliationSnapshot(
            mintedUnits: full ? int("minted") : stored.mintedUnits,
            burnedUnits: full ? int("burned") : stored.redeemedUnits &- stored.releasedUnits,
            tokenBalanceUnits: int("token_balance"), chainStubUnits: int("chain_stub"),
            settledCreditsUnminted: list("settled_credits_unminted"), heldCreditPaisa: int("held_credit"),
            unboundCreditPaisa: int("unbound_credit"), creditsMintedMoreThanOnce: list("credits_minted_more_than_once"),
            payoutRequestedUnits: int("payout_requested"), burnsAwaitingDebit: list("burns_awaiting_debit"),
            burnsWithSeveralDebits: list("burns_with_several_debits"), unmatchedDebits: list("unmatched_debits"),
            ledgerUserNetUnits: ledgerUserNet, latest: answers.latest,
            arrivals: ArrivalStats(
                answers.arrivals, foundByPollFirst: list("found_by_poll_first"),
                window: full ? nil : ReconciliationScope.arrivalsWindow))
        snapshot.heldUnits = int("held")
        snapshot.heldSubmittedUnits = int("held_submitted")
        snapshot.redemptionAddressUnits = int("redemption_address")
        snapshot.returnedUnits = int("returned")
        snapshot.runningTotals = stored
        if full {
            snapshot.recountedTotals = RunningTotals(
                mintedUnits: int("minted"), redeemedUnits: int("redeemed"), releasedUnits: int("released"),
                mintJobs: int("mint_jobs"), mintableCredits: int("mintable_credits"))
        }
        return snapshot
    }
}
