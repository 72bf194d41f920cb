import Foundation
import HTTPTypes
import HummingbirdTesting
import PKRCore
import Testing

@testable import PKRApplication
@testable import PKRGateway
@testable import PKRPostgres
@testable import PKRSQLite

/// Every checker is itself checked: each reconciliation check, each half of a check with two, and each kind of
/// break `pkr ledger verify` reports is broken on purpose here, on a healthy gateway, and must be reported by name.
/// A check nothing breaks could be deleted, or its query emptied, with every other test still passing.
@Suite("Invariant checks catch what they guard")
struct InvariantCheckTests {
    /// The report's checks, in its order. Each one has a test below that makes it fail.
    static let checkNames = [
        "mints_minus_burns_equal_token_balances",
        "token_balances_equal_chain_stub",
        "redemption_address_equals_held",
        "ledger_matches_token_balances",
        "supply_equals_reserve",
        "every_settled_credit_minted_once",
        "every_burn_paired_with_one_debit",
        "no_unmatched_debits",
        "ledger_debits_equal_credits",
        "ledger_hash_chain_intact",
        "running_totals_match_recount",
    ]
    /// A check without `--full` has every check but the recount's.
    static let recentCheckNames = checkNames.filter { $0 != "running_totals_match_recount" }

    /// The check of the report a ledger break fails. Exhaustive on purpose: a new kind of break does not compile
    /// here until it is given a test in this file.
    static func check(failedBy ledgerBreak: LedgerBreak) -> String {
        switch ledgerBreak {
        case .missingEntry, .hashMismatch, .prevHashMismatch, .headMismatch, .checkpointMismatch: return "ledger_hash_chain_intact"
        case .unbalanced: return "ledger_debits_equal_credits"
        }
    }

    /// What the healthy gateway holds: 1,000.00 PKR deposited and delivered by webhook, 500.00 PKR deposited and
    /// found by the reconciler's poll, and 200.00 PKR redeemed with its payout debit matched. The ledger is six
    /// entries: mint of the webhook credit (1 issuer credit, 2 user debit), mint of the polled credit (3, 4), and
    /// the burn (5 user credit, 6 issuer debit).
    struct Healthy {
        var user: Customer
        var webhookCreditID: String
        var polledCreditID: String
        var mintJobID: String
        var burnJobID: String
        /// In id order.
        var entries: [LedgerEntry]
        var verifier: LedgerChainVerifier
        var snapshot: ReconciliationSnapshot
        var reservePaisa: Int64

        func entry(_ id: Int64) throws -> LedgerEntry { try #require(entries.first { $0.id == id }) }
    }

    static let tokenUnits: Int64 = 1_300 * 100 * Money.unitsPerPaisa

    /// Builds the healthy state through the gateway's own use cases and requires every check to pass on it.
    static func healthy(_ client: any TestClientProtocol, _ gateway: Gateway) async throws -> Healthy {
        let user = try await gateway.seedDemo()
        let deposit = try await gateway.demoCredit(amountPaisa: 100_000, memo: "by webhook")
        let delivered = try await client.webhook(WebhookEvent.encode(deposit))
        try #require(delivered.status == .ok && delivered.string("outcome") == "minted", "\(delivered.text)")
        let polled = try await gateway.demoCredit(amountPaisa: 50_000, memo: "by poll")
        try #require(try await gateway.reconcileOnce().mintedProviderTxIDs == [polled.providerTxID])
        let redeemed = try await gateway.redeem(amountUnits: 200 * 100 * Money.unitsPerPaisa, memo: "cash out", idempotencyKey: nil)
        try #require(!redeemed.isReplay, "\(redeemed)")
        // The payout's debit comes back by poll and confirms the burn.
        _ = try await gateway.reconcileOnce()

        let entries = Array(try await gateway.store.ledgerEntries(customerID: nil, limit: 100, beforeID: nil).reversed())
        try #require(entries.map(\.id) == Array(1...6))
        try #require(entries.map(\.refType) == [.mint, .mint, .mint, .mint, .burn, .burn])
        try #require(entries.map(\.account) == [.issuerToken, .userToken, .issuerToken, .userToken, .userToken, .issuerToken])
        let report = try await gateway.reconciliation(full: true)
        #expect(report.checks.map(\.name) == checkNames, "a check was added or renamed: it needs a test here that breaks it")
        try #require(report.ok, "the healthy state must pass every check first: \(report.text)")
        try #require(report.snapshot.burnsAwaitingDebit.isEmpty && report.snapshot.payoutRequestedUnits == 0)
        try #require(report.snapshot.tokenBalanceUnits == tokenUnits)
        let verifier = try await gateway.store.verifyLedger()
        try #require(verifier.firstBreak == nil && verifier.entriesChecked == 6)
        return Healthy(
            user: user, webhookCreditID: deposit.providerTxID, polledCreditID: polled.providerTxID,
            mintJobID: entries[0].refID, burnJobID: entries[4].refID, entries: entries, verifier: verifier,
            snapshot: report.snapshot, reservePaisa: try await gateway.stub.reservePaisa())
    }

    /// The report must fail exactly `names`, each by name, and pass every other check.
    static func expectFailed(
        _ report: ReconciliationReport, _ names: Set<String>,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(!report.ok, "\(report.text)", sourceLocation: sourceLocation)
        #expect(Set(report.failed.map(\.name)) == names, "\(report.text)", sourceLocation: sourceLocation)
        #expect(report.text.contains("reconciliation: FAILED: "), sourceLocation: sourceLocation)
    }

    static func detail(_ report: ReconciliationReport, _ name: String) -> String {
        report.checks.first { $0.name == name }?.detail ?? "<no check \(name)>"
    }

    /// The SET clause that stores an entry's hash, and its link where the engine stores one: SQLite keeps the hash
    /// as bytes and reads the link from the entry before (v6-compact-ledger); PostgreSQL keeps both as text.
    static func storedLink(_ gateway: Gateway, _ entry: LedgerEntry) -> String {
        gateway.store is SQLiteStore
            ? "entry_hash = X'\(entry.entryHash)'"
            : "prev_hash = '\(entry.prevHash)', entry_hash = '\(entry.entryHash)'"
    }

    /// Rewrites the stored chain to hold `entries`, each linked to and hashed after the one before it, and moves
    /// the head to the last: a forger who knows the hashing rule and leaves no broken link behind.
    static func forgeChain(_ gateway: Gateway, _ entries: [LedgerEntry]) async throws {
        var head = LedgerHead.genesis
        for var entry in entries {
            entry.prevHash = head.lastHash
            entry.entryHash = entry.computedHash()
            try await executeRawSQL(
                gateway,
                "UPDATE core_ledgerentry SET amount_units = \(entry.amountUnits), \(Self.storedLink(gateway, entry)) WHERE id = \(entry.id)"
            )
            head = LedgerHead(entry)
        }
        try await executeRawSQL(
            gateway,
            """
            UPDATE core_ledgerhead SET last_id = \(head.lastID), last_hash = '\(head.lastHash)' WHERE singleton = 1
            """)
        // And the verified checkpoint, which would otherwise remember the chain as it was.
        var forged = LedgerChainVerifier()
        for var entry in entries {
            entry.prevHash = forged.head.lastHash
            entry.entryHash = entry.computedHash()
            _ = forged.check(entry)
        }
        let c = forged.checkpoint
        try await executeRawSQL(
            gateway,
            """
            UPDATE core_ledgercheckpoint SET last_id = \(c.head.lastID), last_hash = '\(c.head.lastHash)', entries = \(c.entries),
              debit_units = \(c.debitUnits), credit_units = \(c.creditUnits), user_net_units = \(c.userNetUnits) WHERE singleton = 1
            """)
    }

    static func insertExternal(
        _ gateway: Gateway, providerTxID: String, userID: String, direction: String, amountPaisa: Int64,
        status: String, matchedJobID: String? = nil
    ) -> String {
        let times = SchemaRuleTests.transactionTimes(gateway, occurredMicros: 0, recordedMicros: 0)
        return """
            INSERT INTO core_externaltransaction (provider_tx_id, account, user_id, direction, amount_paisa, status, memo,
              \(times.columns), first_seen_via, matched_job_id)
            VALUES ('\(providerTxID)', '\(Demo.walletAccount)', '\(userID)', '\(direction)', \(amountPaisa), '\(status)', '',
              \(times.values), 'poll', \(matchedJobID.map { "'\($0)'" } ?? "NULL"))
            """
    }

    // MARK: - Arrivals

    @Test(
        "the database counts arrivals and ranks their lags as a count in Swift would, over the window and the history",
        arguments: TestEngine.all)
    func arrivalFigures(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { _, gateway in
            for scope in [ReconciliationScope.full, .recent(ledgerFrom: .genesis)] {
                let empty = try await gateway.store.reconciliationSnapshot(scope).arrivals
                #expect(empty.lagMicros == nil && empty.webhookOnly + empty.pollOnly + empty.both == 0)
            }
            // Some lags negative (the provider's clock ahead of ours): they count as no lag.
            let rows = (0..<37).map { (i: Int) -> (webhook: Bool, poll: Bool, lagMicros: Int64) in
                let lagMillis = Int64((i * 7_919) % 1_000)
                return (i % 3 != 0, i % 2 == 0, lagMillis * 1_000 - 5_000)
            }
            for (i, row) in rows.enumerated() {
                let times = SchemaRuleTests.transactionTimes(gateway, occurredMicros: 1_000_000, recordedMicros: 1_000_000 + row.lagMicros)
                try await executeRawSQL(
                    gateway,
                    """
                    INSERT INTO core_externaltransaction (provider_tx_id, account, direction, amount_paisa, status,
                      \(times.columns), first_seen_via, seen_via_webhook, seen_via_poll)
                    VALUES ('TX-ARR-\(i)', 'WALLET-X', 'debit', 1, 'failed', \(times.values),
                      '\(row.webhook ? "webhook" : "poll")', \(row.webhook ? "TRUE" : "FALSE"), \(row.poll ? "TRUE" : "FALSE"))
                    """)
            }
            let lags = rows.map { max(0, $0.lagMicros) }.sorted()
            func rank(_ p: Int) -> Int64 { lags[(lags.count * p + 99) / 100 - 1] }
            for scope in [ReconciliationScope.full, .recent(ledgerFrom: .genesis)] {
                let arrivals = try await gateway.store.reconciliationSnapshot(scope).arrivals
                #expect(arrivals.lagMicros == LagPercentiles(p50: rank(50), p90: rank(90), p99: rank(99), max: lags[lags.count - 1]))
                #expect(arrivals.both == rows.count { $0.webhook && $0.poll })
                #expect(arrivals.webhookOnly == rows.count { $0.webhook && !$0.poll })
                #expect(arrivals.pollOnly == rows.count { !$0.webhook })
            }
        }
    }

    // MARK: - Supply and balances

    @Test("mints_minus_burns_equal_token_balances: a mint job's amount raised, the balances left alone", arguments: TestEngine.all)
    func mintsMinusBurns(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            try await executeRawSQL(
                gateway, "UPDATE core_chainjob SET amount_units = amount_units + 10000 WHERE id = '\(healthy.mintJobID)'")
            let report = try await gateway.reconciliation(full: true)
            // The running total kept the amount the job was written with.
            Self.expectFailed(report, ["mints_minus_burns_equal_token_balances", "running_totals_match_recount"])
            #expect(
                Self.detail(report, "mints_minus_burns_equal_token_balances").hasSuffix(
                    "= \(Self.tokenUnits + 10_000); token balances \(Self.tokenUnits)"))
        }
    }

    @Test(
        "token_balances_equal_chain_stub: tokens appear on the chain (with money behind them) that the books never minted",
        arguments: TestEngine.all)
    func tokenBalancesEqualChainStub(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            // One paisa's worth on the chain, and one paisa in the reserve, so that only the books disagree.
            try await executeRawSQL(
                gateway,
                """
                UPDATE chain_stub_chainstubbalance SET balance_units = balance_units + 10000 WHERE address = '\(healthy.user.chainAddress)'
                """)
            try await executeRawSQL(gateway, "UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + 1")
            let report = try await gateway.reconciliation(full: true)
            Self.expectFailed(report, ["token_balances_equal_chain_stub"])
            #expect(
                Self.detail(report, "token_balances_equal_chain_stub")
                    == "token balances \(Self.tokenUnits); chain stub (customer addresses) \(Self.tokenUnits + 10_000)")
        }
    }

    @Test(
        "redemption_address_equals_held: tokens at the redemption address that no held redemption accounts for",
        arguments: TestEngine.all)
    func redemptionAddressEqualsHeld(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            // One paisa's worth appears at the redemption address (whose tokens the reserve no longer backs: their
            // payouts were accepted), with no redemption held.
            try await executeRawSQL(
                gateway,
                """
                INSERT INTO chain_stub_chainstubbalance (address, balance_units) VALUES ('\(ChainOperation.redemptionAddress)', 10000)
                """)
            let report = try await gateway.reconciliation(full: true)
            Self.expectFailed(report, ["redemption_address_equals_held"])
            #expect(Self.detail(report, "redemption_address_equals_held") == "redemption address 10000; redemptions held 0")
        }
    }

    @Test(
        "ledger_matches_token_balances: a mint's two entries raised alike and the chain re-hashed, so it still verifies",
        arguments: TestEngine.all)
    func ledgerMatchesTokenBalances(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            var forged = healthy.entries
            forged[2].amountUnits += 10_000
            forged[3].amountUnits += 10_000
            try await Self.forgeChain(gateway, forged)
            let verified = try await gateway.store.verifyLedger()
            #expect(verified.firstBreak == nil && verified.entriesChecked == 6, "the forgery keeps the chain whole and balanced")
            let report = try await gateway.reconciliation(full: true)
            Self.expectFailed(report, ["ledger_matches_token_balances"])
            #expect(
                Self.detail(report, "ledger_matches_token_balances")
                    == "ledger user positions \(Self.tokenUnits + 10_000); token balances \(Self.tokenUnits) + held 0")
        }
    }

    @Test("supply_equals_reserve: the reserve holds money no token stands for", arguments: TestEngine.all)
    func reserveExceedsSupply(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            try await executeRawSQL(gateway, "UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + 1")
            let report = try await gateway.reconciliation(full: true)
            Self.expectFailed(report, ["supply_equals_reserve"])
            #expect(
                Self.detail(report, "supply_equals_reserve").contains("exceeds supply and in-flight amounts by 10000 units"),
                "\(report.text)")
            #expect(report.reserveUnits == Int128(Self.tokenUnits) + 10_000)
        }
    }

    @Test("supply_equals_reserve: tokens stand for money the reserve does not hold", arguments: TestEngine.all)
    func supplyExceedsReserve(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            try await executeRawSQL(gateway, "UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa - 1")
            let report = try await gateway.reconciliation(full: true)
            Self.expectFailed(report, ["supply_equals_reserve"])
            #expect(
                Self.detail(report, "supply_equals_reserve").contains(
                    "exceed the reserve \(Self.tokenUnits - 10_000) by 10000 units: tokens without money"),
                "\(report.text)")
        }
    }

    // MARK: - Credits, burns and debits

    @Test("every_settled_credit_minted_once: a settled credit recorded with no mint", arguments: TestEngine.all)
    func settledCreditUnminted(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            try await executeRawSQL(
                gateway,
                Self.insertExternal(
                    gateway, providerTxID: "TX-never-minted", userID: healthy.user.id,
                    direction: "credit", amountPaisa: 10_000, status: "settled"))
            // The running totals' counts disagree, so the check from them lists the credit too.
            for full in [false, true] {
                let report = try await gateway.reconciliation(full: full)
                Self.expectFailed(report, ["every_settled_credit_minted_once"])
                #expect(report.snapshot.settledCreditsUnminted == ["TX-never-minted"])
                #expect(Self.detail(report, "every_settled_credit_minted_once").contains(#"unminted: ["TX-never-minted"]"#))
            }
        }
    }

    @Test(
        "every_settled_credit_minted_once: a credit minted twice is refused by the schema, and reported when the guard is gone",
        arguments: TestEngine.all)
    func creditMintedTwice(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            let credit = healthy.webhookCreditID
            // A second mint job for the webhook's credit, with a chain receipt of its own where the schema asks one.
            let secondMint: String
            let dropGuard: String
            switch engine {
            case .sqlite:
                secondMint = """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                    VALUES ('0xsecond', 'mint', '\(healthy.user.chainAddress)', 10000, 'job-second-mint', 'now');
                    INSERT INTO core_chainjob
                      (id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, memo, created_at_micros)
                    SELECT 'job-second-mint', 'mint', user_id, 10000, 'confirmed', '0xsecond', id, '', 0
                    FROM core_externaltransaction WHERE provider_tx_id = '\(credit)'
                    """
                dropGuard = "DROP INDEX core_chainjob_external_tx_row"
            case .postgres:
                secondMint = """
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, memo, created_at)
                    VALUES ('job-second-mint', 'mint', '\(healthy.user.id)', 10000, 'confirmed', '0xsecond', '\(credit)', '', 'now')
                    """
                dropGuard = "ALTER TABLE core_chainjob DROP CONSTRAINT core_chainjob_external_tx_id_key"
            }
            await SchemaRuleTests.expectRefused(gateway, secondMint)
            #expect(try await gateway.reconciliation(full: true).ok, "nothing refused was written")

            // The check itself, on the figures a store would read if the rule ever let a second mint through.
            var snapshot = healthy.snapshot
            snapshot.creditsMintedMoreThanOnce = [credit]
            let byHand = ReconciliationReport(snapshot: snapshot, ledger: healthy.verifier, reservePaisa: healthy.reservePaisa)
            Self.expectFailed(byHand, ["every_settled_credit_minted_once"])
            #expect(Self.detail(byHand, "every_settled_credit_minted_once").contains("minted more than once: [\"\(credit)\"]"))

            // And the store's own query: with the unique rule dropped, the same statement goes through (so it was
            // the rule that refused it) and the snapshot names the credit. Its extra amount unbalances the mints too.
            try await executeRawSQL(gateway, dropGuard)
            try await executeRawSQL(gateway, secondMint)
            let report = try await gateway.reconciliation(full: true)
            #expect(report.snapshot.creditsMintedMoreThanOnce == [credit])
            Self.expectFailed(report, ["every_settled_credit_minted_once", "mints_minus_burns_equal_token_balances"])
            #expect(Self.detail(report, "every_settled_credit_minted_once").contains("minted more than once: [\"\(credit)\"]"))
        }
    }

    @Test(
        "every_burn_paired_with_one_debit: a second debit matched to a burn is refused by the schema, and reported when the guard is gone",
        arguments: TestEngine.all)
    func burnWithTwoDebits(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            let secondDebit = Self.insertExternal(
                gateway, providerTxID: "TX-second-debit", userID: healthy.user.id, direction: "debit",
                amountPaisa: 20_000, status: "settled", matchedJobID: healthy.burnJobID)
            await SchemaRuleTests.expectRefused(gateway, secondDebit)
            #expect(try await gateway.reconciliation(full: true).ok, "nothing refused was written")

            var snapshot = healthy.snapshot
            snapshot.burnsWithSeveralDebits = [healthy.burnJobID]
            let byHand = ReconciliationReport(snapshot: snapshot, ledger: healthy.verifier, reservePaisa: healthy.reservePaisa)
            Self.expectFailed(byHand, ["every_burn_paired_with_one_debit"])
            #expect(Self.detail(byHand, "every_burn_paired_with_one_debit").contains(healthy.burnJobID))

            // The partial unique index has the same name on both engines.
            try await executeRawSQL(gateway, "DROP INDEX core_externaltransaction_matched_job")
            try await executeRawSQL(gateway, secondDebit)
            let report = try await gateway.reconciliation(full: true)
            #expect(report.snapshot.burnsWithSeveralDebits == [healthy.burnJobID])
            Self.expectFailed(report, ["every_burn_paired_with_one_debit"])
            #expect(Self.detail(report, "every_burn_paired_with_one_debit") == "burns with several debits: [\"\(healthy.burnJobID)\"]")
        }
    }

    @Test("no_unmatched_debits: the provider reports a debit no burn asked for", arguments: TestEngine.all)
    func unmatchedDebit(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            let debitID = "TX-nobody-asked"
            let delivered = try await client.webhook(creditEvent(debitID, amountPKR: "5.00", direction: .debit))
            #expect(delivered.status == .ok && delivered.string("outcome") == "recorded", "\(delivered.text)")
            for full in [false, true] {
                let report = try await gateway.reconciliation(full: full)
                Self.expectFailed(report, ["no_unmatched_debits"])
                #expect(report.snapshot.unmatchedDebits == [debitID])
                #expect(Self.detail(report, "no_unmatched_debits").contains(debitID))
            }
        }
    }

    @Test("no_unmatched_debits: a settled debit paired with no burn is seen even without its flag", arguments: TestEngine.all)
    func unflaggedUnmatchedDebit(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            let debitID = "TX-flag-cleared"
            let delivered = try await client.webhook(creditEvent(debitID, amountPKR: "5.00", direction: .debit))
            #expect(delivered.status == .ok && delivered.string("outcome") == "recorded", "\(delivered.text)")
            // Someone clears the flag by hand: the debit still pairs with no burn.
            try await executeRawSQL(gateway, "UPDATE core_externaltransaction SET flag = NULL WHERE provider_tx_id = '\(debitID)'")
            let report = try await gateway.reconciliation(full: true)
            Self.expectFailed(report, ["no_unmatched_debits"])
            #expect(report.snapshot.unmatchedDebits == [debitID])
        }
    }

    @Test("no_unmatched_debits: the provider reports a failed payout no redemption asked for", arguments: TestEngine.all)
    func failedPayout(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            // A failed debit releases the redemption it names, once the provider confirms it; one naming a payout
            // the provider never made belongs to no redemption, and is flagged.
            let debitID = "TX-payout-failed"
            let delivered = try await client.webhook(
                creditEvent(
                    debitID, amountPKR: "200.00", direction: .debit, status: .failed,
                    reference: "job-nobody-asked-for"))
            #expect(delivered.status == .ok && delivered.string("outcome") == "recorded", "\(delivered.text)")
            let flags = try await gateway.store.externalTransactions(limit: 10, beforeID: nil).filter { $0.tx.providerTxID == debitID }.map(
                \.flag)
            #expect(flags == ["failed_payout"])
            let report = try await gateway.reconciliation(full: true)
            Self.expectFailed(report, ["no_unmatched_debits"])
            #expect(report.snapshot.unmatchedDebits == [debitID])
            #expect(Self.detail(report, "no_unmatched_debits").contains(debitID))
        }
    }

    // MARK: - The ledger (each kind of break `pkr ledger verify` reports)

    /// Verifies the ledger after tampering: the break must be `expected`, and the report must fail the check that
    /// break belongs to, plus `alsoFailed` (what else the tampering truly changed), and nothing more.
    static func expectLedgerBreak(
        _ gateway: Gateway, _ expected: LedgerBreak, alsoFailed: Set<String> = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let verified = try await gateway.store.verifyLedger()
        #expect(verified.firstBreak == expected, sourceLocation: sourceLocation)
        let report = try await gateway.reconciliation(full: true)
        expectFailed(report, alsoFailed.union([check(failedBy: expected)]), sourceLocation: sourceLocation)
        #expect(
            detail(report, check(failedBy: expected)).contains(expected.description) || expected.isUnbalanced,
            "\(report.text)", sourceLocation: sourceLocation)
    }

    @Test("ledger verify, hashMismatch: an entry's amount altered in place", arguments: TestEngine.all)
    func hashMismatch(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET amount_units = amount_units + 10000 WHERE id = 3")
            try await Self.expectLedgerBreak(gateway, .hashMismatch(id: 3))
        }
    }

    @Test(
        "ledger verify, prevHashMismatch: an entry relinked past its predecessor, its own hash made to match",
        arguments: TestEngine.all)
    func prevHashMismatch(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            var relinked = try healthy.entry(3)
            relinked.prevHash = try healthy.entry(1).entryHash
            relinked.entryHash = relinked.computedHash()
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET \(Self.storedLink(gateway, relinked)) WHERE id = 3")
            // SQLite stores no link of its own (v6-compact-ledger): it reads entry 2's hash as the link, so entry 3's
            // hash no longer matches. PostgreSQL stores the link and finds it pointing past entry 2.
            try await Self.expectLedgerBreak(gateway, engine == .sqlite ? .hashMismatch(id: 3) : .prevHashMismatch(id: 3))
        }
    }

    @Test("ledger verify, missingEntry: an entry deleted from the middle leaves a gap in the ids", arguments: TestEngine.all)
    func missingEntry(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            try await executeRawSQL(gateway, "DELETE FROM core_ledgerentry WHERE id = 3")
            try await Self.expectLedgerBreak(gateway, .missingEntry(expectedID: 3, foundID: 4))
        }
    }

    @Test(
        "ledger verify, headMismatch: the stored head names another hash, then the chain's tail is cut off",
        arguments: TestEngine.all)
    func headMismatch(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            try await executeRawSQL(
                gateway, "UPDATE core_ledgerhead SET last_hash = '\(try healthy.entry(5).entryHash)' WHERE singleton = 1")
            try await Self.expectLedgerBreak(gateway, .headMismatch(headID: 6, lastID: 6))

            try await executeRawSQL(
                gateway, "UPDATE core_ledgerhead SET last_hash = '\(healthy.verifier.head.lastHash)' WHERE singleton = 1")
            #expect(try await gateway.reconciliation(full: true).ok)
            // The burn's two entries removed: every remaining link holds, only the head remembers them. Their
            // user-side credit goes with them, so the ledger's user positions no longer match the balances either.
            try await executeRawSQL(gateway, "DELETE FROM core_ledgerentry WHERE id >= 5")
            try await Self.expectLedgerBreak(gateway, .headMismatch(headID: 6, lastID: 4), alsoFailed: ["ledger_matches_token_balances"])
        }
    }

    @Test(
        "ledger verify, unbalanced: one side of a mint raised and the chain re-hashed; ledger_debits_equal_credits fails",
        arguments: TestEngine.all)
    func unbalanced(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            var forged = healthy.entries
            forged[2].amountUnits += 10_000  // the issuer's credit for the polled deposit; the user's side is untouched
            try await Self.forgeChain(gateway, forged)
            let debits = healthy.verifier.debitUnits
            try await Self.expectLedgerBreak(gateway, .unbalanced(debitUnits: debits, creditUnits: debits + 10_000))
            #expect(try await gateway.store.verifyLedger().entriesChecked == 6, "every link and hash holds")
            let report = try await gateway.reconciliation(full: true)
            #expect(Self.detail(report, "ledger_debits_equal_credits").hasPrefix("debits \(debits); credits \(debits + 10_000)"))
        }
    }

    @Test("ledger verify: an entry hashed correctly but with a non-positive amount is reported as altered")
    func nonPositiveAmount() {
        // The schema refuses such a row on both engines, so the rule is shown on the verifier alone.
        var entry = LedgerEntry(
            id: 1, userID: nil, side: .credit, account: .issuerToken, amountUnits: -5, refType: .mint,
            refID: "job", createdAt: "now", prevHash: LedgerHead.genesisHash, entryHash: "")
        entry.entryHash = entry.computedHash()
        var verifier = LedgerChainVerifier()
        let accepted = verifier.check(entry)
        #expect(!accepted)
        #expect(verifier.firstBreak == .hashMismatch(id: 1))
        #expect(verifier.entriesChecked == 0)
    }

    // MARK: - The commands an operator runs

    @Test("pkr reconcile and pkr ledger verify exit 0 on a healthy gateway and 1 naming what broke", arguments: TestEngine.all)
    func commandExitStatus(engine: TestEngine) async throws {
        try #require(FileManager.default.isExecutableFile(atPath: ServerProcess.binary.path), "build the pkr executable first")
        let config = try await testConfig(engine: engine)
        try await withApp(config) { client, gateway in
            let healthy = try await Self.healthy(client, gateway)
            let clean = try await Self.runPKR(["reconcile", "--check-only"], config)
            #expect(clean.status == 0, "\(clean.output)")
            #expect(clean.output.contains("reconciliation: all checks passed"), "\(clean.output)")
            #expect(try await Self.runPKR(["ledger", "verify"], config).status == 0)

            try await executeRawSQL(
                gateway,
                Self.insertExternal(
                    gateway, providerTxID: "TX-never-minted", userID: healthy.user.id,
                    direction: "credit", amountPaisa: 10_000, status: "settled"))
            try await executeRawSQL(gateway, "DELETE FROM core_ledgerentry WHERE id = 3")
            // Without --full the check trusts the ledger's verified checkpoint, which is past entry 3.
            let recent = try await Self.runPKR(["reconcile", "--check-only"], config)
            #expect(recent.status == 1, "\(recent.output)")
            #expect(recent.output.contains("reconciliation: FAILED: every_settled_credit_minted_once\n"), "\(recent.output)")
            let reconcile = try await Self.runPKR(["reconcile", "--check-only", "--full"], config)
            #expect(reconcile.status == 1, "\(reconcile.output)")
            #expect(reconcile.output.contains("FAIL every_settled_credit_minted_once: "), "\(reconcile.output)")
            #expect(
                reconcile.output.contains("reconciliation: FAILED: every_settled_credit_minted_once, ledger_hash_chain_intact"),
                "\(reconcile.output)")
            let verify = try await Self.runPKR(["ledger", "verify"], config)
            #expect(verify.status == 1, "\(verify.output)")
            #expect(
                verify.output.contains(
                    "ledger verify: FAILED after 2 good entries: \(LedgerBreak.missingEntry(expectedID: 3, foundID: 4))"),
                "\(verify.output)")
        }
    }

    /// Runs the built `pkr` against the config's database and returns its exit status and standard output.
    static func runPKR(_ arguments: [String], _ config: GatewayConfig) async throws -> (status: Int32, output: String) {
        let outputURL = try temporaryDirectory().appendingPathComponent("out.txt")
        try #require(FileManager.default.createFile(atPath: outputURL.path, contents: nil))
        let output = try FileHandle(forWritingTo: outputURL)
        defer { try? output.close() }
        var env = ProcessInfo.processInfo.environment
        env["DB_ENGINE"] = config.databaseEngine.rawValue
        env["SQLITE_PATH"] = config.sqlitePath
        env["POSTGRES_HOST"] = config.postgres.host
        env["POSTGRES_PORT"] = String(config.postgres.port)
        env["POSTGRES_USER"] = config.postgres.user
        env["POSTGRES_PASSWORD"] = config.postgres.password
        env["POSTGRES_DB"] = config.postgres.database
        env["LOG_LEVEL"] = "error"
        let process = Process()
        process.executableURL = ServerProcess.binary
        process.arguments = arguments
        process.environment = env
        process.currentDirectoryURL = outputURL.deletingLastPathComponent()
        // Its log lines (errors only) land in the same file, to explain an unexpected status.
        process.standardOutput = output
        process.standardError = output
        try process.run()
        // Reaped with waitpid, falling back to Foundation's status should it reap the child first (as PrivateCluster).
        var status: Int32 = 0
        for _ in 0..<1200 {
            let reaped = waitpid(process.processIdentifier, &status, WNOHANG)
            if reaped == process.processIdentifier {
                guard status & 0x7f == 0 else { throw POSIXError(.EINTR) }
                return ((status >> 8) & 0xff, try String(contentsOf: outputURL, encoding: .utf8))
            }
            if reaped == -1, !process.isRunning {
                return (process.terminationStatus, try String(contentsOf: outputURL, encoding: .utf8))
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.terminate()
        throw POSIXError(.ETIMEDOUT)
    }
}

// MARK: - Running totals and the ledger's checkpoint (what a check reads instead of the whole history)

extension InvariantCheckTests {
    @Test(
        "running_totals_match_recount: a running total raised by hand fails the check from totals, and the recount names it",
        arguments: TestEngine.all)
    func runningTotalAltered(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            // SQLite keeps one row per total; PostgreSQL's writers append rows that a read adds up.
            try await executeRawSQL(
                gateway,
                engine == .sqlite
                    ? "UPDATE core_runningtotal SET value = value + 10000 WHERE name = 'minted_units'"
                    : "INSERT INTO core_runningtotal (name, value) VALUES ('minted_units', 10000)")
            let recent = try await gateway.reconciliation()
            Self.expectFailed(recent, ["mints_minus_burns_equal_token_balances"])
            #expect(recent.snapshot.mintedUnits == Self.tokenUnits + 200 * 100 * Money.unitsPerPaisa + 10_000)
            let full = try await gateway.reconciliation(full: true)
            Self.expectFailed(full, ["running_totals_match_recount"])
            #expect(full.snapshot.runningTotals?.mintedUnits == full.snapshot.mintedUnits + 10_000)
        }
    }

    @Test("running totals follow mints, redeems and releases", arguments: TestEngine.all)
    func runningTotalsFollowWrites(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            // A payout the provider refuses releases its hold; a credit above the limit waits for an operator's mint.
            let refuseNext = try await client.call(
                .post, "/provider/v1/test/fail-payouts", json: #"{"count":1,"failure_code":"account_closed"}"#,
                headers: [.authorization: "Bearer \(DevKeys.providerAPIKey)"], csrf: false)
            try #require(refuseNext.status == .ok, "\(refuseNext.text)")
            _ = try await gateway.redeem(amountUnits: 100 * 100 * Money.unitsPerPaisa, memo: "refused", idempotencyKey: nil)
            // PostgreSQL's writers append their changes as rows; a reconciler pass folds them to one per total.
            let rowsBefore = try await Self.runningTotalRows(gateway)
            _ = try await gateway.reconcileOnce()
            if engine == .postgres {
                #expect(rowsBefore > RunningTotals.names.count, "the redeem and its release appended their changes")
                #expect(try await Self.runningTotalRows(gateway) == RunningTotals.names.count)
            }
            let report = try await gateway.reconciliation(full: true)
            #expect(report.ok, "\(report.text)")
            let totals = try #require(report.snapshot.runningTotals)
            #expect(totals == report.snapshot.recountedTotals)
            #expect(totals.releasedUnits == 100 * 100 * Money.unitsPerPaisa)
            #expect(totals.mintJobs == 2 && totals.mintableCredits == 2)
        }
    }

    @Test(
        "the mintable-credit total moves only when an update makes a credit mintable or no longer, and always matches the recount",
        arguments: TestEngine.all)
    func mintableTotalFollowsUpdates(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            let credit = try #require(
                try await gateway.store.externalTransactions(limit: 100, beforeID: nil).first {
                    $0.tx.direction == .credit && $0.tx.status == .settled && $0.flag == nil && $0.customerID != nil
                })
            let id = credit.tx.providerTxID
            func mintable() async throws -> Int64 {
                let report = try await gateway.reconciliation(full: true)
                let totals = try #require(report.snapshot.runningTotals)
                #expect(totals.mintableCredits == report.snapshot.recountedTotals?.mintableCredits)
                return totals.mintableCredits
            }
            let before = try await mintable()
            let steps: [(sql: String, change: Int64)] = [
                ("UPDATE core_externaltransaction SET flag = 'above_mint_limit' WHERE provider_tx_id = '\(id)'", -1),
                ("UPDATE core_externaltransaction SET memo = 'edited', flag = 'above_mint_limit' WHERE provider_tx_id = '\(id)'", 0),
                ("UPDATE core_externaltransaction SET seen_via_poll = TRUE", 0),
                ("UPDATE core_externaltransaction SET flag = NULL WHERE provider_tx_id = '\(id)'", 1),
                ("UPDATE core_externaltransaction SET status = 'failed' WHERE provider_tx_id = '\(id)'", -1),
                ("UPDATE core_externaltransaction SET status = 'settled', user_id = user_id WHERE provider_tx_id = '\(id)'", 1),
            ]
            var expected = before
            for step in steps {
                try await executeRawSQL(gateway, step.sql)
                expected += step.change
                #expect(try await mintable() == expected, "after \(step.sql)")
            }
        }
    }

    static func runningTotalRows(_ gateway: Gateway) async throws -> Int {
        switch gateway.store {
        case let sqlite as SQLiteStore:
            return try await sqlite.database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM core_runningtotal") ?? 0 }
        case let postgres as PostgresStore:
            for try await count in try await postgres.client.query("SELECT COUNT(*) FROM core_runningtotal", logger: testLogger())
                .decode(Int64.self)
            {
                return Int(count)
            }
            return 0
        default:
            Issue.record("unknown store \(type(of: gateway.store))")
            return 0
        }
    }

    @Test(
        "the ledger's checkpoint: history rewritten before it needs the full recount, a break after it is found at once",
        arguments: TestEngine.all)
    func checkpointScope(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            #expect(try await gateway.store.ledgerCheckpoint().head.lastID == 6, "the healthy report stored its checkpoint")
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET amount_units = amount_units + 10000 WHERE id = 3")
            // The checkpoint vouches for entries 1 to 6: the check from it does not reread them.
            #expect(try await gateway.reconciliation().ok)
            try await Self.expectLedgerBreak(gateway, .hashMismatch(id: 3))
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET amount_units = amount_units - 10000 WHERE id = 3")

            let deposit = try await gateway.demoCredit(amountPaisa: 10_000, memo: "after the checkpoint")
            let delivered = try await client.webhook(WebhookEvent.encode(deposit))
            try #require(delivered.string("outcome") == "minted", "\(delivered.text)")
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET amount_units = amount_units + 10000 WHERE id = 7")
            let recent = try await gateway.reconciliation()
            Self.expectFailed(recent, ["ledger_hash_chain_intact"])
            #expect(Self.detail(recent, "ledger_hash_chain_intact").contains(LedgerBreak.hashMismatch(id: 7).description))
            #expect(try await gateway.store.ledgerCheckpoint().head.lastID == 6, "a chain with a break is not vouched for")
        }
    }

    @Test(
        "a ledger longer than one read batch verifies whole, resumes from its checkpoint, and a break past the first batch is found",
        arguments: TestEngine.all)
    func ledgerLongerThanOneBatch(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            let deposits = LedgerChainVerifier.batchSize * 3 / 4
            try await gateway.stub.recordUnannouncedDeposits(
                account: Demo.walletAccount, amountsPaisa: [Int64](repeating: 100, count: deposits), memo: "long ledger")
            #expect(try await gateway.reconcileOnce().minted == deposits)
            let entries = Int64(6 + 2 * deposits)
            let recent = try await gateway.reconciliation()
            #expect(recent.ok, "\(recent.text)")
            #expect(try await gateway.store.ledgerCheckpoint().head.lastID == entries)
            let full = try await gateway.store.verifyLedger()
            #expect(full.firstBreak == nil && full.entriesChecked == entries)
            #expect(full.checkpoint == (try await gateway.store.ledgerCheckpoint()), "the recount reproduces the stored checkpoint")

            let far = Int64(LedgerChainVerifier.batchSize + 7)
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET amount_units = amount_units + 10000 WHERE id = \(far)")
            try await Self.expectLedgerBreak(gateway, .hashMismatch(id: far))
        }
    }

    @Test("ledger verify, checkpointMismatch: the stored checkpoint altered", arguments: TestEngine.all)
    func checkpointMismatch(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await Self.healthy(client, gateway)
            try await executeRawSQL(gateway, "UPDATE core_ledgercheckpoint SET user_net_units = user_net_units + 10000")
            Self.expectFailed(try await gateway.reconciliation(), ["ledger_matches_token_balances"])
            try await Self.expectLedgerBreak(gateway, .checkpointMismatch(id: 6))
        }
    }
}

extension LedgerBreak {
    /// An unbalanced ledger is reported by the debits-and-credits check, whose detail gives the two sums.
    fileprivate var isUnbalanced: Bool {
        if case .unbalanced = self { return true }
        return false
    }
}
