import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PKRApplication
import PKRCore
import Synchronization

extension Request {
    /// Reads the body up to `limits.bytesMax` (413 beyond it) within `limits.timeoutMillis` (408 after it), so
    /// that a client trickling its body cannot hold a connection and a task for ever.
    func bodyBytes(_ limits: BodyLimits) async throws -> [UInt8] {
        let body = self.body
        let collector = Task { () async throws -> ByteBuffer in
            do {
                return try await body.collect(upTo: limits.bytesMax)
            } catch is NIOTooManyBytesError {
                throw GatewayError.payloadTooLarge(bytesMax: limits.bytesMax)
            }
        }
        let timedOut = Atomic<Bool>(false)
        let deadlines = BodyReadDeadlines.shared
        let readID = deadlines.register(deadline: .now + .milliseconds(limits.timeoutMillis)) {
            timedOut.store(true, ordering: .relaxed)
            collector.cancel()
        }
        defer { deadlines.remove(readID) }
        do {
            let buffer = try await withTaskCancellationHandler {
                try await collector.value
            } onCancel: {
                collector.cancel()
            }
            return Array(buffer: buffer)
        } catch {
            // Timed out, or cancelled because the client went away: either way the body did not arrive in time.
            if timedOut.load(ordering: .relaxed) || Task.isCancelled {
                throw GatewayError.requestTimeout(millis: limits.timeoutMillis)
            }
            throw error
        }
    }

    /// Decodes a JSON object body into `T`, turning every decoding failure into a typed 400.
    func decodeJSON<T: Decodable>(_ type: T.Type, _ limits: BodyLimits) async throws -> T {
        let bytes = try await bodyBytes(limits)
        guard !bytes.isEmpty else { throw GatewayError.invalidJSON(JSONBody.emptyDetail) }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw JSONBody.gatewayError(error)
        }
    }

    /// The header's value; several fields of the name are joined with ", " as HTTP allows. `HTTPFields`' own
    /// subscript joins even a single value, which allocates, and most requests send each header once.
    func header(_ name: HTTPField.Name) -> String? {
        var found: String?
        for field in headers where field.name == name {
            guard found == nil else { return headers[name] }
            found = field.value
        }
        return found
    }

    /// `?limit=` (1...max, default) and `?before_id=` for newest-first paging.
    func page(defaultLimit: Int = 100, maxLimit: Int = Page.limitMax) throws -> Page {
        let query = uri.queryParameters
        var limit = defaultLimit
        if let text = query["limit"] {
            guard let value = Int(String(text)), (1...maxLimit).contains(value) else {
                throw GatewayError.invalidField("limit", "an integer from 1 to \(maxLimit)")
            }
            limit = value
        }
        var beforeID: Int64?
        if let text = query["before_id"] {
            guard let value = Int64(String(text)), value > 0 else { throw GatewayError.invalidField("before_id", "a positive integer") }
            beforeID = value
        }
        return Page(limit: limit, beforeID: beforeID)
    }
}

extension HTTPField.Name {
    // Made once: building a name from text checks and lowercases it, on every request otherwise.
    static let webhookID = HTTPField.Name("webhook-id")!
    static let webhookTimestamp = HTTPField.Name("webhook-timestamp")!
    static let webhookSignature = HTTPField.Name("webhook-signature")!
    static let legacySignature = HTTPField.Name("X-Signature")!
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let csrfToken = HTTPField.Name("X-CSRFToken")!
}

/// How much body a route accepts and how long the client may take to send it.
struct BodyLimits: Sendable {
    var bytesMax: Int
    var timeoutMillis: Int64
}
