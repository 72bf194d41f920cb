import Foundation
import PKRApplication
import PKRCore
import PKRHTTP
import Prometheus

/// What counting costs a webhook mint, measured in this process: the HTTP series (a lookup and two updates), the
/// delivery outcome, the mint and its units, the lag histogram, and a request id. The server-side figure it is
/// compared with comes from the same run's mint workload.
public enum ObservationCost {
    public static func nanosPerMint(iterations: Int = 1_000_000) -> Int64 {
        precondition(iterations > 0, "a measurement needs iterations")
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory.gateway(registry)
        let http = HTTPMetrics(factory: factory)
        let metrics = GatewayMetrics(factory: factory)
        let job = ChainJob(id: "job", jobType: .mint, amountUnits: 1_000_000, txHash: "0x0", createdAt: "")
        var idBytes = 0
        let started = DispatchTime.now().uptimeNanoseconds
        for index in 0..<iterations {
            idBytes &+= ObservabilityMiddleware.newRequestID().utf8.count
            http.record(method: "POST", route: "/api/webhooks/wallet", status: 200, elapsed: .microseconds(150 + index % 100))
            metrics.webhookApplied(.minted(job), lagMicros: Int64(5_000 + index % 1_000))
        }
        let elapsed = DispatchTime.now().uptimeNanoseconds - started
        precondition(idBytes == 32 * iterations, "request ids are 32 characters")
        return Int64(elapsed / UInt64(iterations))
    }
}
