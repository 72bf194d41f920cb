import PKRCore

/// The proof that no token exists without money and no money without a token, check by check.
public struct ReconciliationReport: Sendable {
    public struct Check: Sendable {
        public var name: String
        public var ok: Bool
        public var detail: String
    }

    public let snapshot: ReconciliationSnapshot
    public let checks: [Check]
    /// Reconciliation adds up whole-system figures, so it works in Int128: extreme amounts cannot overflow it.
    public let reserveUnits: Int128
    public let heldCreditUnits: Int128
    public let unboundCreditUnits: Int128

    public var ok: Bool { checks.allSatisfy(\.ok) }
    public var failed: [Check] { checks.filter { !$0.ok } }
    public var netUnits: Int128 { Int128(snapshot.mintedUnits) - Int128(snapshot.burnedUnits) }

    public init(snapshot s: ReconciliationSnapshot, ledger: LedgerChainVerifier, reservePaisa: Int64) {
        self.snapshot = s
        let reserveUnits = Int128(reservePaisa) * Int128(Money.unitsPerPaisa)
        let heldCreditUnits = Int128(s.heldCreditPaisa) * Int128(Money.unitsPerPaisa)
        let unboundCreditUnits = Int128(s.unboundCreditPaisa) * Int128(Money.unitsPerPaisa)
        self.reserveUnits = reserveUnits
        self.heldCreditUnits = heldCreditUnits
        self.unboundCreditUnits = unboundCreditUnits
        var checks: [Check] = []
        func check(_ name: String, _ ok: Bool, _ detail: String) { checks.append(Check(name: name, ok: ok, detail: detail)) }

        // Without a recount, "more than once" is left to the unique indexes that refuse it.
        let uniqueByIndex = s.recountedTotals == nil ? " (a second is refused by a unique index; --full recounts)" : ""
        let net = Int128(s.mintedUnits) - Int128(s.burnedUnits)
        check(
            "mints_minus_burns_equal_token_balances", net == Int128(s.tokenBalanceUnits),
            "mints \(s.mintedUnits) - burns \(s.burnedUnits) = \(net); token balances \(s.tokenBalanceUnits)")
        check(
            "token_balances_equal_chain_stub", s.tokenBalanceUnits == s.chainStubUnits,
            "token balances \(s.tokenBalanceUnits); chain stub (customer addresses) \(s.chainStubUnits)")
        check(
            "redemption_address_equals_held", s.redemptionAddressUnits == s.heldUnits,
            "redemption address \(s.redemptionAddressUnits); redemptions held \(s.heldUnits)")
        // Held tokens are not burnt yet: the ledger posts a redemption's burn when its payout is paid.
        let ledgerExpected = Int128(s.tokenBalanceUnits) + Int128(s.heldUnits)
        check(
            "ledger_matches_token_balances", Int128(s.ledgerUserNetUnits) == ledgerExpected,
            "ledger user positions \(s.ledgerUserNetUnits); token balances \(s.tokenBalanceUnits) + held \(s.heldUnits)")
        // The reserve may exceed the customers' tokens only by what is knowingly in flight: redemptions whose payout
        // the provider has not accepted yet (their money is still in the reserve; accepted ones have left it), credits
        // held for an operator and credits on unbound accounts. Anything else is money without a token (or the
        // reverse).
        let explained = Int128(s.chainStubUnits) + Int128(s.payoutRequestedUnits) + heldCreditUnits + unboundCreditUnits
        let gap = reserveUnits - explained
        check(
            "supply_equals_reserve", gap == 0,
            gap == 0
                ? "customer supply \(s.chainStubUnits) + payouts not yet accepted \(s.payoutRequestedUnits) + held credits \(heldCreditUnits) "
                    + "+ unbound credits \(unboundCreditUnits) = reserve \(reserveUnits)"
                : gap > 0
                    ? "reserve \(reserveUnits) exceeds supply and in-flight amounts by \(gap) units: credits not yet ingested (webhook in flight or lost; run the reconciler)"
                    : "supply and in-flight amounts exceed the reserve \(reserveUnits) by \(-gap) units: tokens without money")
        check(
            "every_settled_credit_minted_once", s.settledCreditsUnminted.isEmpty && s.creditsMintedMoreThanOnce.isEmpty,
            s.settledCreditsUnminted.isEmpty && s.creditsMintedMoreThanOnce.isEmpty
                ? "every settled credit has exactly one mint" + uniqueByIndex
                : "unminted: \(s.settledCreditsUnminted.prefix(20)); minted more than once: \(s.creditsMintedMoreThanOnce.prefix(20))")
        check(
            "every_burn_paired_with_one_debit", s.burnsWithSeveralDebits.isEmpty,
            s.burnsWithSeveralDebits.isEmpty
                ? "no burn has more than one provider debit\(uniqueByIndex); \(s.burnsAwaitingDebit.count) awaiting their debit"
                : "burns with several debits: \(s.burnsWithSeveralDebits.prefix(20))")
        check(
            "no_unmatched_debits", s.unmatchedDebits.isEmpty,
            s.unmatchedDebits.isEmpty
                ? "every provider debit belongs to a burn"
                : "debits with no burn (or failed payouts): \(s.unmatchedDebits.prefix(20))")
        check(
            "ledger_debits_equal_credits", ledger.debitUnits == ledger.creditUnits,
            "debits \(ledger.debitUnits); credits \(ledger.creditUnits) over \(ledger.entriesChecked) entries")
        let chainBreak: LedgerBreak? = {
            if case .unbalanced = ledger.firstBreak { return nil }
            return ledger.firstBreak
        }()
        check(
            "ledger_hash_chain_intact", chainBreak == nil,
            chainBreak.map { "\($0)" } ?? "\(ledger.entriesChecked) entries, head \(ledger.head.lastHash.prefix(16))…")
        if let recounted = s.recountedTotals {
            let stored = s.runningTotals
            check(
                "running_totals_match_recount", stored == recounted,
                stored == recounted
                    ? "minted, redeemed and released units, mint jobs and mintable credits match a recount from the rows"
                    : "running totals \(stored.map { "\($0)" } ?? "missing"); recounted from the rows \(recounted)")
        }
        self.checks = checks
    }

    public var invariantsJSON: JSONValue {
        .object([
            ("ok", .bool(ok)),
            ("checks", .array(checks.map { .object([("name", .string($0.name)), ("ok", .bool($0.ok)), ("detail", .string($0.detail))]) })),
            (
                "in_flight",
                .object([
                    ("payouts_requested_units", .string(String(snapshot.payoutRequestedUnits))),
                    ("held_units", .string(String(snapshot.heldUnits))),
                    // Accepted by the provider, not yet known to be paid: paid-not-burnt until their debit arrives.
                    ("held_submitted_units", .string(String(snapshot.heldSubmittedUnits))),
                    ("burns_awaiting_debit", .integer(Int64(snapshot.burnsAwaitingDebit.count))),
                    ("returned_units", .string(String(snapshot.returnedUnits))),
                    ("held_credit_units", .string(String(heldCreditUnits))),
                    ("unbound_credit_units", .string(String(unboundCreditUnits))),
                ])
            ),
            ("reserve_units", .string(String(reserveUnits))),
            ("supply_units", .string(String(Int128(snapshot.chainStubUnits) + Int128(snapshot.redemptionAddressUnits)))),
        ])
    }

    /// Nearest-rank percentiles of the arrival lag, in milliseconds as exact decimal text.
    var lagSummary: (p50: String, p90: String, p99: String, max: String)? {
        snapshot.arrivals.lagMicros.map { (millis($0.p50), millis($0.p90), millis($0.p99), millis($0.max)) }
    }

    public var convergenceJSON: JSONValue {
        let a = snapshot.arrivals
        let lags = lagSummary
        return .object([
            ("webhook_only", .integer(Int64(a.webhookOnly))),
            ("poll_only", .integer(Int64(a.pollOnly))),
            ("both", .integer(Int64(a.both))),
            (
                "lag_ms",
                .object([
                    ("p50", .optional(lags?.p50)), ("p90", .optional(lags?.p90)), ("p99", .optional(lags?.p99)),
                    ("max", .optional(lags?.max)),
                ])
            ),
            ("found_by_poll_first", .array(a.foundByPollFirst.map(JSONValue.string))),
            // The latest transactions these figures cover; null for the whole history.
            ("window", a.window.map { .integer(Int64($0)) } ?? .null),
        ])
    }

    private func millis(_ micros: Int64) -> String { Timestamp.millisText(micros: micros) }

    /// The report as printed by `pkr reconcile`.
    public var text: String {
        var lines = checks.map { "\($0.ok ? "ok  " : "FAIL") \($0.name): \($0.detail)" }
        let s = snapshot
        lines.append(
            "in flight: redemptions held \(s.heldUnits) (payout accepted, paid-not-burnt until its debit arrives: \(s.heldSubmittedUnits)), "
                + "payouts not yet accepted \(s.payoutRequestedUnits), held credits \(heldCreditUnits), unbound credits \(unboundCreditUnits); "
                + "returned payouts minted back \(s.returnedUnits)")
        let a = snapshot.arrivals
        lines.append(
            "arrivals\(a.window.map { " (latest \($0) transactions)" } ?? ""): webhook only \(a.webhookOnly), poll only \(a.pollOnly), both \(a.both)"
        )
        if let lags = lagSummary {
            lines.append("lag from provider time to first sight (ms): p50 \(lags.p50), p90 \(lags.p90), p99 \(lags.p99), max \(lags.max)")
        }
        if !a.foundByPollFirst.isEmpty {
            lines.append(
                "found by the poll before any webhook: \(a.foundByPollFirst.prefix(10).joined(separator: ", "))\(a.foundByPollFirst.count > 10 ? ", …" : "")"
            )
        }
        lines.append(ok ? "reconciliation: all checks passed" : "reconciliation: FAILED: \(failed.map(\.name).joined(separator: ", "))")
        return lines.joined(separator: "\n")
    }
}
