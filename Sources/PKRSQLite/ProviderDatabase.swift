import GRDB
import SQLiteSupport

extension SQLiteStore {
    /// A connection pool of the provider's own on a database file (the gateway's file by default), migrated: the
    /// provider's writes are its own transactions, never the gateway's group commit. Commits are as durable as the
    /// gateway's (`synchronous = FULL`); a write waits for the other side's writer rather than failing.
    public static func openProviderDatabase(path: String) throws -> DatabasePool {
        SQLiteProcess.configure()
        var configuration = Configuration()
        configuration.busyMode = .callback(SQLiteBusyWait.shortWaits(totalSeconds: 10))
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        let pool = try DatabasePool(path: path, configuration: configuration)
        // As for the gateway's pool: WAL set-up leaves the writer at NORMAL, so FULL is set again and checked.
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            let level = try Int.fetchOne(db, sql: "PRAGMA synchronous")
            guard level == synchronousFull else {
                throw DatabaseError(message: "the provider's writer runs with PRAGMA synchronous = \(String(describing: level)), not FULL")
            }
        }
        try SQLiteSchema.migrate(pool)
        return pool
    }
}
