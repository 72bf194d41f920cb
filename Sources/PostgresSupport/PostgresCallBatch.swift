import Synchronization

/// Group commit for a change written by one statement (`pkr_hold_batch`, `pkr_burn_held_batch`, the provider stub's paid
/// payout): the calls that arrive while a batch is being written go together in the next, in one transaction and
/// one commit however many it holds. Each call still takes its locks and makes its own decisions; what the batch
/// saves is a commit, and a wait for the rows every call shares, per call.
///
/// A batch that fails wrote nothing (it is one transaction), so each of its calls is then written on its own and
/// gets its own answer or error: one bad call cannot fail its neighbours.
public final class PostgresCallBatch<Call: Sendable, Answer: Sendable>: Sendable {
    public let batchSizeMax: Int

    private struct Waiter: Sendable {
        let call: Call
        let resume: @Sendable (Result<Answer, any Error>) -> Void
    }

    private struct Queue {
        var pending: [Waiter] = []
        var draining = false
    }

    private let queue = Mutex(Queue())
    private let write: @Sendable ([Call]) async throws -> [Answer]
    /// Batches written since start-up, and those that failed and were written call by call, for tests and diagnosis.
    public let batchCount = Atomic<Int>(0)
    public let splitCount = Atomic<Int>(0)

    /// `write` runs at most `batchSizeMax` calls in one transaction and answers each, in order.
    public init(batchSizeMax: Int = 64, write: @escaping @Sendable ([Call]) async throws -> [Answer]) {
        precondition(batchSizeMax > 0, "a batch holds at least one call")
        self.batchSizeMax = batchSizeMax
        self.write = write
    }

    public func call(_ call: Call) async throws -> Answer {
        try await withCheckedThrowingContinuation { continuation in
            let waiter = Waiter(call: call, resume: { continuation.resume(with: $0) })
            let startDrainer = queue.withLock { queue -> Bool in
                queue.pending.append(waiter)
                guard !queue.draining else { return false }
                queue.draining = true
                return true
            }
            if startDrainer { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = queue.withLock { queue -> [Waiter] in
                let batch = Array(queue.pending.prefix(batchSizeMax))
                queue.pending.removeFirst(batch.count)
                if batch.isEmpty { queue.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            batchCount.add(1, ordering: .relaxed)
            do {
                let answers = try await write(batch.map(\.call))
                precondition(answers.count == batch.count, "one answer per call")
                for (waiter, answer) in zip(batch, answers) { waiter.resume(.success(answer)) }
            } catch {
                guard batch.count > 1 else {
                    batch[0].resume(.failure(error))
                    continue
                }
                splitCount.add(1, ordering: .relaxed)
                for waiter in batch {
                    do {
                        let answers = try await write([waiter.call])
                        precondition(answers.count == 1, "one answer per call")
                        waiter.resume(.success(answers[0]))
                    } catch {
                        waiter.resume(.failure(error))
                    }
                }
            }
        }
    }
}
