import Foundation
import Testing

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite
@testable import WalletStub

/// Thousands of seeded runs of provider, dispatcher, network, gateway and reconciler. `PKR_SIM_SEEDS` sets how
/// many (seeds 1…N), `PKR_SIM_STEPS` how long each runs, and `PKR_SIM_SEED=n` replays one seed alone
/// (`PKR_SIM_TRACE=1` prints its steps).
@Suite("Deterministic simulation")
struct SimulationTests {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var seedCount: UInt64 { environment["PKR_SIM_SEEDS"].flatMap(UInt64.init) ?? 2000 }
    static var stepCount: Int { environment["PKR_SIM_STEPS"].flatMap(Int.init) ?? 40 }
    static var parallelRuns: Int { environment["PKR_SIM_PARALLEL"].flatMap(Int.init) ?? 4 }

    @Test("every seed keeps every invariant after every step and converges once the faults stop")
    func seededRuns() async throws {
        let seeds: [UInt64] = Self.environment["PKR_SIM_SEED"].flatMap(UInt64.init).map { [$0] } ?? Array(1...Self.seedCount)
        let steps = Self.stepCount
        let failures = try await withThrowingTaskGroup(of: SimulationFailure?.self) { group in
            var next = seeds.makeIterator()
            func start() -> Bool {
                guard let seed = next.next() else { return false }
                group.addTask {
                    do {
                        let simulation = try await Simulation.make(seed: seed, stepCount: steps)
                        try await simulation.run()
                        if Self.environment["PKR_SIM_TRACE"] == "1" { print(simulation.traceText) }
                        return nil
                    } catch let failure as SimulationFailure {
                        return failure
                    } catch {
                        return SimulationFailure(seed: seed, step: 0, message: "untyped error: \(error)", trace: [])
                    }
                }
                return true
            }
            for _ in 0..<Self.parallelRuns { _ = start() }
            var failures: [SimulationFailure] = []
            while let result = try await group.next() {
                if let result { failures.append(result) }
                _ = start()
            }
            return failures.sorted { $0.seed < $1.seed }
        }
        for failure in failures.prefix(3) { Issue.record("\(failure)") }
        #expect(failures.isEmpty, "\(failures.count) of \(seeds.count) seeds failed: \(failures.prefix(20).map(\.seed))")
    }

    @Test("a seed replays the same run")
    func sameSeedSameRun() async throws {
        func fingerprint(_ seed: UInt64) async throws -> [String] {
            let simulation = try await Simulation.make(seed: seed, stepCount: 30)
            try await simulation.run()
            return simulation.replayFingerprint
        }
        let first = try await fingerprint(7)
        #expect(try await fingerprint(7) == first)
        #expect(try await fingerprint(8) != first)
    }
}
