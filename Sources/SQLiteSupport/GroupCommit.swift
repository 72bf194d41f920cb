import GRDB
import Synchronization

/// What one group-commit transaction carries from job to job, undone with a job that a savepoint rolls back and
/// written just before the commit.
public protocol BatchScope: AnyObject {
    associatedtype Mark
    init()
    /// Before a job: what `restore` needs should the job be undone.
    func mark() -> Mark
    /// After a job was undone: forget what it left in the scope.
    func restore(_ mark: Mark)
    /// Runs last in the transaction, after every job.
    func flush(_ db: Database) throws
}

/// A batch that carries nothing between its jobs.
public final class NoBatchScope: BatchScope {
    public init() {}
    public func mark() {}
    public func restore(_ mark: Void) {}
    public func flush(_ db: Database) throws {}
}

/// Group commit for SQLite: concurrent business changes that arrive while a commit is under way are written
/// together in the next transaction and share its single fsync. Every caller still waits for the commit that
/// holds its own change, and a change that fails takes nothing else with it.
///
/// A batch is first written without savepoints: a savepoint per job cost the writer two statements and a copy of
/// every page the job touched into the statement journal, for failures that almost never happen. A job that fails
/// having written nothing needs no undoing. Should a job fail after writing, the whole transaction is rolled back
/// and the batch written again with a savepoint per job, which undoes exactly that job's writes.
///
/// Batches run straight on the writer's dispatch queue, one queue item per batch. An earlier version drove them
/// from a Swift task, and the writer sat idle while that task waited for a thread of the (busy) cooperative pool
/// between batches; re-enqueueing each batch also lets any other write queued meanwhile take its turn.
public final class GroupCommit<Scope: BatchScope>: Sendable {
    public static var batchSizeMax: Int { 128 }

    private struct Job: Sendable {
        let work: @Sendable (Database, Scope) throws -> any Sendable
        let resume: @Sendable (Result<any Sendable, any Error>) -> Void
    }

    private struct Queue {
        var pending: [Job] = []
        var draining = false
    }

    private let database: DatabasePool
    private let queue = Mutex(Queue())
    /// Batches committed since start-up, for tests and diagnosis.
    public let committedBatchCount = Atomic<Int>(0)
    /// Batches written a second time, with a savepoint per job, because a job failed after writing.
    public let isolatedBatchCount = Atomic<Int>(0)

    /// Ends the first attempt at a batch: a job failed after writing, so its writes must be undone on their own.
    private struct JobFailedAfterWriting: Error {}

    public init(database: DatabasePool) {
        self.database = database
    }

    /// Runs `work` in the next batch's transaction and returns once that transaction has committed. The scope is
    /// the batch's: work must leave it only through its methods. Work may run twice (see above), so it touches
    /// nothing but the database and the scope.
    public func write<T: Sendable>(_ work: @escaping @Sendable (Database, Scope) throws -> T) async throws -> T {
        let result: any Sendable = try await withCheckedThrowingContinuation { continuation in
            let job = Job(work: { try work($0, $1) }, resume: { continuation.resume(with: $0) })
            let startDrainer = queue.withLock { queue -> Bool in
                queue.pending.append(job)
                guard !queue.draining else { return false }
                queue.draining = true
                return true
            }
            if startDrainer { scheduleBatch() }
        }
        // The job returned exactly what `work` produced.
        return result as! T
    }

    private func scheduleBatch() {
        database.asyncWriteWithoutTransaction { db in self.runBatch(db) }
    }

    /// Writes the next batch in one transaction, answers its callers, and schedules the batch after it.
    private func runBatch(_ db: Database) {
        let batch = queue.withLock { queue -> [Job] in
            let batch = Array(queue.pending.prefix(Self.batchSizeMax))
            queue.pending.removeFirst(batch.count)
            return batch
        }
        assert(!batch.isEmpty, "a batch is scheduled only while jobs are pending")
        do {
            let results: [Result<any Sendable, any Error>]
            do {
                results = try write(batch, db, savepointPerJob: false)
            } catch is JobFailedAfterWriting {
                isolatedBatchCount.add(1, ordering: .relaxed)
                results = try write(batch, db, savepointPerJob: true)
            }
            assert(results.count == batch.count, "one result per job")
            committedBatchCount.add(1, ordering: .relaxed)
            for (job, result) in zip(batch, results) { job.resume(result) }
        } catch {
            // The commit itself failed: nothing in the batch was written.
            for job in batch { job.resume(.failure(error)) }
        }
        let more = queue.withLock { queue -> Bool in
            if queue.pending.isEmpty { queue.draining = false }
            return queue.draining
        }
        if more { scheduleBatch() }
    }

    /// Writes `batch` in one transaction and commits it, returning each job's result in order. Without a savepoint
    /// per job, a job that fails after writing throws `JobFailedAfterWriting` and nothing is committed.
    private func write(_ batch: [Job], _ db: Database, savepointPerJob: Bool) throws -> [Result<any Sendable, any Error>] {
        var results: [Result<any Sendable, any Error>] = []
        results.reserveCapacity(batch.count)
        try db.inTransaction {
            let scope = Scope()
            if savepointPerJob {
                // The savepoint statements come from the statement cache: `Database.inSavepoint` compiles two
                // statements per call, which showed up in the writer's profile.
                let begin = try db.cachedStatement(sql: "SAVEPOINT job")
                let release = try db.cachedStatement(sql: "RELEASE SAVEPOINT job")
                let rollback = try db.cachedStatement(sql: "ROLLBACK TO SAVEPOINT job")
                for job in batch {
                    try begin.execute()
                    let mark = scope.mark()
                    do {
                        let value = try job.work(db, scope)
                        try release.execute()
                        results.append(.success(value))
                    } catch {
                        // Undoes this job's writes only. Should the rollback itself fail, the whole batch fails
                        // and is not committed.
                        try rollback.execute()
                        try release.execute()
                        scope.restore(mark)
                        results.append(.failure(error))
                    }
                }
            } else {
                for job in batch {
                    let mark = scope.mark()
                    let changesBefore = db.totalChangesCount
                    do {
                        results.append(.success(try job.work(db, scope)))
                    } catch {
                        // No row changed and the transaction is still open: the job left only what `restore` undoes.
                        guard db.totalChangesCount == changesBefore, db.isInsideTransaction else { throw JobFailedAfterWriting() }
                        scope.restore(mark)
                        results.append(.failure(error))
                    }
                }
            }
            try scope.flush(db)
            return .commit
        }
        return results
    }
}
