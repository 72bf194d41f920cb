import GRDB

/// Runs a business write in a transaction. The gateway hands its group commit to the wallet stub that shares its
/// database, so their writes also share commits (and fsyncs) instead of queueing on the writer one by one.
public protocol SQLiteTransactions: Sendable {
    func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T
}

/// Each write in a transaction of its own.
public struct OwnTransactions: SQLiteTransactions {
    public let writer: any DatabaseWriter

    public init(_ writer: any DatabaseWriter) {
        self.writer = writer
    }

    public func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await writer.write { db in try work(db) }
    }
}
