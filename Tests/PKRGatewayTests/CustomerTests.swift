import Foundation
import HTTPTypes
import HummingbirdTesting
import PKRCore
import Testing

@testable import PKRApplication
@testable import PKRGateway

@Suite("Many customers, each bound to a provider account")
struct CustomerTests {
    @Test("operators bind accounts; each deposit, redeem and read is the bound customer's; unbound credits wait", arguments: TestEngine.all)
    func manyCustomers(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await client.seed()
            let alice = try await client.call(.post, "/api/users", json: #"{"email": "alice@example.com", "wallet_account": "WALLET-A"}"#)
            #expect(alice.status == .created)
            let aliceID = try #require(alice.string("user_id"))
            #expect(alice.string("display_name") == "alice" && alice.string("wallet_account") == "WALLET-A")
            #expect(alice.string("chain_address")?.hasPrefix("0x") == true)
            // The same request again is the same customer; another email or account for either is a conflict.
            let again = try await client.call(.post, "/api/users", json: #"{"email": "alice@example.com", "wallet_account": "WALLET-A"}"#)
            #expect(again.status == .ok && again.string("user_id") == aliceID)
            let otherAccount = try await client.call(
                .post, "/api/users", json: #"{"email": "alice@example.com", "wallet_account": "WALLET-Z"}"#)
            #expect(otherAccount.status == .conflict && otherAccount.error == "customer_conflict")
            let takenAccount = try await client.call(
                .post, "/api/users", json: #"{"email": "eve@example.com", "wallet_account": "WALLET-A"}"#)
            #expect(takenAccount.status == .conflict && takenAccount.error == "customer_conflict")
            for bad in [
                #"{"email": "no-at-sign", "wallet_account": "WALLET-Q"}"#, #"{"email": "q@example.com", "wallet_account": "bad account"}"#,
                #"{"email": "q@example.com", "wallet_account": "WALLET-Q", "display_name": ""}"#, #"{"wallet_account": "WALLET-Q"}"#,
            ] {
                let refused = try await client.call(.post, "/api/users", json: bad)
                #expect(refused.status == .badRequest, "\(bad)")
            }

            // Deposits at the provider: one on Alice's account, one on an account nobody holds yet.
            let toAlice = try await gateway.stub.credit(account: "WALLET-A", amountPaisa: 50_000, memo: "alice in")
            try await gateway.stub.openAccount("WALLET-B")
            let toBob = try await gateway.stub.credit(account: "WALLET-B", amountPaisa: 30_000, memo: "bob in")
            let pass = try await gateway.ingest(sinceMicros: 0)
            #expect(pass.minted == 1 && pass.ingested == 2)
            #expect(try await client.call(.get, "/api/balance?user_id=\(aliceID)").string("token_balance_units") == "500000000")
            #expect(try await client.balanceUnits() == "0", "the demo customer's balance is untouched")
            let listed = try await client.call(.get, "/api/external-transactions").array
            let bobRow = try #require(listed.first { $0["provider_tx_id"] as? String == toBob.providerTxID })
            #expect(bobRow["flag"] as? String == "unbound_account" && bobRow["mint_job_id"] is NSNull)
            var summary = try await client.call(.get, "/api/debug/summary")
            var invariants = try #require(summary["invariants"] as? [String: Any])
            #expect(invariants["ok"] as? Bool == true, "\(invariants)")
            #expect((invariants["in_flight"] as? [String: Any])?["unbound_credit_units"] as? String == "300000000")
            // A manual mint before the account is bound is refused and changes nothing.
            let early = try await client.call(.post, "/api/mint", json: #"{"provider_tx_id": "\#(toBob.providerTxID)"}"#)
            #expect(early.status == .unprocessableContent && early.error == "unknown_account")

            // Bound now, the waiting credit is minted by an operator, to Bob.
            let bob = try await client.call(.post, "/api/users", json: #"{"email": "bob@example.com", "wallet_account": "WALLET-B"}"#)
            let bobID = try #require(bob.string("user_id"))
            let minted = try await client.call(.post, "/api/mint", json: #"{"provider_tx_id": "\#(toBob.providerTxID)"}"#)
            #expect(minted.status == .created && minted.string("amount_units") == "300000000")
            #expect(try await client.call(.get, "/api/balance?user_id=\(bobID)").string("token_balance_units") == "300000000")
            let bobRowAfter = try #require(
                try await client.call(.get, "/api/external-transactions").array.first {
                    $0["provider_tx_id"] as? String == toBob.providerTxID
                })
            #expect(bobRowAfter["flag"] == nil || bobRowAfter["flag"] is NSNull)

            // A server-to-server redeem for Alice; her ledger holds her jobs only.
            let redeem = try await client.call(
                .post, "/api/redeem", json: #"{"amount_units": "200000000", "memo": "alice out", "user_id": "\#(aliceID)"}"#,
                headers: [HTTPField.Name("Idempotency-Key")!: "alice-1"])
            #expect(redeem.status == .created)
            #expect(try await client.call(.get, "/api/balance?user_id=\(aliceID)").string("token_balance_units") == "300000000")
            #expect(try await client.call(.get, "/api/balance?user_id=\(bobID)").string("token_balance_units") == "300000000")
            let aliceLedger = try await client.call(.get, "/api/ledger?user_id=\(aliceID)").array
            #expect(aliceLedger.count == 4, "a mint and a burn, two postings each")
            #expect(Set(aliceLedger.compactMap { $0["user_id"] as? String }) == [aliceID])
            #expect(try await client.call(.get, "/api/ledger").array.count == 6)
            _ = try await gateway.ingest(sinceMicros: nil)
            #expect(try await gateway.stub.balancePaisa(account: "WALLET-A") == 30_000)
            summary = try await client.call(.get, "/api/debug/summary")
            invariants = try #require(summary["invariants"] as? [String: Any])
            #expect(invariants["ok"] as? Bool == true, "\(invariants)")
            #expect((invariants["in_flight"] as? [String: Any])?["unbound_credit_units"] as? String == "0")
            #expect(toAlice.account == "WALLET-A")

            let unknown = try await client.call(.get, "/api/balance?user_id=0190c0de-0000-7000-8000-000000000000")
            #expect(unknown.status == .notFound && unknown.error == "unknown_customer")
            #expect(try await client.call(.get, "/api/ledger?user_id=bad%20id").status == .badRequest)
        }
    }

    @Test(
        "a customer's ledger, page by page at every size, is both postings of each of its jobs and nothing else", arguments: TestEngine.all)
    func customerLedgerPages(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let demo = try await gateway.seedDemo()
            try await gateway.stub.openAccount("WALLET-B")
            let bob = try await client.call(.post, "/api/users", json: #"{"email": "bob@example.com", "wallet_account": "WALLET-B"}"#)
            let bobID = try #require(bob.string("user_id"))
            // The two customers' jobs interleave in the ledger.
            for round in 0..<3 as Range<Int64> {
                _ = try await gateway.stub.credit(account: Demo.walletAccount, amountPaisa: 10_000 + round, memo: "demo in")
                _ = try await gateway.stub.credit(account: "WALLET-B", amountPaisa: 20_000 + round, memo: "bob in")
                #expect(try await gateway.reconcileOnce().minted == 2)
            }
            _ = try await gateway.redeem(amountUnits: 100 * Money.unitsPerPaisa, memo: "", idempotencyKey: nil)
            let all = try await gateway.store.ledgerEntries(customerID: nil, limit: 1_000, beforeID: nil)
            #expect(all.count == 14)
            for customerID in [demo.id, bobID] {
                let jobs = Set(all.filter { $0.userID == customerID }.map(\.refID))
                let expected = all.filter { jobs.contains($0.refID) }.map(\.id)
                #expect(expected.count == (customerID == bobID ? 6 : 8))
                for limit in 1...5 {
                    var paged: [Int64] = []
                    var beforeID: Int64?
                    while true {
                        let page = try await gateway.store.ledgerEntries(customerID: customerID, limit: limit, beforeID: beforeID)
                        #expect(page.count <= limit)
                        paged += page.map(\.id)
                        guard page.count == limit, let last = page.last else { break }
                        beforeID = last.id
                    }
                    #expect(paged == expected, "limit \(limit)")
                }
            }
        }
    }

    @Test(
        "concurrent creations with one email: one customer, every other answer a 409, no account opened for them", arguments: TestEngine.all
    )
    func concurrentCreations(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        let body = #"{"email": "race@example.com", "wallet_account": "WALLET-R\#(index)"}"#
                        return Int(try await client.call(.post, "/api/users", json: body).status.code)
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 201 }.count == 1, "\(statuses)")
            #expect(statuses.filter { $0 == 409 }.count == 7, "\(statuses)")
            let winner = try #require(try await gateway.store.customer(email: "race@example.com"))
            for index in 0..<8 {
                let opened = try await gateway.stub.balancePaisa(account: "WALLET-R\(index)") != nil
                #expect(opened == (winner.walletAccount == "WALLET-R\(index)"), "WALLET-R\(index)")
            }
            // And one account raced by several emails: one customer holds it, the others are told so.
            let accountStatuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        let body = #"{"email": "racer\#(index)@example.com", "wallet_account": "WALLET-ONE"}"#
                        return Int(try await client.call(.post, "/api/users", json: body).status.code)
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(accountStatuses.sorted() == [201, 409, 409, 409, 409, 409, 409, 409], "\(accountStatuses)")
        }
    }

    @Test("outside demo mode, creating customers and acting for one needs the operator token")
    func operatorTokenRequired() async throws {
        try await withApp(try await ProductionModeTests.productionConfig()) { client, gateway in
            let body = #"{"email": "carol@example.com", "wallet_account": "WALLET-C"}"#
            #expect(try await client.call(.post, "/api/users", json: body).status == .unauthorized)
            let auth: HTTPFields = [.authorization: "Bearer \(ProductionModeTests.adminToken)"]
            // No demo customer exists outside demo mode: before the first customer the operator is told to make one.
            let early = try await client.call(.post, "/api/ingest/wallet-transactions", json: "{}", headers: auth, csrf: false)
            #expect(early.status == .notFound && early.error == "unknown_customer")
            let carol = try await client.call(.post, "/api/users", json: body, headers: auth, csrf: false)
            #expect(carol.status == .created)
            let carolID = try #require(carol.string("user_id"))
            #expect(try await client.call(.get, "/api/balance?user_id=\(carolID)").status == .unauthorized)
            #expect(try await client.call(.get, "/api/ledger?user_id=\(carolID)").status == .unauthorized)
            let balance = try await client.call(.get, "/api/balance?user_id=\(carolID)", headers: auth, csrf: false)
            #expect(balance.status == .ok && balance.string("token_balance_units") == "0")
            let redeem = #"{"amount_units": "10000", "user_id": "\#(carolID)"}"#
            #expect(try await client.call(.post, "/api/redeem", json: redeem).status == .unauthorized)
            let refused = try await client.call(.post, "/api/redeem", json: redeem, headers: auth, csrf: false)
            #expect(refused.status == .badRequest && refused.error == "insufficient_balance")
            // With a customer, the fallback ingest and the manual mint work without any demo customer.
            let ingest = try await client.call(.post, "/api/ingest/wallet-transactions", json: "{}", headers: auth, csrf: false)
            #expect(ingest.status == .ok, "\(ingest.text)")
            let mint = try await client.call(.post, "/api/mint", json: #"{"provider_tx_id": "TX-none"}"#, headers: auth, csrf: false)
            #expect(mint.status == .notFound && mint.error == "unknown_provider_tx")
            #expect(try await gateway.hasCustomer())
        }
    }
}
