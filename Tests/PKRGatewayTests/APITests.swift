import Foundation
import HTTPTypes
import HummingbirdTesting
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

@Suite("Seed API through the router")
struct APITests {
    @Test("the seed walkthrough gives the seed's results in poll-only mode", arguments: TestEngine.all)
    func walkthrough(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            #expect(try await client.call(.get, "/api/health").object["ok"] as? Bool == true)
            let seeded = try await client.call(.post, "/api/demo/seed")
            #expect(seeded.status == .ok)
            #expect(seeded.string("wallet_account") == "WALLET-001")
            let again = try await client.call(.post, "/api/demo/seed")
            #expect(again.string("user_id") == seeded.string("user_id"), "seeding is idempotent")

            let credit = try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00","memo":"Deposit #1"}"#)
            #expect(credit.status == .created)
            let txID = try #require(credit.string("provider_tx_id"))
            #expect(txID.hasPrefix("TX-") && txID.count == 35)
            #expect(try await client.balanceUnits() == "0", "no mint before ingest in poll-only mode")

            let ingest = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            #expect(ingest.status == .ok)
            #expect(ingest["ingested"] as? Int == 1)
            #expect(ingest["minted"] as? Int == 1)
            #expect(try await client.balanceUnits() == "1000000000")

            let key = HTTPFields([HTTPField(name: HTTPField.Name("Idempotency-Key")!, value: UUID().uuidString)])
            let redeemBody = #"{"amount_units":"200000000","memo":"cash-out"}"#
            let redeem = try await client.call(.post, "/api/redeem", json: redeemBody, headers: key)
            #expect(redeem.status == .created)
            #expect(redeem.string("amount_units") == "200000000")
            let txHash = try #require(redeem.string("tx_hash"))
            #expect(txHash.hasPrefix("0x") && txHash.count == 66)
            let replay = try await client.call(.post, "/api/redeem", json: redeemBody, headers: key)
            #expect(replay.status == .created)
            #expect(replay.string("job_id") == redeem.string("job_id"))
            #expect(replay.headers[HTTPField.Name("Idempotent-Replayed")!] == "true")
            #expect(try await client.balanceUnits() == "800000000")

            let summary = try await client.call(.get, "/api/debug/summary")
            let chainJobs = try #require(summary["chain_jobs"] as? [String: Any])
            #expect(chainJobs["mints_units"] as? String == "1000000000")
            #expect(chainJobs["burns_units"] as? String == "200000000")
            #expect(chainJobs["net_units"] as? String == "800000000")
            let balances = try #require(summary["balances"] as? [String: Any])
            #expect(balances["match"] as? Bool == true)
            #expect(balances["chain_stub_units"] as? String == "800000000")
            let invariants = try #require(summary["invariants"] as? [String: Any])
            #expect(invariants["ok"] as? Bool == true, "\(summary.text)")

            // The debit the redeem caused shows up on the next ingest and is matched to its burn.
            let second = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            #expect(second["ingested"] as? Int == 1)
            #expect(second["minted"] as? Int == 0)
            let external = try await client.call(.get, "/api/external-transactions").array
            let debit = try #require(external.first { $0["direction"] as? String == "debit" })
            #expect(debit["amount_pkr"] as? String == "200.00")
            #expect(debit["matched_burn_job_id"] as? String == redeem.string("job_id"))

            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            #expect(report.snapshot.burnsAwaitingDebit.isEmpty)
        }
    }

    @Test("unsafe methods need the CSRF cookie and a matching header", arguments: TestEngine.all)
    func csrf(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            let noCookie = try await client.call(.post, "/api/demo/seed", csrf: false)
            #expect(noCookie.status == .forbidden)
            #expect(noCookie.error == "csrf_failed")
            var mismatched = HTTPFields()
            mismatched[.cookie] = "csrftoken=\(testCSRFToken)"
            mismatched[HTTPField.Name("X-CSRFToken")!] = "wrong"
            #expect(try await client.call(.post, "/api/demo/seed", headers: mismatched, csrf: false).status == .forbidden)
            var untrusted = HTTPFields()
            untrusted[.origin] = "http://evil.example"
            #expect(try await client.call(.post, "/api/demo/seed", headers: untrusted).error == "csrf_failed")

            let issued = try await client.call(.get, "/api/csrf", csrf: false)
            let token = try #require(issued.string("csrftoken"))
            #expect(token.count == 64)
            let cookie = try #require(issued.headers[.setCookie])
            #expect(cookie.hasPrefix("csrftoken=\(token);"))
            #expect(cookie.contains("Path=/") && cookie.contains("SameSite=Lax"))
            // GET stays open without a token.
            #expect(try await client.call(.get, "/api/health", csrf: false).status == .ok)
        }
    }

    @Test("calls before the demo seed get a clear 409", arguments: TestEngine.all)
    func beforeSeed(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            for (method, uri, body) in [
                (HTTPRequest.Method.get, "/api/balance", nil), (.get, "/api/me", nil),
                (.post, "/api/redeem", #"{"amount_units":"10000"}"#),
                (.post, "/api/demo/wallet/credit", #"{"amount_pkr":"1.00"}"#),
                (.post, "/api/ingest/wallet-transactions", #"{"since":"2025-01-01T00:00:00Z"}"#),
            ] as [(HTTPRequest.Method, String, String?)] {
                let result = try await client.call(method, uri, json: body)
                #expect(result.status == .conflict, "\(uri)")
                #expect(result.error == "demo_not_seeded", "\(uri)")
            }
        }
    }

    @Test("manual mint is idempotent per provider_tx_id and refuses what cannot mint", arguments: TestEngine.all)
    func manualMint(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            let txID = try #require(
                try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"5.00"}"#).string("provider_tx_id"))
            let unknown = try await client.call(.post, "/api/mint", json: #"{"provider_tx_id":"\#(txID)"}"#)
            #expect(unknown.status == .notFound, "not ingested yet")
            #expect(unknown.error == "unknown_provider_tx")
            _ = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            let first = try await client.call(.post, "/api/mint", json: #"{"provider_tx_id":"\#(txID)"}"#)
            let second = try await client.call(.post, "/api/mint", json: #"{"provider_tx_id":"\#(txID)"}"#)
            #expect(first.status == .created && second.status == .created)
            #expect(first.string("job_id") == second.string("job_id"))
            #expect(first.string("amount_units") == "5000000")
            #expect(try await client.balanceUnits() == "5000000", "minted exactly once")

            _ = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"1000000"}"#)
            _ = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            let debit = try #require(
                try await client.call(.get, "/api/external-transactions").array.first { $0["direction"] as? String == "debit" })
            let refused = try await client.call(.post, "/api/mint", json: #"{"provider_tx_id":"\#(debit["provider_tx_id"] as! String)"}"#)
            #expect(refused.status == .unprocessableContent)
            #expect(refused.error == "not_mintable")
            #expect(try await client.call(.post, "/api/mint", json: #"{"provider_tx_id":"bad id!"}"#).error == "invalid_field")
        }
    }

    @Test("redeem rejects bad input with stable codes and never overdraws", arguments: TestEngine.all)
    func redeemErrors(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine, ["MAX_SINGLE_PAYOUT_PKR": "500.00"])) { client, _ in
            _ = try await client.seed()
            _ = try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00"}"#)
            _ = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            let cases: [(String, HTTPResponse.Status, String)] = [
                (#"{"amount_units":"123"}"#, .unprocessableContent, "not_whole_paisa"),
                (#"{"amount_units":"1.5"}"#, .unprocessableContent, "invalid_amount"),
                (#"{"amount_units":1.5}"#, .unprocessableContent, "invalid_amount"),
                (#"{"amount_units":"-10000"}"#, .unprocessableContent, "invalid_amount"),
                (#"{"amount_units":"0"}"#, .unprocessableContent, "invalid_amount"),
                (#"{"amount_units":"abc"}"#, .unprocessableContent, "invalid_amount"),
                (#"{"amount_units":"99999999999999999999"}"#, .unprocessableContent, "invalid_amount"),
                (#"{"amount_units":"600000000"}"#, .unprocessableContent, "amount_above_limit"),
                (#"{"amount_units":true}"#, .badRequest, "invalid_field"),
                (#"{"memo":"x"}"#, .badRequest, "missing_field"),
                (#"{"amount_units":"10000""#, .badRequest, "invalid_json"),
                (#"[1,2]"#, .badRequest, "invalid_json"),
                ("", .badRequest, "invalid_json"),
            ]
            for (body, status, code) in cases {
                let result = try await client.call(.post, "/api/redeem", json: body)
                #expect(result.status == status, "\(body) → \(result.text)")
                #expect(result.error == code, "\(body) → \(result.text)")
            }
            // 400 for an overdraw, and the balance is untouched.
            for _ in 0..<2 { _ = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"500000000"}"#) }
            let overdraw = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"10000"}"#)
            #expect(overdraw.status == .badRequest)
            #expect(overdraw.error == "insufficient_balance")
            #expect(try await client.balanceUnits() == "0")

            let key = HTTPFields([HTTPField(name: HTTPField.Name("Idempotency-Key")!, value: "k-1")])
            _ = try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"10.00"}"#)
            _ = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            #expect(try await client.call(.post, "/api/redeem", json: #"{"amount_units":"10000"}"#, headers: key).status == .created)
            let reused = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"20000"}"#, headers: key)
            #expect(reused.status == .unprocessableContent)
            #expect(reused.error == "idempotency_key_reused")
            // The same amount sent as a JSON integer is the same request.
            #expect(try await client.call(.post, "/api/redeem", json: #"{"amount_units":10000}"#, headers: key).status == .created)
            #expect(try await client.balanceUnits() == "9990000")
            let badKey = HTTPFields([HTTPField(name: HTTPField.Name("Idempotency-Key")!, value: String(repeating: "k", count: 300))])
            #expect(
                try await client.call(.post, "/api/redeem", json: #"{"amount_units":"10000"}"#, headers: badKey).error
                    == "invalid_idempotency_key")
        }
    }

    @Test("deposit amounts are parsed exactly; a deposit above the mint ceiling is held, not minted", arguments: TestEngine.all)
    func depositAmounts(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine, ["MAX_SINGLE_MINT_PKR": "1000.00"])) { client, gateway in
            _ = try await client.seed()
            for bad in [#""1.234""#, #""-5""#, #""0""#, #""0.00""#, #""abc""#, #""1e3""#, #""""#, #""99999999999999999999.99""#] {
                let result = try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":\#(bad)}"#)
                #expect(result.status == .unprocessableContent, "\(bad)")
                #expect(result.error == "invalid_amount", "\(bad)")
            }
            #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":1000}"#).error == "invalid_field")
            #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"0.01"}"#).status == .created)
            #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.01"}"#).status == .created)
            let ingest = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            #expect(ingest["ingested"] as? Int == 2)
            #expect(ingest["minted"] as? Int == 1, "the credit above the ceiling is held")
            #expect(try await client.balanceUnits() == "10000")
            let report = try await gateway.reconciliation()
            #expect(report.snapshot.heldCreditPaisa == 100_001)
            #expect(report.ok, "held credits are in flight, not a mismatch: \(report.text)")
        }
    }

    @Test("unknown routes and methods answer JSON errors", arguments: TestEngine.all)
    func notFound(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            let missing = try await client.call(.get, "/api/nope")
            #expect(missing.status == .notFound)
            #expect(missing.error == "not_found")
            #expect(try await client.call(.get, "/nope").error == "not_found")
            #expect(try await client.call(.get, "/api/ledger?limit=0").error == "invalid_field")
            #expect(try await client.call(.get, "/api/ledger?before_id=x").error == "invalid_field")
        }
    }

    @Test("the ledger shows issuer rows, chained by hash, and verifies", arguments: TestEngine.all)
    func ledger(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await client.seed()
            _ = try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00"}"#)
            _ = try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#)
            _ = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"200000000"}"#)
            let entries = try await client.call(.get, "/api/ledger").array
            #expect(entries.count == 4)
            let rows = entries.reversed().map { "\($0["side"]!) \($0["account"]!) \($0["amount_units"]!) \($0["ref_type"]!)" }
            #expect(
                rows == [
                    "credit issuer_token 1000000000 mint", "debit user_token 1000000000 mint",
                    "credit user_token 200000000 burn", "debit issuer_token 200000000 burn",
                ])
            #expect(entries.filter { $0["account"] as? String == "issuer_token" }.allSatisfy { $0["user_id"] is NSNull })
            for (newer, older) in zip(entries, entries.dropFirst()) {
                #expect(newer["prev_hash"] as? String == older["entry_hash"] as? String)
            }
            let verified = try await gateway.store.verifyLedger()
            #expect(verified.firstBreak == nil)
            #expect(verified.entriesChecked == 4)

            // Tampering with a stored amount is found, and names the entry.
            try await executeRawSQL(gateway, "UPDATE core_ledgerentry SET amount_units = 1 WHERE id = 3")
            #expect(try await gateway.store.verifyLedger().firstBreak == .hashMismatch(id: 3))
            try await executeRawSQL(gateway, "DELETE FROM core_ledgerentry WHERE id = 4")
            let summary = try await client.call(.get, "/api/debug/summary")
            #expect((summary["invariants"] as? [String: Any])?["ok"] as? Bool == false)
        }
    }
}

/// The seed README's "Inspecting the DB" queries, verbatim.
enum SeedQueries {
    static let all = [
        "SELECT balance_pkr FROM wallet_stub_walletstubaccount;",
        "SELECT direction, amount_pkr FROM wallet_stub_walletstubtx ORDER BY occurred_at;",
        "SELECT job_type, amount_units, idempotency_key FROM core_chainjob ORDER BY created_at;",
        "SELECT balance_units FROM core_tokenbalance;",
        "SELECT balance_units FROM chain_stub_chainstubbalance;",
        "SELECT side, account, amount_units, ref_type FROM core_ledgerentry ORDER BY created_at;",
    ]

    /// What they print after the walkthrough (1000 PKR in, 200 PKR redeemed with `key`), as the seed documents.
    static func expectedAfterWalkthrough(key: String) -> String {
        """
        800.00
        credit|1000.00
        debit|200.00
        mint|1000000000|
        burn|200000000|\(key)
        800000000
        800000000
        credit|issuer_token|1000000000|mint
        debit|user_token|1000000000|mint
        credit|user_token|200000000|burn
        debit|issuer_token|200000000|burn

        """
    }
}
