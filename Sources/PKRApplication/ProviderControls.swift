import PKRCore
import Synchronization

/// The provider stub's test controls (demo mode only): pause its webhooks, and make its next answers fail, arrive
/// late, or never arrive although the work was done, so that the gateway's handling of each can be shown on a real
/// wire.
public final class ProviderControls: Sendable {
    public struct Faults: Sendable, Equatable {
        /// The next this many calls answer `failStatus` without doing anything.
        public var failNext = 0
        public var failStatus = 500
        /// Sent as `Retry-After` with each failure, when set.
        public var retryAfterSeconds: Int?
        /// Every call waits this long before it is served.
        public var delayMillis: Int64 = 0
        /// The next this many calls do their work and then hold their answer for `holdMillis`, past any sane client
        /// timeout, and answer 504: the caller cannot know what happened.
        public var dropNext = 0
        public var holdMillis: Int64 = 3_000

        public init() {}
    }

    /// What to do with one call.
    public struct Decision: Sendable, Equatable {
        public var failStatus: Int?
        public var retryAfterSeconds: Int?
        public var delayMillis: Int64
        public var holdMillis: Int64?
    }

    private struct State {
        var webhooksPaused = false
        var faults = Faults()
        var failingPayouts: (count: Int, failure: PayoutFailure) = (0, PayoutFailure(code: .railRejected, afterDebit: false))
        var pendingPayouts = 0
    }

    private let state = Mutex(State())

    public init() {}

    public var webhooksPaused: Bool { state.withLock { $0.webhooksPaused } }

    public func setWebhooksPaused(_ paused: Bool) { state.withLock { $0.webhooksPaused = paused } }

    public var faults: Faults { state.withLock { $0.faults } }

    /// The next `count` new payouts fail as `failure` says.
    public func failPayouts(count: Int, _ failure: PayoutFailure) {
        precondition(count >= 0)
        state.withLock { $0.failingPayouts = (count, failure) }
    }

    /// Takes the next new payout's failure, if one is due.
    public func takePayoutFailure() -> PayoutFailure? {
        state.withLock { state in
            guard state.failingPayouts.count > 0 else { return nil }
            state.failingPayouts.count -= 1
            return state.failingPayouts.failure
        }
    }

    /// Puts back a failure taken for a request that turned out to be a replay.
    public func restorePayoutFailure(_ failure: PayoutFailure) {
        state.withLock { $0.failingPayouts = ($0.failingPayouts.count + 1, failure) }
    }

    /// The next `count` new payouts stay `pending`, their debit pending, until `advance-payout` or a cancel ends them.
    public func pendPayouts(count: Int) {
        precondition(count >= 0)
        state.withLock { $0.pendingPayouts = count }
    }

    /// Whether the next new payout is to stay pending; a replay puts it back with `restorePendingPayout`.
    public func takePendingPayout() -> Bool {
        state.withLock { state in
            guard state.pendingPayouts > 0 else { return false }
            state.pendingPayouts -= 1
            return true
        }
    }

    public func restorePendingPayout() { state.withLock { $0.pendingPayouts += 1 } }

    public func setFaults(_ faults: Faults) {
        precondition(faults.failNext >= 0 && faults.dropNext >= 0 && faults.delayMillis >= 0 && faults.holdMillis >= 0)
        state.withLock { $0.faults = faults }
    }

    /// Takes the next call's fate: a failure is used up before a drop.
    public func nextCall() -> Decision {
        state.withLock { state in
            var decision = Decision(failStatus: nil, retryAfterSeconds: nil, delayMillis: state.faults.delayMillis, holdMillis: nil)
            if state.faults.failNext > 0 {
                state.faults.failNext -= 1
                decision.failStatus = state.faults.failStatus
                decision.retryAfterSeconds = state.faults.retryAfterSeconds
            } else if state.faults.dropNext > 0 {
                state.faults.dropNext -= 1
                decision.holdMillis = state.faults.holdMillis
            }
            return decision
        }
    }
}
