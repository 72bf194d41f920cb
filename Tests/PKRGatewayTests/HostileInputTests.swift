import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
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

@Suite("Hostile input")
struct HostileInputTests {
    @Test("a path with empty segments reaches the same handler and still needs the CSRF token")
    func csrfEmptySegments() async throws {
        try await withApp(try await testConfig()) { client, _ in
            _ = try await client.seed()
            for path in ["//api/redeem", "/api//redeem", "///api/demo/wallet/credit"] {
                let result = try await client.call(.post, path, json: #"{"amount_units":"10000","amount_pkr":"1.00"}"#, csrf: false)
                #expect(result.status == .forbidden, "\(path)")
                #expect(result.error == "csrf_failed", "\(path)")
            }
            // The receivers stay exempt under any spelling of their path: their signature is the authority.
            let signed = try await client.webhook(creditEvent(), path: "/api//webhooks/wallet/")
            #expect(signed.status == .ok)
        }
    }

    @Test("only a receiver's path, however spelt, is exempt from the CSRF check")
    func receiverPathSpellings() {
        for path in [
            "/api/webhooks/wallet", "/api/webhooks/bank", "//api/webhooks/wallet", "/api//webhooks/bank/",
            "/api/webhooks/wallet/", "api/webhooks/wallet",
        ] {
            #expect(CSRFMiddleware.goesToSignedReceiver(path), "\(path)")
        }
        for path in ["/api/redeem", "//api/redeem", "/api/webhooks/wallet2", "/api/webhooks", "/", "", "/api/webhooks/wallet/x"] {
            #expect(!CSRFMiddleware.goesToSignedReceiver(path), "\(path)")
        }
    }

    @Test("control characters in memos are refused with 400 on every engine", arguments: TestEngine.all)
    func controlCharactersInMemos(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            for memo in ["a\\u0000b", "bell\\u0007", "\\u009b[31m"] {
                let redeem = try await client.call(.post, "/api/redeem", json: #"{"amount_units":"10000","memo":"\#(memo)"}"#)
                #expect(redeem.status == .badRequest)
                #expect(redeem.string("field") == "memo")
                let credit = try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"1.00","memo":"\#(memo)"}"#)
                #expect(credit.status == .badRequest)
                #expect(credit.string("field") == "memo")
                let event =
                    #"{"provider_tx_id":"TX-memo","account":"WALLET-001","direction":"credit","amount_pkr":"1.00","status":"settled","occurred_at":"2026-01-01T00:00:00Z","memo":"\#(memo)"}"#
                let webhook = try await client.webhook(Array(event.utf8))
                #expect(webhook.status == .badRequest)
                #expect(webhook.error == "invalid_field")
                #expect(webhook.string("field") == "memo")
            }
            // Long multi-byte memos are bounded in bytes as well as characters.
            let heavy = String(repeating: "👨‍👩‍👧‍👦", count: 200)
            #expect(
                try await client.call(.post, "/api/redeem", json: #"{"amount_units":"10000","memo":"\#(heavy)"}"#).status == .badRequest)
            #expect(try await client.balanceUnits() == "0")
            let log = try await client.call(.get, "/api/webhooks/inbound").array
            #expect(log.count == 3, "every refused webhook is still logged")
        }
    }

    @Test("the inbound log keeps only the first KiB of a delivery that failed verification")
    func unverifiedBodiesAreCut() async throws {
        try await withApp(try await testConfig()) { client, gateway in
            let body = Array(repeating: UInt8(ascii: "x"), count: 60 * 1024)
            var headers = HTTPFields()
            headers[HTTPField.Name("webhook-id")!] = "msg_" + String(repeating: "i", count: 2000)
            headers[HTTPField.Name("webhook-timestamp")!] = String(repeating: "9", count: 500)
            headers[HTTPField.Name("webhook-signature")!] = "v1,AAAA"
            let result = try await client.execute(
                uri: "/api/webhooks/wallet", method: .post, headers: headers,
                body: ByteBuffer(bytes: body)
            ) { $0.status }
            #expect(result == .unauthorized)
            let logged = try #require(try await gateway.store.inboundLog(limit: 1, beforeID: nil).first)
            #expect(logged.body_bytes == Gateway.unverifiedBodyBytesKept)
            #expect(logged.message_id?.utf8.count == WebhookVerifier.messageIDBytesMax)
            #expect(logged.webhook_timestamp?.utf8.count == WebhookVerifier.timestampDigitsMax)
        }
    }

    @Test("a client that stops sending its body gets 408 once the body time limit passes")
    func slowBodyTimesOut() async throws {
        let port = try freeLoopbackPort()
        let config = try await testConfig(engine: .sqlite, ["PORT": String(port), "PKR_REQUEST_BODY_TIMEOUT_MS": "300"])
        try await withRunningServer(config) { _ in
            let started = ContinuousClock.now
            let answer = try rawExchange(
                port: port,
                send: "POST /api/webhooks/wallet HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"partial\":")
            #expect(answer.hasPrefix("HTTP/1.1 408"), "\(answer.prefix(200))")
            #expect(answer.contains("request_timeout"))
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }

    @Test("extreme amounts never overflow the reconciliation: the summary answers with exact figures", arguments: TestEngine.all)
    func extremeAmountsReconcile(engine: TestEngine) async throws {
        try await withApp(try await testConfig(engine: engine)) { client, _ in
            _ = try await client.seed()
            let largest = Money.formatPaisa(Int64.max / Money.unitsPerPaisa)
            for _ in 0..<3 {
                #expect(try await client.call(.post, "/api/demo/wallet/credit", json: #"{"amount_pkr":"\#(largest)"}"#).status == .created)
            }
            for _ in 0..<2 {
                let held = try await client.webhook(creditEvent(amountPKR: largest))
                #expect(held.status == .ok)
            }
            #expect(try await client.webhook(creditEvent(amountPKR: "10.00")).status == .ok)
            let summary = try await client.call(.get, "/api/debug/summary")
            #expect(summary.status == .ok)
            let inFlight = try #require((summary["invariants"] as? [String: Any])?["in_flight"] as? [String: Any])
            let paisa = Int128(Int64.max / Money.unitsPerPaisa)
            #expect(inFlight["held_credit_units"] as? String == String(paisa * 2 * 10_000))
            #expect((summary["invariants"] as? [String: Any])?["reserve_units"] as? String == String(paisa * 3 * 10_000))
        }
    }

    @Test("a connection that never finishes its request head is closed after the idle timeout")
    func idleAndSlowHeadConnectionsAreClosed() async throws {
        let port = try freeLoopbackPort()
        let config = try await testConfig(engine: .sqlite, ["PORT": String(port), "PKR_IDLE_TIMEOUT_S": "1"])
        try await withRunningServer(config) { _ in
            let started = ContinuousClock.now
            // Half a request head, then silence: the server must hang up, not wait for ever.
            let answer = try rawExchange(port: port, send: "GET /api/health HTTP/1.1\r\nHo", readTimeoutSeconds: 10)
            #expect(answer.isEmpty, "\(answer.prefix(200))")
            let elapsed = ContinuousClock.now - started
            #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(8), "closed after \(elapsed)")
        }
    }

    @Test("the CIDR parser refuses malformed blocks instead of crashing")
    func cidrParsing() {
        for text in ["/", "/8", "", "10.0.0.0/33", "::1/129", "10.0.0/8", "abc"] { #expect(CIDR(text) == nil, "\(text)") }
        #expect(CIDR("10.0.0.0/8")?.contains("10.1.2.3") == true)
    }
}

/// Sends raw bytes on a fresh loopback connection and reads until the server answers or closes.
func rawExchange(port: Int, send text: String, readTimeoutSeconds: Int = 10) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
    var timeout = timeval(tv_sec: readTimeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count <= 0 { break }
        received += buffer[0..<count]
        if let text = String(bytes: received, encoding: .utf8), text.contains("\r\n\r\n"), text.contains("}") { break }
    }
    return String(decoding: received, as: UTF8.self)
}

@Suite("OpenAPI document")
struct OpenAPIDocumentTests {
    @Test("GET /openapi.yaml serves the document in the repo, and it names every route the router has")
    func servesTheRepoDocument() async throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/PKRHTTP/Resources/openapi.yaml")
        let inRepo = try String(contentsOf: source, encoding: .utf8)
        try await withApp(try await testConfig()) { client, _ in
            let served = try await client.execute(uri: "/openapi.yaml", method: .get) { response in
                (response.status, response.headers[.contentType], String(buffer: response.body))
            }
            #expect(served.0 == .ok)
            #expect(served.1 == "application/yaml")
            #expect(served.2 == inRepo)
        }
        #expect(inRepo.hasPrefix("openapi: 3.1") || inRepo.contains("\nopenapi: 3.1"))
        for path in [
            "/api/health", "/api/csrf", "/api/demo/seed", "/api/demo/wallet/credit", "/api/ingest/wallet-transactions",
            "/api/mint", "/api/redeem", "/api/balance", "/api/me", "/api/ledger", "/api/external-transactions",
            "/api/debug/summary", "/api/webhooks/wallet", "/api/webhooks/bank", "/api/webhooks/inbound",
            "/api/webhooks/quarantine", "/api/webhooks/deliveries", "/api/webhooks/deliveries/{id}",
            "/api/webhooks/deliveries/{id}/retry", "/openapi.yaml",
        ] {
            #expect(inRepo.contains("\n  \(path):"), "\(path) is not in openapi.yaml")
        }
    }
}
