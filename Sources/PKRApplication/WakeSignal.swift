import Synchronization

/// Wakes a sleeping loop early. Signals sent while nobody waits are remembered once, so none is lost. One loop
/// waits at a time.
package final class WakeSignal: Sendable {
    package init() {}

    private struct State {
        /// A signal sent while nobody waited.
        var pending = false
        var waiter: (wait: UInt64, continuation: CheckedContinuation<Void, Never>)?
        /// The latest wait whose time ran out before it began to wait.
        var expiredWait: UInt64 = 0
        var lastWait: UInt64 = 0
    }

    private let state = Mutex(State())

    package func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }

    /// Returns on a signal, after `timeoutMillis`, or when the task is cancelled, whichever comes first. A wait's
    /// own timeout wakes that wait only: it is not a signal, so it cannot wake the next wait early (a loop that
    /// was woken by a signal would otherwise find every later wait already signalled, and spin).
    package func wait(timeoutMillis: Int64) async {
        let wait = state.withLock { state -> UInt64 in
            state.lastWait += 1
            return state.lastWait
        }
        let timer = Task {
            // Cancelled only once the wait is over.
            guard (try? await Task.sleep(for: .milliseconds(timeoutMillis))) != nil else { return }
            self.expire(wait)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    if state.expiredWait == wait { return true }
                    precondition(state.waiter == nil, "one loop waits on a WakeSignal at a time")
                    state.waiter = (wait, continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            self.expire(wait)
        }
        timer.cancel()
    }

    /// Ends `wait` if it is still waiting, or marks it over if it has not begun to; any other wait is left alone.
    private func expire(_ wait: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.expiredWait = max(state.expiredWait, wait)
                return nil
            }
            guard waiter.wait == wait else { return nil }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }
}
