import PKRApplication
import PostgresNIO
import PostgresSupport

/// Connection-level failures and the server's shutdown codes (class 08, 57P0x) are outages; a deadlock or
/// serialization failure that outlasted the store's retries is contention; anything else is a fault.
extension PSQLError: StoreFailure {
    public var storeFailureKind: StoreFailureKind {
        guard let state = serverInfo?[.sqlState] else { return .unavailable(detail: "unreachable or restarting; retry") }
        if state.hasPrefix("08") || state.hasPrefix("57P") { return .unavailable(detail: "unreachable or restarting; retry") }
        return PostgresStore.isRetryable(self) ? .contention : .fault
    }

    /// The SQL state and the server's message only: never a bound value.
    public var loggableDescription: String {
        "sqlstate \(serverInfo?[.sqlState] ?? "none"): \(serverInfo?[.message] ?? "\(code)")"
    }
}

extension DatabaseUnavailable: StoreFailure {
    public var storeFailureKind: StoreFailureKind { .unavailable(detail: "unreachable; retry shortly") }
    public var loggableDescription: String { "the database did not answer its last probe" }
}
