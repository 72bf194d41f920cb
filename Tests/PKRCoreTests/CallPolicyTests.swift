import Testing

@testable import PKRCore

/// `admit` changes the breaker; called outside `#expect`, whose expansion holds its subject immutable.
private func admit(_ breaker: inout CircuitBreaker, _ nowMicros: Int64) -> Bool { breaker.admit(nowMicros: nowMicros) }

@Suite("Retries and the circuit breaker")
struct CallPolicyTests {
    @Test("backoff doubles from the base, is capped, jitters below its ceiling, and honours a longer Retry-After")
    func backoff() {
        let policy = RetryPolicy(attemptsMax: 6, baseMillis: 100, capMillis: 1_000, retryAfterMillisMax: 5_000)
        #expect(
            (1...6).map { policy.delayMillis(afterAttempt: $0, retryAfterSeconds: nil, random: 1) } == [100, 200, 400, 800, 1_000, 1_000])
        #expect(policy.delayMillis(afterAttempt: 3, retryAfterSeconds: nil, random: 0) == 0)
        #expect(policy.delayMillis(afterAttempt: 3, retryAfterSeconds: nil, random: 0.5) == 200)
        #expect(policy.delayMillis(afterAttempt: 1, retryAfterSeconds: 2, random: 1) == 2_000)
        #expect(policy.delayMillis(afterAttempt: 1, retryAfterSeconds: 60, random: 1) == 5_000, "Retry-After is bounded")
        #expect(policy.delayMillis(afterAttempt: 4, retryAfterSeconds: 0, random: 1) == 800)
        #expect(policy.delayMillis(afterAttempt: 64, retryAfterSeconds: nil, random: 1) == 1_000, "no overflow")
    }

    @Test("what is retried: 409, 429 and 5xx, never another 4xx")
    func retryable() {
        #expect([409, 429, 500, 502, 503, 504].allSatisfy(RetryPolicy.isRetryable(status:)))
        #expect(![200, 201, 400, 401, 404, 422].contains(where: RetryPolicy.isRetryable(status:)))
    }

    @Test("the circuit opens after failures in a row, fails fast, lets one trial through, and closes on its success")
    func breaker() {
        var breaker = CircuitBreaker(failuresMax: 3, openMicros: 1_000)
        breaker.recordFailure(nowMicros: 0)
        breaker.recordFailure(nowMicros: 0)
        breaker.recordSuccess()
        breaker.recordFailure(nowMicros: 0)
        breaker.recordFailure(nowMicros: 0)
        #expect(admit(&breaker, 0), "a success in between starts the count again")
        breaker.recordFailure(nowMicros: 10)
        #expect(breaker.state == .open(untilMicros: 1_010))
        #expect(!admit(&breaker, 500))
        #expect(admit(&breaker, 1_010), "one trial once the time is up")
        #expect(!admit(&breaker, 1_020), "and only one")
        breaker.recordFailure(nowMicros: 1_030)
        #expect(breaker.state == .open(untilMicros: 2_030), "a failed trial opens it again")
        #expect(admit(&breaker, 2_030))
        #expect(admit(&breaker, 3_030), "a trial that never answered is replaced after the open time")
        breaker.recordSuccess()
        #expect(breaker.state == .closed(failures: 0))
        #expect(admit(&breaker, 3_040))
    }
}
