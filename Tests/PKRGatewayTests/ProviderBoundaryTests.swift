import AsyncHTTPClient
import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import PKRCore
import ProviderClient
import Testing

@testable import PKRApplication
@testable import PKRGateway
@testable import WalletStub

/// One HTTP exchange with the provider's API, as any client of it would make.
private func exchange(
    _ method: HTTPMethod, _ url: String, json: String? = nil, key: String? = testProviderAPIKey, headers: [(String, String)] = []
) async throws -> (status: Int, headers: HTTPHeaders, json: [String: Any]) {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let json {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: json))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
    let body = try await response.body.collect(upTo: 1 << 22)
    let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] ?? [:]
    return (Int(response.status.code), response.headers, object)
}

/// An adapter with short timeouts and quick retries, so that faults are shown in milliseconds.
private func adapter(_ url: String, attemptsMax: Int = 4, timeoutMillis: Int64 = 2_000, breakerFailuresMax: Int = 50) -> HTTPWalletProvider
{
    var settings = HTTPWalletProvider.Settings(baseURL: { url }, apiKey: testProviderAPIKey)
    settings.timeoutMillis = timeoutMillis
    settings.retry = RetryPolicy(attemptsMax: attemptsMax, baseMillis: 5, capMillis: 20, retryAfterMillisMax: 1_500)
    settings.breakerFailuresMax = breakerFailuresMax
    settings.breakerOpenMillis = 300
    return HTTPWalletProvider(settings: settings, nowMicros: { SystemClock().nowMicros() }, logger: testLogger())
}

@Suite("The provider's HTTP API and the gateway's adapter", .serialized)
struct ProviderBoundaryTests {
    @Test("every call needs the bearer key; accounts, deposits, the balance and the paged listing answer as documented")
    func api() async throws {
        try await withProviderService { _, base in
            #expect(try await exchange(.GET, base + "/v1/balance", key: nil).status == 401)
            #expect(
                try await exchange(.GET, base + "/v1/balance", key: "pk_wrong_key_0123456789").json["error"] as? String == "unauthorized")
            #expect(try await exchange(.GET, base + "/health", key: nil).status == 200)

            let opened = try await exchange(.POST, base + "/v1/accounts", json: #"{"account_no":"WALLET-P1"}"#)
            #expect(opened.status == 201 && opened.json["balance_pkr"] as? String == "0.00")
            #expect(try await exchange(.POST, base + "/v1/accounts", json: #"{"account_no":"WALLET-P1"}"#).status == 200)
            #expect(try await exchange(.POST, base + "/v1/accounts", json: #"{"account_no":"bad account"}"#).status == 400)
            let unknown = try await exchange(.GET, base + "/v1/accounts/WALLET-NONE")
            #expect(unknown.status == 404 && unknown.json["error"] as? String == "unknown_account")

            var ids: [String] = []
            for index in 1...5 {
                let deposit = try await exchange(
                    .POST, base + "/v1/accounts/WALLET-P1/deposits", json: #"{"amount_pkr":"\#(index).25","memo":"in \#(index)"}"#)
                #expect(deposit.status == 201 && deposit.json["direction"] as? String == "credit")
                ids.append(try #require(deposit.json["provider_tx_id"] as? String))
            }
            #expect(try await exchange(.POST, base + "/v1/accounts/WALLET-NONE/deposits", json: #"{"amount_pkr":"1.00"}"#).status == 422)
            #expect(try await exchange(.POST, base + "/v1/accounts/WALLET-P1/deposits", json: #"{"amount_pkr":"1.001"}"#).status == 422)
            #expect(try await exchange(.GET, base + "/v1/accounts/WALLET-P1").json["balance_pkr"] as? String == "16.25")
            #expect(try await exchange(.GET, base + "/v1/balance").json["balance_pkr"] as? String == "16.25")

            // Pages of two, oldest first: every deposit once, has_more false only on the last page.
            var cursor = "0"
            var listed: [String] = []
            var pages = 0
            while true {
                let page = try await exchange(.GET, base + "/v1/transactions?after=\(cursor)&limit=2")
                let data = try #require(page.json["data"] as? [[String: Any]])
                listed += data.compactMap { $0["provider_tx_id"] as? String }
                pages += 1
                cursor = try #require(page.json["next_cursor"] as? String)
                guard page.json["has_more"] as? Bool == true else { break }
            }
            #expect(listed == ids && pages == 3)
            let after = try await exchange(.GET, base + "/v1/transactions?after=\(cursor)&limit=2")
            #expect((after.json["data"] as? [Any])?.isEmpty == true && after.json["next_cursor"] as? String == cursor)
            #expect(try await exchange(.GET, base + "/v1/transactions?limit=1001").status == 400)
        }
    }

    @Test("payouts: Idempotency-Key required, a replay answers the same payout, another body is 422, lookups by id and reference")
    func payouts() async throws {
        try await withProviderService { provider, base in
            _ = try await provider.store.credit(account: Demo.walletAccount, amountPaisa: 100_000, memo: "reserve")
            let body = #"{"account":"WALLET-001","amount_pkr":"250.00","memo":"cash out","reference":"job-p1"}"#
            #expect(try await exchange(.POST, base + "/v1/payouts", json: body).json["error"] as? String == "missing_idempotency_key")
            let made = try await exchange(.POST, base + "/v1/payouts", json: body, headers: [("Idempotency-Key", "key-p1")])
            #expect(made.status == 201)
            #expect(made.json["status"] as? String == "paid" && made.json["reference"] as? String == "job-p1")
            #expect(made.json["failure_code"] is NSNull)
            let id = try #require(made.json["id"] as? String)
            let replay = try await exchange(.POST, base + "/v1/payouts", json: body, headers: [("Idempotency-Key", "key-p1")])
            #expect(replay.status == 200 && replay.headers.first(name: "Idempotent-Replayed") == "true")
            #expect(
                replay.json["id"] as? String == id && replay.json["provider_tx_id"] as? String == made.json["provider_tx_id"] as? String)
            let other = try await exchange(
                .POST, base + "/v1/payouts", json: body.replacingOccurrences(of: "250.00", with: "251.00"),
                headers: [("Idempotency-Key", "key-p1")])
            #expect(other.status == 422 && other.json["error"] as? String == "idempotency_key_reused")
            let sameReference = try await exchange(.POST, base + "/v1/payouts", json: body, headers: [("Idempotency-Key", "key-p2")])
            #expect(sameReference.status == 409 && sameReference.json["error"] as? String == "reference_conflict")
            #expect(try await exchange(.GET, base + "/v1/payouts/\(id)").json["reference"] as? String == "job-p1")
            #expect(try await exchange(.GET, base + "/v1/payouts/po_nothing").status == 404)
            let found = try await exchange(.GET, base + "/v1/payouts?reference=job-p1")
            #expect((found.json["data"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
            let none = try await exchange(.GET, base + "/v1/payouts?reference=job-none")
            #expect((none.json["data"] as? [Any])?.isEmpty == true)
            #expect(try await provider.store.balancePaisa(account: Demo.walletAccount) == 75_000, "paid once")
        }
    }

    @Test("the adapter retries 5xx and 429 (honouring Retry-After), gives up as unavailable, and never retries a refusal")
    func retries() async throws {
        try await withProviderService { provider, base in
            let client = adapter(base)
            var faults = ProviderControls.Faults()
            faults.failNext = 3
            provider.controls.setFaults(faults)
            let afterThreeFailures = try await client.reservePaisa()
            #expect(afterThreeFailures == 0, "three 500s, then an answer on the fourth attempt")
            #expect(provider.controls.faults.failNext == 0)

            faults.failNext = 4
            provider.controls.setFaults(faults)
            await #expect(throws: ProviderError.self) { _ = try await client.reservePaisa() }
            #expect(provider.controls.faults.failNext == 0, "four attempts, no more")

            // Too many requests, come back in a second: tried again, no sooner.
            faults.failNext = 1
            faults.failStatus = 429
            faults.retryAfterSeconds = 1
            provider.controls.setFaults(faults)
            let started = ContinuousClock.now
            let afterTooMany = try await client.reservePaisa()
            #expect(afterTooMany == 0)
            #expect(ContinuousClock.now - started >= .seconds(1), "Retry-After was honoured")

            // A refusal (422) is final: no retry, and its code comes through.
            await #expect(throws: ProviderError.unknownAccount("WALLET-NONE")) {
                _ = try await client.deposit(account: "WALLET-NONE", amountPaisa: 100, memo: "nobody")
            }
        }
    }

    @Test("a payout whose answer is lost after the provider paid is resolved by lookup under its reference: paid once")
    func lostPayoutAnswer() async throws {
        try await withProviderService { provider, base in
            _ = try await provider.store.credit(account: Demo.walletAccount, amountPaisa: 10_000, memo: "reserve")
            let client = adapter(base, attemptsMax: 2, timeoutMillis: 1_000)
            var faults = ProviderControls.Faults()
            faults.dropNext = 2
            faults.holdMillis = 2_500
            provider.controls.setFaults(faults)
            let request = PayoutRequest(
                account: Demo.walletAccount, amountPaisa: 4_000, memo: "cash out", reference: "job-lost",
                idempotencyKey: PayoutRequest.idempotencyKey(reference: "job-lost"))
            let payout = try await client.payout(request)
            #expect(payout.status == .paid && payout.reference == "job-lost")
            #expect(try await provider.store.balancePaisa(account: Demo.walletAccount) == 6_000, "paid once, not per attempt")
            // Asked again later (the reconciler's resubmission): the same payout.
            #expect(try await client.payout(request) == payout)
            #expect(try await provider.store.balancePaisa(account: Demo.walletAccount) == 6_000)
        }
    }

    @Test("the circuit opens on a dead provider, so calls fail at once, and closes when it is back")
    func circuitBreaker() async throws {
        let port = try freeLoopbackPort()
        // A refused connection fails at once; the timeout only bounds the trial call on a busy machine.
        let client = adapter("http://127.0.0.1:\(port)", attemptsMax: 1, timeoutMillis: 3_000, breakerFailuresMax: 3)
        for _ in 0..<3 { await #expect(throws: ProviderError.self) { _ = try await client.reservePaisa() } }
        #expect(client.circuit != .closed(failures: 0))
        let started = ContinuousClock.now
        await #expect(throws: ProviderError.unavailable("circuit open after repeated failures")) { _ = try await client.reservePaisa() }
        #expect(ContinuousClock.now - started < .milliseconds(50), "an open circuit costs no connection attempt")
        try await withProviderService(["PROVIDER_PORT": String(port)]) { _, _ in
            try await Task.sleep(for: .milliseconds(350))
            #expect(try await client.reservePaisa() == 0, "the trial call after the open time succeeds")
            #expect(client.circuit == .closed(failures: 0))
        }
    }

    @Test("a gateway whose provider fails payouts keeps the redemption, and the reconciler pays it once when the provider recovers")
    func gatewayResubmitsPayouts() async throws {
        try await withProviderService { provider, base in
            var config = try await testConfig(engine: .sqlite)
            config.providerURL = base
            config.providerAPIKey = testProviderAPIKey
            config.providerTimeoutMillis = 2_000
            try await withApp(config) { client, gateway in
                _ = try await client.seed()
                let deposit = try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00"}"#)
                #expect(deposit.status == .created)
                #expect(
                    try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#).status
                        == .ok)
                var faults = ProviderControls.Faults()
                faults.failNext = 1000
                provider.controls.setFaults(faults)
                let redeem = try await client.call(
                    .post, "/api/redeem", json: #"{"amount_units":"200000000"}"#, headers: [.init("Idempotency-Key")!: "down-1"])
                #expect(redeem.status == .created, "the redeem is accepted while the provider is down")
                #expect(try await provider.store.balancePaisa(account: Demo.walletAccount) == 100_000, "nothing paid yet")
                provider.controls.setFaults(ProviderControls.Faults())
                try await Task.sleep(for: .milliseconds(5_100))  // past the reconciler's five-second grace for stuck payouts
                _ = try await gateway.reconcileOnce()
                _ = try await gateway.reconcileOnce()
                #expect(try await provider.store.balancePaisa(account: Demo.walletAccount) == 80_000, "paid once")
                _ = try await gateway.ingest(sinceMicros: nil)
                let report = try await gateway.reconciliation()
                #expect(report.ok, "\(report.text)")
            }
        }
    }

    @Test(
        "a payout's events change money only once the provider confirms them: a mismatch is refused, a provider that cannot answer gets a retry",
        arguments: TestEngine.all)
    func payoutWebhooksAreConfirmed(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, gateway in
            _ = try await client.seed()
            #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00"}"#).status == .created)
            #expect(
                try await client.call(.post, "/api/ingest/wallet-transactions", json: #"{"since":"2025-01-01T00:00:00Z"}"#).status == .ok)
            let redeem = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"200000000"}"#)
            let jobID = try #require(redeem.string("job_id"))
            let payout = try #require(try await gateway.stub.payout(reference: jobID))
            let debit = try #require(payout.providerTxID)

            let forged = try await client.webhook(
                creditEvent("TX-not-the-payout", amountPKR: "200.00", direction: .debit, reference: jobID))
            #expect(forged.status == .unprocessableContent && forged.error == "payout_not_confirmed", "\(forged.text)")
            let wrongAmount = try await client.webhook(creditEvent(debit, amountPKR: "199.00", direction: .debit, reference: jobID))
            #expect(wrongAmount.status == .unprocessableContent)

            // The provider's own answer to the payout call named this debit: it is applied without asking again,
            // even while the provider fails.
            var faults = ProviderControls.Faults()
            faults.failNext = 1_000
            gateway.localProvider?.controls.setFaults(faults)
            let answered = try await client.webhook(creditEvent(debit, amountPKR: "200.00", direction: .debit, reference: jobID))
            #expect(answered.status == .ok, "\(answered.text)")

            // A reversal is always confirmed with the provider: while it cannot answer, the sender is told to retry.
            gateway.localProvider?.controls.setFaults(ProviderControls.Faults())
            let returned = try await gateway.stub.returnPayout(id: payout.id)
            let reversal = try #require(SimProvider.reversal(of: returned))
            gateway.localProvider?.controls.setFaults(faults)
            let unconfirmed = try await client.webhook(WebhookEvent.encode(reversal))
            #expect(unconfirmed.status == .badGateway && unconfirmed.error == "provider_unavailable", "\(unconfirmed.text)")
            #expect(try await client.balanceUnits() == "800000000", "nothing minted")
            gateway.localProvider?.controls.setFaults(ProviderControls.Faults())
            let confirmed = try await client.webhook(WebhookEvent.encode(reversal))
            #expect(confirmed.status == .ok, "\(confirmed.text)")
            #expect(try await client.balanceUnits() == "1000000000", "re-credited")
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            #expect(report.snapshot.burnedUnits == 200_000_000)
        }
    }

    @Test(
        "a refused payout releases the hold at once; one failed after its debit is burnt and minted back once; a returned one re-credits once; both flagged",
        arguments: TestEngine.all)
    func failedAndReturnedPayouts(engine: TestEngine) async throws {
        let config = try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "1", "PKR_WEBHOOK_RETRY_SCHEDULE_MS": "50,100,200"])
        try await withApp(config, .live) { client, gateway in
            _ = try await client.seed()
            let bearer: HTTPFields = [.authorization: "Bearer \(DevKeys.providerAPIKey)"]
            #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00"}"#).status == .created)
            #expect(try await eventually { try await client.balanceUnits() == "1000000000" })
            func history(_ jobID: String) async throws -> (state: String?, states: [String]?) {
                let view = try await client.call(.get, "/api/redemptions/\(jobID)")
                return (view.string("state"), (view["history"] as? [[String: Any]])?.compactMap { $0["state"] as? String })
            }

            // The provider refuses the next payout outright: no money moves, and its answer releases the hold before
            // the redeem is answered.
            let refuseNext = try await client.call(
                .post, "/provider/v1/test/fail-payouts", json: #"{"count":1,"failure_code":"account_closed"}"#, headers: bearer, csrf: false
            )
            #expect(refuseNext.status == .ok && refuseNext["after_debit"] as? Bool == false)
            let refusedRedeem = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"200000000"}"#)
            #expect(refusedRedeem.status == .created)
            let refusedJob = try #require(refusedRedeem.string("job_id"))
            #expect(try await client.balanceUnits() == "1000000000", "released at once")
            let refused = try #require(try await gateway.stub.payout(reference: refusedJob))
            #expect(refused.status == .failed && refused.failureCode == "account_closed" && refused.providerTxID == nil)
            #expect(refused.reversalProviderTxID == nil && refused.outcome == .endedBeforeDebit)
            let refusedView = try await history(refusedJob)
            #expect(refusedView.state == "released" && refusedView.states == ["held", "submitted", "released"])
            #expect(try await gateway.stub.balancePaisa(account: Demo.walletAccount) == 100_000)
            #expect(try await gateway.reconciliation().ok)

            // The next one fails after its debit: burnt when the money left, and the provider's reversal credit mints
            // the tokens back once.
            let failNext = try await client.call(
                .post, "/provider/v1/test/fail-payouts", json: #"{"count":1,"failure_code":"rail_rejected","after_debit":true}"#,
                headers: bearer, csrf: false)
            #expect(failNext.status == .ok && failNext["after_debit"] as? Bool == true)
            // The provider's pushes wait, so that the balance can be seen between the burn and the reversal.
            let pause = try await client.call(.post, "/provider/v1/test/webhooks", json: #"{"paused":true}"#, headers: bearer, csrf: false)
            #expect(pause.status == .ok)
            let first = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"200000000"}"#)
            let released = try #require(first.string("job_id"))
            #expect(try await client.balanceUnits() == "800000000", "the balance drops at once")
            let resume = try await client.call(
                .post, "/provider/v1/test/webhooks", json: #"{"paused":false}"#, headers: bearer, csrf: false)
            #expect(resume.status == .ok)
            #expect(try await eventually { try await client.balanceUnits() == "1000000000" }, "minted back")
            let failed = try #require(try await gateway.stub.payout(reference: released))
            #expect(failed.status == .failed && failed.failureCode == "rail_rejected" && failed.reversalProviderTxID != nil)
            let releasedView = try await history(released)
            #expect(releasedView.state == "released")
            #expect(releasedView.states == ["held", "submitted", "paid", "released"])

            // The next one is paid, then returned by the receiving bank.
            let second = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"300000000"}"#)
            let returned = try #require(second.string("job_id"))
            #expect(try await eventually { try await client.call(.get, "/api/redemptions/\(returned)").string("state") == "paid" })
            let paid = try #require(try await gateway.stub.payout(reference: returned))
            let giveBack = try await client.call(
                .post, "/provider/v1/test/return-payout", json: #"{"id":"\#(paid.id)"}"#, headers: bearer, csrf: false)
            #expect(giveBack.status == .ok && giveBack.string("status") == "returned")
            #expect(try await eventually { try await client.balanceUnits() == "1000000000" }, "re-credited")
            #expect(try await client.call(.get, "/api/redemptions/\(returned)").string("state") == "returned")
            let again = try await client.call(
                .post, "/provider/v1/test/return-payout", json: #"{"id":"\#(paid.id)"}"#, headers: bearer, csrf: false)
            #expect(again.status == .conflict && again.error == "payout_state")
            let flags = try await client.call(.get, "/api/external-transactions").array.compactMap { $0["flag"] as? String }
            #expect(flags.filter { $0 == "payout_returned" }.count == 1 && flags.filter { $0 == "payout_failed" }.count == 1, "\(flags)")

            // A reversal the provider did not make is refused; the listing's own are not minted twice.
            let forged = try await client.webhook(
                creditEvent(amountPKR: "300.00", reference: PayoutReversal.reference(payoutReference: returned, status: .failed)))
            #expect(forged.status == .unprocessableContent && forged.error == "payout_not_confirmed", "\(forged.text)")
            _ = try await gateway.ingest(sinceMicros: 0)
            #expect(try await client.balanceUnits() == "1000000000")
            #expect(try await gateway.stub.balancePaisa(account: Demo.walletAccount) == 100_000)
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            #expect(try await client.call(.get, "/api/redemptions/no-such-job").status == .notFound)
        }
    }

    @Test(
        "a pending payout keeps the tokens held; cancelled, they are released once; processing then paid, they are burnt; each change is a listing entry",
        arguments: TestEngine.all)
    func payoutLifecycle(engine: TestEngine) async throws {
        let config = try await testConfig(engine: engine, ["PKR_WEBHOOK_PUSH": "1", "PKR_WEBHOOK_RETRY_SCHEDULE_MS": "50,100,200"])
        try await withApp(config, .live) { client, gateway in
            _ = try await client.seed()
            let bearer: HTTPFields = [.authorization: "Bearer \(DevKeys.providerAPIKey)"]
            func provider(_ path: String, _ json: String) async throws -> JSONResult {
                try await client.call(.post, "/provider/v1" + path, json: json, headers: bearer, csrf: false)
            }
            @Sendable func state(_ jobID: String) async throws -> String? {
                try await client.call(.get, "/api/redemptions/\(jobID)").string("state")
            }
            #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1000.00"}"#).status == .created)
            #expect(try await eventually { try await client.balanceUnits() == "1000000000" })
            #expect(try await provider("/test/pend-payouts", #"{"count":2}"#).status == .ok)

            // Pending: the tokens stay held, the provider sets the money aside.
            let first = try #require(try await client.call(.post, "/api/redeem", json: #"{"amount_units":"200000000"}"#).string("job_id"))
            #expect(try await state(first) == "submitted")
            #expect(try await client.balanceUnits() == "800000000")
            let pending = try #require(try await gateway.stub.payout(reference: first))
            #expect(pending.status == .pending && pending.providerTxID != nil)
            #expect(try await gateway.stub.balancePaisa(account: Demo.walletAccount) == 80_000)

            // A failed debit the provider does not confirm (its payout is still pending) releases nothing.
            let forged = try await client.webhook(
                creditEvent(
                    try #require(pending.providerTxID), amountPKR: "200.00", direction: .debit, status: .failed, reference: first))
            #expect(forged.status == .unprocessableContent && forged.error == "payout_not_confirmed", "\(forged.text)")
            #expect(try await state(first) == "submitted")

            // Cancelled while pending: the debit fails, the money is back, and the tokens are released once.
            let cancelled = try await client.call(
                .post, "/provider/v1/payouts/\(pending.id)/cancel", headers: bearer, csrf: false)
            #expect(cancelled.status == .ok && cancelled.string("status") == "canceled", "\(cancelled.text)")
            #expect(try await eventually { try await state(first) == "released" })
            #expect(try await client.balanceUnits() == "1000000000")
            #expect(try await gateway.stub.balancePaisa(account: Demo.walletAccount) == 100_000)
            let again = try await client.call(.post, "/provider/v1/payouts/\(pending.id)/cancel", headers: bearer, csrf: false)
            #expect(again.status == .conflict && again.error == "payout_state")

            // Processing, then paid: held until paid, then burnt.
            let second = try #require(try await client.call(.post, "/api/redeem", json: #"{"amount_units":"300000000"}"#).string("job_id"))
            let payout = try #require(try await gateway.stub.payout(reference: second))
            #expect(try await provider("/test/advance-payout", #"{"id":"\#(payout.id)","status":"processing"}"#).status == .ok)
            #expect(try await state(second) == "submitted")
            let notCancelled = try await client.call(.post, "/provider/v1/payouts/\(payout.id)/cancel", headers: bearer, csrf: false)
            #expect(notCancelled.status == .conflict, "a processing payout cannot be cancelled")
            #expect(try await provider("/test/advance-payout", #"{"id":"\#(payout.id)","status":"paid"}"#).status == .ok)
            #expect(try await eventually { try await state(second) == "paid" })
            #expect(try await client.balanceUnits() == "700000000")

            // The listing is append-only: each debit is listed pending, then once more in its final status.
            let listing = try await client.call(.get, "/provider/v1/transactions?limit=100", headers: bearer, csrf: false)
            let entries = (listing["data"] as? [[String: Any]] ?? []).filter { $0["direction"] as? String == "debit" }
            let statuses = entries.map { "\($0["provider_tx_id"] as? String ?? "")/\($0["status"] as? String ?? "")" }
            #expect(
                statuses == [
                    "\(pending.providerTxID!)/pending", "\(pending.providerTxID!)/failed", "\(payout.providerTxID!)/pending",
                    "\(payout.providerTxID!)/settled",
                ], "\(statuses)")
            _ = try await gateway.reconcileOnce()
            let report = try await gateway.reconciliation()
            #expect(report.ok, "\(report.text)")
            #expect(report.snapshot.heldUnits == 0 && report.snapshot.burnedUnits == 300_000_000)
            #expect(try await gateway.stub.balancePaisa(account: Demo.walletAccount) == 70_000)
        }
    }
}
