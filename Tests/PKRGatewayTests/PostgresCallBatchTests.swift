import Foundation
import PostgresSupport
import Synchronization
import Testing

/// The batching under PostgreSQL's one-call paths, without a database: what each caller is answered when calls
/// share a batch, and when a batch fails.
@Suite("PostgreSQL call batches")
struct PostgresCallBatchTests {
    struct Refused: Error, Equatable {
        let call: String
    }

    /// A write that holds its first batch until `release`, so that the calls made meanwhile form the next batch,
    /// and refuses any batch that holds `bad`.
    final class Writer: Sendable {
        let batches = Mutex<[[String]]>([])
        let released = Atomic<Bool>(false)
        /// Calls made after the first batch began.
        let started = Atomic<Int>(0)

        func write(_ calls: [String]) async throws -> [String] {
            let first = batches.withLock { batches in
                batches.append(calls)
                return batches.count == 1
            }
            if first { while !released.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(1)) } }
            if let bad = calls.first(where: { $0.hasPrefix("bad") }) { throw Refused(call: bad) }
            return calls.map { "answer to \($0)" }
        }
    }

    /// Waits until `count` calls are queued behind the first batch: its writer has not been released, so the calls
    /// can only be waiting in the queue.
    static func whenQueued(_ writer: Writer, count: Int) async throws {
        while writer.started.load(ordering: .relaxed) < count { try await Task.sleep(for: .milliseconds(1)) }
        try await Task.sleep(for: .milliseconds(20))
        writer.released.store(true, ordering: .relaxed)
    }

    @Test("calls made while a batch is written share the next one; each caller gets its own answer")
    func callsShareABatch() async throws {
        let writer = Writer()
        let batch = PostgresCallBatch<String, String> { try await writer.write($0) }
        let answers = try await withThrowingTaskGroup(of: (String, String).self) { group in
            group.addTask { ("first", try await batch.call("first")) }
            while writer.batches.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(1)) }
            for name in ["a", "b", "c"] {
                group.addTask {
                    writer.started.add(1, ordering: .relaxed)
                    return (name, try await batch.call(name))
                }
            }
            try await Self.whenQueued(writer, count: 3)
            return try await group.reduce(into: [String: String]()) { $0[$1.0] = $1.1 }
        }
        #expect(answers == ["first": "answer to first", "a": "answer to a", "b": "answer to b", "c": "answer to c"])
        let batches = writer.batches.withLock { $0 }
        #expect(batches.count == 2 && batches[0] == ["first"] && Set(batches[1]) == ["a", "b", "c"], "\(batches)")
        #expect(batch.batchCount.load(ordering: .relaxed) == 2 && batch.splitCount.load(ordering: .relaxed) == 0)
    }

    @Test("a batch that fails is written again call by call: the bad call gets its error, its neighbours their answers")
    func aFailedBatchIsSplit() async throws {
        let writer = Writer()
        let batch = PostgresCallBatch<String, String> { try await writer.write($0) }
        let results = try await withThrowingTaskGroup(of: (String, Result<String, Refused>).self) { group in
            group.addTask { ("first", .success(try await batch.call("first"))) }
            while writer.batches.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(1)) }
            for name in ["a", "bad one", "c"] {
                group.addTask {
                    writer.started.add(1, ordering: .relaxed)
                    do {
                        return (name, .success(try await batch.call(name)))
                    } catch let error as Refused {
                        return (name, .failure(error))
                    }
                }
            }
            try await Self.whenQueued(writer, count: 3)
            return try await group.reduce(into: [String: Result<String, Refused>]()) { $0[$1.0] = $1.1 }
        }
        typealias Answer = Result<String, Refused>
        #expect(results["a"] == Answer.success("answer to a") && results["c"] == Answer.success("answer to c"))
        #expect(results["bad one"] == Answer.failure(Refused(call: "bad one")))
        let batches = writer.batches.withLock { $0 }
        // The first batch, the failed one of three, then each of its calls alone.
        #expect(batches.count == 5 && batches[2...].allSatisfy { $0.count == 1 }, "\(batches)")
        #expect(batch.splitCount.load(ordering: .relaxed) == 1)
    }

    @Test("a call alone that fails gets its own error, and the batch keeps serving")
    func aLoneFailure() async throws {
        let writer = Writer()
        writer.released.store(true, ordering: .relaxed)
        let batch = PostgresCallBatch<String, String> { try await writer.write($0) }
        await #expect(throws: Refused(call: "bad")) { _ = try await batch.call("bad") }
        #expect(try await batch.call("next") == "answer to next")
        #expect(batch.splitCount.load(ordering: .relaxed) == 0)
    }
}
