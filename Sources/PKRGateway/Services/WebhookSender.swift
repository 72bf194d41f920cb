import AsyncHTTPClient
import Foundation
import NIOCore
import PKRApplication
import PKRCore

/// The bundled sender behind `pkr webhook send` and `pkr webhook sign`: signs a body as the provider would.
public enum WebhookSender {
    public struct Signed: Sendable {
        public var id: String
        public var timestampSeconds: Int64
        public var signature: String
        public var body: [UInt8]

        public var headers: [(String, String)] {
            [("webhook-id", id), ("webhook-timestamp", String(timestampSeconds)), ("webhook-signature", signature)]
        }
    }

    public static func sign(body: [UInt8], secret: WebhookSecret, id: String? = nil, timestampSeconds: Int64) -> Signed {
        let id = id ?? Identifiers.webhookMessageID()
        return Signed(
            id: id, timestampSeconds: timestampSeconds,
            signature: WebhookSigner.signature(secret: secret, id: id, timestampSeconds: timestampSeconds, body: body),
            body: body)
    }

    /// A copy-paste curl command; the body goes through a file so no shell quoting can alter its bytes.
    public static func curlCommand(_ signed: Signed, url: String, bodyFile: String) -> String {
        var parts = ["curl -sS -X POST '\(url)'", "-H 'content-type: application/json'"]
        parts += signed.headers.map { "-H '\($0.0): \($0.1)'" }
        parts.append("--data-binary @\(bodyFile)")
        return parts.joined(separator: " \\\n  ")
    }

    public struct Result: Sendable {
        public var attempts: Int
        public var status: Int?
        public var responseBody: String
    }

    /// Posts with retries: each attempt is re-signed with a fresh timestamp and the same id, like the dispatcher.
    public static func send(
        body: [UInt8], secret: WebhookSecret, url: String, retries: Int, id: String? = nil,
        nowSeconds: @Sendable () -> Int64
    ) async throws -> Result {
        precondition(retries >= 0 && retries <= 20, "retries out of range")
        let id = id ?? Identifiers.webhookMessageID()
        let client = WebhookHTTPClient.make(timeoutMillis: 10_000)
        do {
            let result = try await send(
                body: body, secret: secret, url: url, retries: retries, id: id, client: client,
                nowSeconds: nowSeconds)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private static func send(
        body: [UInt8], secret: WebhookSecret, url: String, retries: Int, id: String, client: HTTPClient,
        nowSeconds: @Sendable () -> Int64
    ) async throws -> Result {
        var last = Result(attempts: 0, status: nil, responseBody: "")
        for attempt in 0...retries {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(min(5000, 200 << min(attempt, 5)))) }
            let signed = sign(body: body, secret: secret, id: id, timestampSeconds: nowSeconds())
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "content-type", value: "application/json")
            for (name, value) in signed.headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(bytes: body))
            last.attempts = attempt + 1
            do {
                let response = try await client.execute(request, timeout: .seconds(10))
                let buffer = try await response.body.collect(upTo: 1 << 20)
                last.status = Int(response.status.code)
                last.responseBody = String(buffer: buffer)
                // Only a 5xx, 429 or a network failure is worth another try; a 4xx will not change.
                if response.status.code < 500 && response.status.code != 429 { return last }
            } catch {
                last.status = nil
                last.responseBody = "\(error)"
            }
        }
        return last
    }
}
