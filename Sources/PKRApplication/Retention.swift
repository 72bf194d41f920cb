import PKRCore

/// Retention: what `pkr prune` and the background schedule delete. Only rows kept for diagnosis go (delivered
/// outbox rows and their attempts, inbound-log rows, idempotency records); the ledger, transactions, jobs and the
/// quarantine are the books and are never pruned.
public struct PruneResult: Sendable, Equatable {
    public var deliveries = 0
    public var attempts = 0
    public var inboundRows = 0
    public var idempotencyRecords = 0
    public var batches = 0

    public init() {}

    public var rows: Int { deliveries + attempts + inboundRows + idempotencyRecords }

    public var summary: String {
        "pruned \(deliveries) delivered outbox rows with \(attempts) attempts, \(inboundRows) inbound-log rows and "
            + "\(idempotencyRecords) idempotency records in \(batches) batches"
    }
}

extension Gateway {
    /// How many rows one prune transaction deletes at most: small, so a webhook waits behind one briefly.
    public static let pruneBatchRowsMax = 500

    /// Deletes what is older than the window, a batch at a time, calling `progress` after each batch. Safe to run
    /// beside live traffic and to interrupt: each batch is its own transaction.
    public func prune(
        olderThanSeconds: Int64, batchRows: Int = Gateway.pruneBatchRowsMax,
        progress: (PruneResult) -> Void = { _ in }
    ) async throws -> PruneResult {
        precondition(olderThanSeconds > 0 && batchRows > 0 && batchRows <= 10_000, "a prune is bounded")
        let cutoff = Timestamp.format(micros: clock.nowMicros() - olderThanSeconds * Timestamp.microsPerSecond)
        var result = PruneResult()
        // Runs one kind of batch until a batch comes back short; `batch` adds what it deleted to the result and
        // answers how many of its rows counted against the batch size.
        func drain(_ batch: (inout PruneResult) async throws -> Int) async throws {
            while true {
                let rows = try await batch(&result)
                result.batches += 1
                progress(result)
                if rows < batchRows { return }
                await Task.yield()
            }
        }
        try await drain { result in
            let (deliveries, attempts) =
                try await localProvider?.outbox.pruneDelivered(deliveredBefore: cutoff, rowsMax: batchRows) ?? (0, 0)
            result.deliveries += deliveries
            result.attempts += attempts
            return deliveries
        }
        try await drain { result in
            let rows = try await store.pruneInbound(receivedBefore: cutoff, rowsMax: batchRows)
            result.inboundRows += rows
            return rows
        }
        try await drain { result in
            let rows = try await store.pruneIdempotencyRecords(createdBefore: cutoff, rowsMax: batchRows)
            result.idempotencyRecords += rows
            return rows
        }
        if result.rows > 0 {
            logger.info(
                "pruned rows past the retention window",
                metadata: [
                    "deliveries": "\(result.deliveries)", "attempts": "\(result.attempts)", "inbound_rows": "\(result.inboundRows)",
                    "idempotency_records": "\(result.idempotencyRecords)", "cutoff": "\(cutoff)",
                ])
        }
        return result
    }
}
