import Foundation
import PKRCore
import Synchronization
import Testing

@testable import PKRApplication
@testable import PKRGateway

/// The dispatcher's sleep: a signal wakes the wait it lands in, and only that one. Waits are timed from below only
/// (a sleep never ends early), so a slow machine cannot fail these; an upper bound is a generous deadline.
@Suite("Wake signal")
struct WakeSignalTests {
    static func elapsedMillis(_ body: () async -> Void) async -> Int64 {
        let started = ContinuousClock.now
        await body()
        let elapsed = ContinuousClock.now - started
        return elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
    }

    @Test("a signal wakes the wait it lands in, and the next wait runs to its timeout")
    func signalWakesOneWait() async throws {
        let signal = WakeSignal()
        let waiting = Task { await Self.elapsedMillis { await signal.wait(timeoutMillis: 60_000) } }
        try await Task.sleep(for: .milliseconds(50))
        signal.signal()
        #expect(await waiting.value < 30_000)
        // The woken wait's timer is cancelled, not fired: it must not leave a signal behind for this wait.
        #expect(await Self.elapsedMillis { await signal.wait(timeoutMillis: 300) } >= 290)
        #expect(await Self.elapsedMillis { await signal.wait(timeoutMillis: 300) } >= 290)
    }

    @Test("a signal sent while nobody waits is remembered once")
    func signalIsRememberedOnce() async {
        let signal = WakeSignal()
        signal.signal()
        signal.signal()
        #expect(await Self.elapsedMillis { await signal.wait(timeoutMillis: 60_000) } < 30_000)
        #expect(await Self.elapsedMillis { await signal.wait(timeoutMillis: 300) } >= 290)
    }

    @Test("a cancelled wait returns, and leaves no signal behind")
    func cancelledWaitReturns() async {
        let signal = WakeSignal()
        let waiting = Task { await Self.elapsedMillis { await signal.wait(timeoutMillis: 60_000) } }
        waiting.cancel()
        #expect(await waiting.value < 30_000)
        #expect(await Self.elapsedMillis { await signal.wait(timeoutMillis: 300) } >= 290)
    }

    @Test("a wait whose time runs out before it begins to wait returns")
    func zeroTimeoutReturns() async {
        let signal = WakeSignal()
        for _ in 0..<100 { await signal.wait(timeoutMillis: 0) }
        let cancelled = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await signal.wait(timeoutMillis: 60_000)
        }
        await cancelled.value
        #expect(await Self.elapsedMillis { await signal.wait(timeoutMillis: 300) } >= 290)
    }

    /// An outbox with one delivery, then nothing due, that counts how often it is asked.
    final class OneDeliveryOutbox: OutboxStore {
        let claims = Atomic<Int>(0)
        let recorded = Atomic<Int>(0)

        func claimDue(nowMicros: Int64, limit: Int) async throws -> [OutboxDelivery] {
            guard claims.add(1, ordering: .relaxed).newValue == 1 else { return [] }
            return [OutboxDelivery(id: 1, messageID: "msg_1", providerTxID: "TX-1", payload: Array("{}".utf8), roundAttempts: 0)]
        }
        func recordAttempts(_ attempts: [OutboxAttempt]) async throws { recorded.add(attempts.count, ordering: .relaxed) }
        func redeliver(id: Int64, nowMicros: Int64) async throws -> Bool { false }
        func nextDueMicros() async throws -> Int64? { nil }
        func list(limit: Int, beforeID: Int64?, state: String?) async throws -> [DeliveryView] { [] }
        func attempts(deliveryID: Int64) async throws -> [AttemptView]? { nil }
        func countByState() async throws -> [String: Int] { [:] }
        func pruneDelivered(deliveredBefore cutoff: String, rowsMax: Int) async throws -> (deliveries: Int, attempts: Int) { (0, 0) }
    }

    struct AcceptingTransport: WebhookTransport {
        func send(_ webhook: SignedWebhook) async -> WebhookAttemptResult { WebhookAttemptResult(httpStatus: 204, failure: nil) }
        func shutdown() async throws {}
    }

    @Test("an idle dispatcher sleeps between claims after it was woken")
    func idleDispatcherSleeps() async throws {
        let outbox = OneDeliveryOutbox()
        let signal = WakeSignal()
        let dispatcher = WebhookDispatcher(
            outbox: outbox, signal: signal, secret: devSecret, scheduleMillis: [1000], clock: SystemClock(),
            transport: AcceptingTransport(), logger: testLogger())
        let running = Task { try await dispatcher.run() }
        defer { running.cancel() }
        // Woken as each new delivery wakes it, then left idle for longer than its idle wait.
        for _ in 0..<3 {
            try await Task.sleep(for: .milliseconds(100))
            signal.signal()
        }
        try await Task.sleep(for: .milliseconds(1500))
        #expect(outbox.recorded.load(ordering: .relaxed) == 1)
        // One claim per wake and per idle timeout, not a claim every few milliseconds.
        let claims = outbox.claims.load(ordering: .relaxed)
        #expect(claims >= 2 && claims <= 10, "claims while idle: \(claims)")
    }
}
