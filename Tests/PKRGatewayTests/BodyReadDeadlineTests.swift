import Synchronization
import Testing

@testable import PKRApplication
@testable import PKRBench
@testable import PKRFuzz
@testable import PKRGateway
@testable import PKRHTTP
@testable import PKRPostgres
@testable import PKRSQLite
@testable import WalletStub

/// Waits until `condition` holds, for at most `seconds`: the ticker runs on the shared pool, which other suites may
/// keep busy, so the tests bound the wait instead of assuming a prompt tick.
private func eventually(seconds: Int = 20, _ condition: () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { return false }
        try await Task.sleep(for: .milliseconds(10))
    }
    return true
}

@Suite struct BodyReadDeadlineTests {
    @Test("a read still registered after its deadline is cancelled once; a removed one never is")
    func cancelsOnlyLateReads() async throws {
        let deadlines = BodyReadDeadlines(tickMillis: 10)
        let lateCancels = Atomic<Int>(0)
        let finishedCancels = Atomic<Int>(0)
        let notYetCancels = Atomic<Int>(0)
        let finished = deadlines.register(deadline: .now + .milliseconds(30)) { finishedCancels.add(1, ordering: .relaxed) }
        _ = deadlines.register(deadline: .now + .milliseconds(30)) { lateCancels.add(1, ordering: .relaxed) }
        let notYet = deadlines.register(deadline: .now + .seconds(600)) { notYetCancels.add(1, ordering: .relaxed) }
        deadlines.remove(finished)
        #expect(try await eventually { lateCancels.load(ordering: .relaxed) == 1 })
        // The tick that cancelled the late read was past the removed read's deadline too.
        try await Task.sleep(for: .milliseconds(50))
        #expect(lateCancels.load(ordering: .relaxed) == 1)
        #expect(finishedCancels.load(ordering: .relaxed) == 0)
        #expect(notYetCancels.load(ordering: .relaxed) == 0)
        #expect(deadlines.registeredCount == 1)
        deadlines.remove(notYet)
        #expect(deadlines.registeredCount == 0)
    }

    @Test("the ticker stops when no read is registered and starts again with the next one")
    func tickerRestarts() async throws {
        let deadlines = BodyReadDeadlines(tickMillis: 10)
        for round in 1...3 {
            let cancels = Atomic<Int>(0)
            _ = deadlines.register(deadline: .now + .milliseconds(20)) { cancels.add(1, ordering: .relaxed) }
            #expect(deadlines.tickerRunning, "round \(round)")
            #expect(try await eventually { cancels.load(ordering: .relaxed) == 1 }, "round \(round)")
            #expect(deadlines.registeredCount == 0)
            #expect(try await eventually { !deadlines.tickerRunning }, "round \(round)")
        }
    }
}
