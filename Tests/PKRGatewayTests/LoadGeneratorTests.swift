import Foundation
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

@Suite("Bench load generator", .serialized)
struct LoadGeneratorTests {
    @Test("every request is sent once and answered over keep-alive connections; non-2xx answers are counted")
    func countsEveryAnswer() async throws {
        try await withApp(try await testConfig(engine: .sqlite), .live) { client, _ in
            let port = try #require(client.port)
            // 37 over 4 connections leaves them unequal shares, the last one short.
            let health = try await Benchmark.drive(port: port, requests: Benchmark.gets("/api/health", count: 37), concurrency: 4)
            #expect(health.requests == 37 && health.okCount == 37 && health.nonSuccess == 0)
            #expect(health.latenciesMicros.count == 37 && health.latenciesMicros == health.latenciesMicros.sorted())
            #expect(health.latenciesMicros.allSatisfy { $0 > 0 } && health.perSecond > 0)
            // Each refusal is counted, and none stops its connection.
            let mixed = Benchmark.gets("/api/health", count: 5) + Benchmark.gets("/api/no-such-route", count: 6)
            let sample = try await Benchmark.drive(port: port, requests: mixed, concurrency: 3)
            #expect(sample.requests == 11 && sample.okCount == 5 && sample.nonSuccess == 6)
        }
    }

    @Test("a port nobody listens on fails every request at once instead of hanging")
    func refusedConnectionsFail() async throws {
        let port = try freeLoopbackPort()
        let sample = try await Benchmark.drive(port: port, requests: Benchmark.gets("/api/health", count: 10), concurrency: 3)
        #expect(sample.requests == 10 && sample.okCount == 0 && sample.nonSuccess == 10)
    }
}
