import HTTPTypes
import Hummingbird
import PKRApplication
import PKRCore
import Synchronization

/// Django-style CSRF: unsafe methods need `X-CSRFToken` equal to the `csrftoken` cookie.
/// Signed webhook receivers and requests carrying the operator's bearer token are exempt (neither is ambient
/// browser authority). A present `Origin` must be this host or a trusted origin.
struct CSRFMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    let trustedOrigins: Set<String>
    let operatorAuth: OperatorAuth

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let unsafe = ![.get, .head, .options, .trace].contains(request.method)
        if unsafe, !Self.isExempt(request.uri.path), !operatorAuth.isOperator(request) {
            if let origin = request.header(.origin), origin != "null" {
                let host = request.head.authority ?? ""
                guard trustedOrigins.contains(origin) || origin == "http://\(host)" || origin == "https://\(host)" else {
                    throw GatewayError.csrfFailed("origin \(origin) is not trusted")
                }
            }
            guard let cookie = request.cookies["csrftoken"]?.value, !cookie.isEmpty else {
                throw GatewayError.csrfFailed("CSRF cookie not set; GET /api/csrf first")
            }
            guard let header = request.header(.csrfToken), !header.isEmpty else {
                throw GatewayError.csrfFailed("the X-CSRFToken header is missing")
            }
            guard Crypto.constantTimeEqual(Array(header.utf8), Array(cookie.utf8)) else {
                throw GatewayError.csrfFailed("the X-CSRFToken header does not match the csrftoken cookie")
            }
        }
        return try await next(request, context)
    }

    /// Requests that carry their own authentication, which a browser never adds by itself: the signed receivers, and
    /// the in-process provider's API (bearer key).
    static func isExempt(_ path: String) -> Bool {
        goesToSignedReceiver(path) || normalised(path).hasPrefix("/provider/")
    }

    static func normalised(_ path: String) -> String {
        "/" + path.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
    }

    /// The router ignores empty segments ("//api/redeem" reaches redeem), so the check does too: every unsafe
    /// request needs the token unless it goes, by its normalised path, to a signed receiver.
    static func goesToSignedReceiver(_ path: String) -> Bool {
        if WebhookRoutes.receiverPaths.contains(path) { return true }
        // A path with no empty segment is its own normal form, and it was not a receiver's.
        let bytes = path.utf8
        let slash = UInt8(ascii: "/")
        if bytes.first == slash, bytes.last != slash,
            !zip(bytes, bytes.dropFirst()).contains(where: { $0 == slash && $1 == slash })
        {
            return false
        }
        return WebhookRoutes.receiverPaths.contains(normalised(path))
    }
}

enum CSRF {
    static func isWellFormed(_ token: String) -> Bool {
        token.utf8.count >= 32 && token.utf8.count <= 64
            && token.utf8.allSatisfy { b in
                (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
            }
    }
}

/// ALLOWED_HOSTS, enforced outside demo mode: the Host header (without port) must be listed, or `*` be listed.
struct AllowedHostsMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    let allowedHosts: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !allowedHosts.contains("*") else { return try await next(request, context) }
        let authority = request.head.authority ?? ""
        let host: Substring
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = authority[authority.index(after: authority.startIndex)..<close]
        } else {
            host = authority.split(separator: ":", maxSplits: 1).first ?? ""
        }
        guard allowedHosts.contains(host.lowercased()) else { throw GatewayError.disallowedHost(String(host.prefix(100))) }
        return try await next(request, context)
    }
}

/// A token bucket per source address: `ratePerSecond` sustained, the same as burst.
final class RateLimiter: Sendable {
    static let trackedAddressesMax = 10_000

    private struct Bucket {
        var tokens: Int64
        var updatedMicros: Int64
    }

    private let ratePerSecond: Int64
    private let buckets = Mutex<[String: Bucket]>([:])

    init(ratePerSecond: Int) {
        precondition(ratePerSecond > 0, "rate must be positive")
        self.ratePerSecond = Int64(ratePerSecond)
    }

    func allow(key: String, nowMicros: Int64) -> Bool {
        // Tokens are counted in millionths so that refill needs no floating point.
        let capacity = ratePerSecond * 1_000_000
        return buckets.withLock { buckets in
            if buckets.count >= Self.trackedAddressesMax, buckets[key] == nil { buckets.removeAll(keepingCapacity: true) }
            var bucket = buckets[key] ?? Bucket(tokens: capacity, updatedMicros: nowMicros)
            // A bucket is full again after one second, so longer gaps add nothing (and cannot overflow).
            let elapsed = min(1_000_000, max(0, nowMicros - bucket.updatedMicros))
            bucket.tokens = min(capacity, bucket.tokens + elapsed * ratePerSecond)
            bucket.updatedMicros = nowMicros
            let allowed = bucket.tokens >= 1_000_000
            if allowed { bucket.tokens -= 1_000_000 }
            buckets[key] = bucket
            return allowed
        }
    }
}
