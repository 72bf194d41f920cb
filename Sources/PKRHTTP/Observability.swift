import CoreMetrics
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PKRApplication
import PKRCore
import Prometheus
import Synchronization

extension HTTPField.Name {
    static let requestID = Self("X-Request-Id")!
}

/// The outermost middleware: gives each request an id (the client's `X-Request-Id` when it is a sane token, else a
/// new one), echoes it, counts and times the request by route template, and writes one access-log line.
package struct ObservabilityMiddleware: RouterMiddleware {
    package typealias Context = AppRequestContext
    static let requestIDBytesMax = 128

    let metrics: HTTPMetrics?

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let requestID = request.headers[.requestID].flatMap(Self.acceptedRequestID) ?? Self.newRequestID()
        var context = context
        context.logger[metadataKey: "request_id"] = .string(requestID)
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            // The error middleware inside answers every error; this is what escaped it (nothing should).
            response = ErrorMapping.response(for: error, logger: context.logger)
        }
        response.headers[.requestID] = requestID
        // Only matched routes name their template; anything else is one series, so a scanner cannot mint labels.
        let route = context.endpointPath ?? "unmatched"
        let elapsed = ContinuousClock.now - started
        metrics?.record(method: request.method.rawValue, route: route, status: Int(response.status.code), elapsed: elapsed)
        let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
        context.logger.info(
            "request",
            metadata: [
                "method": .string(request.method.rawValue), "route": .string(route), "status": .stringConvertible(response.status.code),
                "duration_ms": .string(Timestamp.millisText(micros: micros)),
            ])
        return response
    }

    static func acceptedRequestID(_ value: String) -> String? {
        guard !value.isEmpty, value.utf8.count <= requestIDBytesMax,
            value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") })
        else { return nil }
        return value
    }

    /// A random prefix drawn once per process and a counter: unique, unguessable across restarts, and with no
    /// system call per request.
    private static let requestIDPrefix = String(UInt64.random(in: .min ... .max), radix: 16).leftPadded(16)
    private static let requestCounter = Atomic<UInt64>(0)

    package static func newRequestID() -> String {
        let count = requestCounter.wrappingAdd(1, ordering: .relaxed).newValue
        return requestIDPrefix + String(count, radix: 16).leftPadded(16)
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

/// `pkr_http_requests_total{method,route,status}` and `pkr_http_request_duration_seconds{method,route}`, with the
/// handles cached per series so that a request costs a dictionary lookup.
package final class HTTPMetrics: Sendable {
    private struct Key: Hashable {
        var method: String
        var route: String
        var status: Int
    }

    private struct Series {
        var requests: CoreMetrics.Counter
        var duration: CoreMetrics.Timer
    }

    private let factory: any MetricsFactory
    private let series = Mutex<[Key: Series]>([:])

    package init(factory: any MetricsFactory) {
        self.factory = factory
    }

    package func record(method: String, route: String, status: Int, elapsed: Duration) {
        let key = Key(method: method, route: route, status: status)
        let series = self.series.withLock { all in
            if let series = all[key] { return series }
            let series = Series(
                requests: CoreMetrics.Counter(
                    label: "pkr_http_requests_total", dimensions: [("method", method), ("route", route), ("status", String(status))],
                    factory: factory),
                // The registry hands every status of a route the same histogram.
                duration: CoreMetrics.Timer(
                    label: "pkr_http_request_duration_seconds", dimensions: [("method", method), ("route", route)], factory: factory))
            all[key] = series
            return series
        }
        series.requests.increment()
        let (seconds, attoseconds) = elapsed.components
        series.duration.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

extension PrometheusMetricsFactory {
    /// The gateway's factory over `registry`: latency buckets fine enough for sub-millisecond requests, and lag
    /// buckets up to the reconciler's scale.
    public static func gateway(_ registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["pkr_http_request_duration_seconds"] = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .seconds(5),
        ]
        factory.durationHistogramBuckets["pkr_webhook_mint_lag_seconds"] = [
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(5), .seconds(30), .seconds(60), .seconds(300), .seconds(3600),
        ]
        return factory
    }
}

/// `GET /metrics`: the Prometheus text exposition of every metric, with the store's figures read at scrape time.
/// Open in demo mode, behind the operator token otherwise (Prometheus sends it as a bearer token).
enum MetricsRoute {
    static func register(
        on router: Router<AppRequestContext>, gateway: Gateway, registry: PrometheusCollectorRegistry, operatorAuth: OperatorAuth
    ) {
        router.get("metrics") { request, _ in
            try operatorAuth.require(request)
            await gateway.refreshStoredMetrics()
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16 * 1024)
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
    }
}
