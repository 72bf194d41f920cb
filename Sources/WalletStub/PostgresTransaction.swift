import Logging
import PostgresNIO

extension PostgresClient {
    /// `withTransaction`, but a failure surfaces as the error the closure threw (a typed domain error stays
    /// itself) rather than wrapped in `PostgresTransactionError`.
    public func transaction<T: Sendable>(logger: Logger, _ body: (PostgresConnection) async throws -> sending T) async throws -> sending T {
        do {
            return try await withTransaction(logger: logger) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error.beginError ?? error.commitError ?? error
        }
    }
}
