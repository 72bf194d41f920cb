import Logging
import NIOCore
import PostgresNIO
import Synchronization

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

/// Thrown instead of waiting when the database is known to be unreachable.
public struct DatabaseUnavailable: Error, Sendable {}

/// Watches the database over one dedicated connection. While it is unreachable, operations fail at once
/// (answered 503) instead of queueing behind a pool that keeps retrying for a minute.
public final class PostgresAvailability: Sendable {
    public static let probeIntervalMillis: Int64 = 250

    private let reachable = Atomic<Bool>(true)
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger

    public init(configuration: PostgresConnection.Configuration, logger: Logger) {
        var configuration = configuration
        configuration.options.connectTimeout = .seconds(1)
        self.configuration = configuration
        self.logger = logger
    }

    public var isReachable: Bool { reachable.load(ordering: .relaxed) }

    public func check() throws {
        guard isReachable else { throw DatabaseUnavailable() }
    }

    /// The client, if the database is reachable; otherwise `DatabaseUnavailable` at once.
    public func checked(_ client: PostgresClient) throws -> PostgresClient {
        try check()
        return client
    }

    /// Probes until the task is cancelled.
    public func run() async {
        var connection: PostgresConnection?
        var missesInARow = 0
        while !Task.isCancelled {
            let current = connection
            let configuration = self.configuration
            let logger = self.logger
            // A query on a connection the server has just terminated can hang rather than fail, so each probe
            // races a deadline and a stuck probe is abandoned with its connection.
            // Every connection is closed by someone: a probe that fails closes what it opened, and one that
            // answers after the deadline is closed on arrival.
            let probed: PostgresConnection? = await Self.firstOf(
                deadlineMillis: Self.probeDeadlineMillis,
                discardLate: { late in Task { try? await late.close() } }
            ) {
                let probeConnection: PostgresConnection
                if let current {
                    probeConnection = current
                } else {
                    probeConnection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
                }
                do {
                    _ = try await probeConnection.query("SELECT 1", logger: logger).collect()
                } catch {
                    if current == nil { try? await probeConnection.close() }
                    throw error
                }
                return probeConnection
            }
            if let probed {
                connection = probed
                missesInARow = 0
                if !reachable.exchange(true, ordering: .relaxed) { logger.notice("database reachable again") }
            } else {
                if let failed = current { Task { try? await failed.close() } }
                connection = nil
                missesInARow += 1
                // One late probe on a busy machine is not an outage; a refused connection fails fast, so a second
                // miss comes a probe interval later.
                if missesInARow >= Self.missesBeforeUnreachable, reachable.exchange(false, ordering: .relaxed) {
                    logger.error("database unreachable; answering 503 until it is back")
                }
            }
            try? await Task.sleep(for: .milliseconds(Self.probeIntervalMillis))
        }
        if let connection { Task { try? await connection.close() } }
    }

    public static let probeDeadlineMillis: Int64 = 1000
    static let missesBeforeUnreachable = 2

    /// The operation's result, or nil if it fails or the deadline passes first. The loser is not awaited; a
    /// result that arrives after the deadline goes to `discardLate`.
    static func firstOf<T: Sendable>(
        deadlineMillis: Int64, discardLate: @escaping @Sendable (T) -> Void,
        _ operation: @escaping @Sendable () async throws -> T
    ) async -> T? {
        let resumed = Mutex(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let finish: @Sendable (T?) -> Void = { value in
                let first = resumed.withLock { done -> Bool in
                    defer { done = true }
                    return !done
                }
                if first {
                    continuation.resume(returning: value)
                } else if let value {
                    discardLate(value)
                }
            }
            Task { finish(try? await operation()) }
            Task {
                try? await Task.sleep(for: .milliseconds(deadlineMillis))
                finish(nil)
            }
        }
    }
}
