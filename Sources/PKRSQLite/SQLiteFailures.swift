import GRDB
import PKRApplication

/// A busy, locked, full or unreachable database file is an outage; any other SQLite error is a fault.
extension DatabaseError: StoreFailure {
    public var storeFailureKind: StoreFailureKind {
        let outages: [ResultCode] = [.SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_IOERR, .SQLITE_FULL, .SQLITE_CANTOPEN]
        return outages.contains(resultCode) ? .unavailable(detail: "busy or unreachable; retry") : .fault
    }

    /// The result code only: SQLite's messages can quote the statement.
    public var loggableDescription: String { "SQLite \(resultCode)" }
}
