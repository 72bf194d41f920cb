import Foundation
import GRDB
import PKRCore
import Testing
@testable import PKRGateway

@Suite struct SQLiteStoreTests {
    /// The writer's commits hand checkpoints to a second connection: pages reach the database file although the
    /// WAL never grew to the writer's own checkpoint threshold.
    @Test func backgroundCheckpointCopiesTheWALIntoTheDatabaseFile() async throws {
        let path = try temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
        let store = try SQLiteStore(path: path, limits: MoneyLimits(maxMintUnits: 1, maxPayoutUnits: 1), nowMicros: { 0 })
        try await store.migrate()
        let sizeBefore = try fileBytes(path)
        let pages = Int(WALCheckpointer.backgroundFramesMin) + 200
        try await store.database.write { db in
            try db.execute(sql: "CREATE TABLE scratch (payload BLOB NOT NULL)")
            for _ in 0..<pages { try db.execute(sql: "INSERT INTO scratch (payload) VALUES (randomblob(3000))") }
        }
        #expect(pages < Int(WALCheckpointer.writerFramesMax))
        var sizeAfter = sizeBefore
        for _ in 0..<100 where sizeAfter < sizeBefore + pages * 3000 {
            try await Task.sleep(for: .milliseconds(50))
            sizeAfter = try fileBytes(path)
        }
        #expect(sizeAfter >= sizeBefore + pages * 3000)
        let count = try await store.database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM scratch") }
        #expect(count == pages)
    }

    /// Every commit the writer makes is synced before it returns: the pool must not leave its writer on GRDB's
    /// WAL default, `synchronous = NORMAL`.
    @Test func theWriterSyncsEveryCommit() async throws {
        let path = try temporaryDirectory().appendingPathComponent("pkr.sqlite3").path
        let store = try SQLiteStore(path: path, limits: MoneyLimits(maxMintUnits: 1, maxPayoutUnits: 1), nowMicros: { 0 })
        try await store.migrate()
        let writerLevel = try await store.database.write { try Int.fetchOne($0, sql: "PRAGMA synchronous") }
        #expect(writerLevel == SQLiteStore.synchronousFull)
        let journalMode = try await store.database.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") }
        #expect(journalMode == "wal")
    }

    private func fileBytes(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }
}
