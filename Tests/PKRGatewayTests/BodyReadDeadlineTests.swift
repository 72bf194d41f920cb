import Synchronization
import Testing
@testable import PKRGateway

@Suite struct BodyReadDeadlineTests {
    @Test("a read still registered after its deadline is cancelled once; a removed one never is")
    func cancelsOnlyLateReads() async throws {
        let deadlines = BodyReadDeadlines(tickMillis: 10)
        let lateCancels = Atomic<Int>(0)
        let finishedCancels = Atomic<Int>(0)
        let notYetCancels = Atomic<Int>(0)
        _ = deadlines.register(deadline: .now + .milliseconds(30)) { lateCancels.add(1, ordering: .relaxed) }
        let finished = deadlines.register(deadline: .now + .milliseconds(30)) { finishedCancels.add(1, ordering: .relaxed) }
        let notYet = deadlines.register(deadline: .now + .seconds(60)) { notYetCancels.add(1, ordering: .relaxed) }
        deadlines.remove(finished)
        try await Task.sleep(for: .milliseconds(200))
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
            try await Task.sleep(for: .milliseconds(150))
            #expect(cancels.load(ordering: .relaxed) == 1, "round \(round)")
            #expect(deadlines.registeredCount == 0)
        }
    }
}
