import Synchronization

/// Wakes a sleeping loop early. Signals sent while nobody waits are remembered once, so none is lost.
package final class WakeSignal: Sendable {
    package init() {}

    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    package func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns on a signal or after `timeoutMillis`, whichever comes first.
    package func wait(timeoutMillis: Int64) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: .milliseconds(timeoutMillis))
                self.signal()
            }
            group.addTask { await self.waitForSignal() }
            await group.next()
            group.cancelAll()
        }
        // The timer task's own signal may have landed after we woke; it only causes one spare check.
    }

    private func waitForSignal() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.pending {
                    state.pending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}
