/// When a call to another system is tried again: capped exponential backoff with full jitter, or the server's
/// `Retry-After` when it asks for longer (up to `retryAfterMillisMax`).
public struct RetryPolicy: Sendable, Equatable {
    public var attemptsMax: Int
    public var baseMillis: Int64
    public var capMillis: Int64
    public var retryAfterMillisMax: Int64

    public init(attemptsMax: Int = 4, baseMillis: Int64 = 100, capMillis: Int64 = 2_000, retryAfterMillisMax: Int64 = 10_000) {
        precondition(attemptsMax >= 1 && baseMillis >= 0 && capMillis >= baseMillis && retryAfterMillisMax >= 0)
        self.attemptsMax = attemptsMax
        self.baseMillis = baseMillis
        self.capMillis = capMillis
        self.retryAfterMillisMax = retryAfterMillisMax
    }

    /// The wait before attempt `attempt + 1` (attempts count from 1). `random` is in 0...1 (injected for tests).
    public func delayMillis(afterAttempt attempt: Int, retryAfterSeconds: Int64?, random: Double) -> Int64 {
        precondition(attempt >= 1, "attempts count from 1")
        let exponent = min(attempt - 1, 30)
        let ceiling = min(capMillis, baseMillis << exponent)
        // Full jitter: anywhere up to the ceiling, so clients that failed together do not retry together.
        let jittered = Int64(Double(ceiling) * min(max(random, 0), 1))
        guard let retryAfterSeconds, retryAfterSeconds > 0 else { return jittered }
        return max(jittered, min(retryAfterSeconds * 1000, retryAfterMillisMax))
    }

    /// Whether an answer with this status may be asked again: the request did not happen (429), may not have
    /// happened (5xx), or is still being served (409 with an idempotency key).
    public static func isRetryable(status: Int) -> Bool {
        status == 409 || status == 429 || (500...599).contains(status)
    }
}

/// A circuit breaker: after `failuresMax` failures in a row the circuit opens and calls fail at once for
/// `openMicros`; then one trial call is let through, and its outcome closes or reopens it. A dead provider then
/// costs a failed check, not a request waiting out its timeouts.
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case closed(failures: Int)
        case open(untilMicros: Int64)
        /// One trial call is out; another is let through only if it has not answered within `openMicros`.
        case halfOpen(trialSinceMicros: Int64)
    }

    public let failuresMax: Int
    public let openMicros: Int64
    public private(set) var state = State.closed(failures: 0)

    public init(failuresMax: Int = 5, openMicros: Int64 = 5 * 1_000_000) {
        precondition(failuresMax >= 1 && openMicros > 0)
        self.failuresMax = failuresMax
        self.openMicros = openMicros
    }

    /// Whether a call may go out now. An open circuit past its time lets exactly one trial through.
    public mutating func admit(nowMicros: Int64) -> Bool {
        switch state {
        case .closed: return true
        case .halfOpen(let since):
            guard nowMicros >= since + openMicros else { return false }
            state = .halfOpen(trialSinceMicros: nowMicros)
            return true
        case .open(let until):
            guard nowMicros >= until else { return false }
            state = .halfOpen(trialSinceMicros: nowMicros)
            return true
        }
    }

    public mutating func recordSuccess() {
        state = .closed(failures: 0)
    }

    public mutating func recordFailure(nowMicros: Int64) {
        switch state {
        case .closed(let failures):
            state = failures + 1 >= failuresMax ? .open(untilMicros: nowMicros + openMicros) : .closed(failures: failures + 1)
        case .halfOpen, .open:
            state = .open(untilMicros: nowMicros + openMicros)
        }
    }
}
