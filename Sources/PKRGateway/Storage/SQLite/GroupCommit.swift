import GRDB
import Synchronization

/// Group commit for SQLite: concurrent business changes that arrive while a commit is under way are written
/// together in the next transaction, one savepoint each, and share its single fsync. Every caller still waits
/// for the commit that holds its own change, and a change that fails rolls back only its own savepoint.
final class GroupCommit: Sendable {
    static let batchSizeMax = 128

    private struct Job: Sendable {
        let work: @Sendable (Database) throws -> any Sendable
        let resume: @Sendable (Result<any Sendable, any Error>) -> Void
    }

    private struct Queue {
        var pending: [Job] = []
        var draining = false
    }

    private let database: DatabasePool
    private let queue = Mutex(Queue())

    init(database: DatabasePool) {
        self.database = database
    }

    func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let result: any Sendable = try await withCheckedThrowingContinuation { continuation in
            let job = Job(work: { try work($0) }, resume: { continuation.resume(with: $0) })
            let startDrainer = queue.withLock { queue -> Bool in
                queue.pending.append(job)
                guard !queue.draining else { return false }
                queue.draining = true
                return true
            }
            if startDrainer { Task { await self.drain() } }
        }
        // The job returned exactly what `work` produced.
        return result as! T
    }

    private func drain() async {
        while true {
            let batch = queue.withLock { queue -> [Job] in
                let batch = Array(queue.pending.prefix(Self.batchSizeMax))
                queue.pending.removeFirst(batch.count)
                if batch.isEmpty { queue.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            do {
                let results = try await database.write { db -> [Result<any Sendable, any Error>] in
                    var results: [Result<any Sendable, any Error>] = []
                    results.reserveCapacity(batch.count)
                    // The savepoint statements come from the statement cache: `Database.inSavepoint` compiles
                    // two statements per call, which showed up in the writer's profile.
                    let begin = try db.cachedStatement(sql: "SAVEPOINT job")
                    let release = try db.cachedStatement(sql: "RELEASE SAVEPOINT job")
                    let rollback = try db.cachedStatement(sql: "ROLLBACK TO SAVEPOINT job")
                    for job in batch {
                        try begin.execute()
                        do {
                            let value = try job.work(db)
                            try release.execute()
                            results.append(.success(value))
                        } catch {
                            // Undoes this job's writes only; a failure here fails the whole batch, which is then
                            // not committed.
                            try rollback.execute()
                            try release.execute()
                            results.append(.failure(error))
                        }
                    }
                    return results
                }
                for (job, result) in zip(batch, results) { job.resume(result) }
            } catch {
                // The commit itself failed: nothing in the batch was written.
                for job in batch { job.resume(.failure(error)) }
            }
        }
    }
}
