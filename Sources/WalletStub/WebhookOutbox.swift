import Foundation
import GRDB
import PKRApplication
import PKRCore
import PostgresSupport

/// One outbox row ready to be sent: the payload bytes are fixed at write time; the signature is made per attempt.
public final class SQLiteWebhookOutbox: OutboxStore {
    private let database: any DatabaseWriter

    public init(database: any DatabaseWriter) {
        self.database = database
    }

    static func enqueue(_ db: Database, _ tx: ProviderTransaction, nowMicros: Int64) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO wallet_stub_webhookdelivery
                  (message_id, provider_tx_id, payload, state, attempts, round_attempts, next_attempt_micros, created_at)
                VALUES (?, ?, ?, 'pending', 0, 0, ?, ?)
                """
        ).execute(arguments: [
            Identifiers.webhookMessageID(), tx.providerTxID, Data(WebhookEvent.encode(tx)), nowMicros,
            Timestamp.format(micros: nowMicros),
        ])
    }

    public func claimDue(nowMicros: Int64, limit: Int) async throws -> [OutboxDelivery] {
        try await database.write { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT id, message_id, provider_tx_id, payload, round_attempts FROM wallet_stub_webhookdelivery
                        WHERE state = 'pending' AND next_attempt_micros <= ? ORDER BY next_attempt_micros, id LIMIT ?
                        """), arguments: [nowMicros, limit])
            var out: [OutboxDelivery] = []
            for row in rows {
                let id: Int64 = row[0]
                try db.cachedStatement(sql: "UPDATE wallet_stub_webhookdelivery SET next_attempt_micros = ? WHERE id = ?").execute(
                    arguments: [nowMicros + OutboxLimits.leaseMicros, id])
                let payload: Data = row[3]
                out.append(
                    OutboxDelivery(
                        id: id, messageID: row[1], providerTxID: row[2], payload: Array(payload),
                        roundAttempts: row[4]))
            }
            return out
        }
    }

    public func recordAttempts(_ attempts: [OutboxAttempt]) async throws {
        guard !attempts.isEmpty else { return }
        try await database.write { db in
            for attempt in attempts { try Self.record(db, attempt) }
        }
    }

    /// Every attempt counts in `attempts`, which numbers the next one; only a delivery still pending (or one that
    /// got through) takes the attempt's outcome, as an operator may have redelivered or parked it meanwhile.
    static func record(_ db: Database, _ attempt: OutboxAttempt) throws {
        let (id, status, error) = (attempt.delivery.id, attempt.httpStatus, attempt.error)
        let now = Timestamp.format(micros: attempt.finishedAtMicros)
        try db.cachedStatement(
            sql: """
                INSERT INTO wallet_stub_webhookattempt (delivery_id, attempt_no, attempted_at, http_status, error, duration_micros)
                VALUES (?, (SELECT attempts + 1 FROM wallet_stub_webhookdelivery WHERE id = ?), ?, ?, ?, ?)
                """
        ).execute(arguments: [id, id, now, status, error, attempt.durationMicros])
        switch attempt.outcome {
        case .delivered:
            try db.cachedStatement(
                sql: """
                    UPDATE wallet_stub_webhookdelivery SET state = 'delivered', round_attempts = round_attempts + 1,
                      last_http_status = ?, last_error = NULL, delivered_at = ?
                    WHERE id = ?
                    """
            ).execute(arguments: [status, now, id])
        case .retry(let atMicros):
            try db.cachedStatement(
                sql: """
                    UPDATE wallet_stub_webhookdelivery SET round_attempts = round_attempts + 1,
                      next_attempt_micros = ?, last_http_status = ?, last_error = ?
                    WHERE id = ? AND state = 'pending'
                    """
            ).execute(arguments: [atMicros, status, error, id])
        case .dead:
            try db.cachedStatement(
                sql: """
                    UPDATE wallet_stub_webhookdelivery SET state = 'dead', round_attempts = round_attempts + 1,
                      last_http_status = ?, last_error = ?
                    WHERE id = ? AND state = 'pending'
                    """
            ).execute(arguments: [status, error, id])
        }
        try db.cachedStatement(sql: "UPDATE wallet_stub_webhookdelivery SET attempts = attempts + 1 WHERE id = ?").execute(
            arguments: [id])
    }

    public func pruneDelivered(deliveredBefore cutoff: String, rowsMax: Int) async throws -> (deliveries: Int, attempts: Int) {
        precondition(rowsMax > 0, "a prune batch is bounded")
        return try await database.write { db in
            let ids = try Int64.fetchAll(
                db.cachedStatement(
                    sql: "SELECT id FROM wallet_stub_webhookdelivery WHERE state = 'delivered' AND delivered_at < ? LIMIT ?"),
                arguments: [cutoff, rowsMax])
            var attempts = 0
            for id in ids {
                try db.cachedStatement(sql: "DELETE FROM wallet_stub_webhookattempt WHERE delivery_id = ?").execute(arguments: [id])
                attempts += db.changesCount
                try db.cachedStatement(sql: "DELETE FROM wallet_stub_webhookdelivery WHERE id = ?").execute(arguments: [id])
            }
            return (ids.count, attempts)
        }
    }

    public func redeliver(id: Int64, nowMicros: Int64) async throws -> Bool {
        try await database.write { db in
            try db.cachedStatement(
                sql: """
                    UPDATE wallet_stub_webhookdelivery SET state = 'pending', round_attempts = 0, next_attempt_micros = ?
                    WHERE id = ?
                    """
            ).execute(arguments: [nowMicros, id])
            return db.changesCount == 1
        }
    }

    public func nextDueMicros() async throws -> Int64? {
        try await database.read { db in
            try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT MIN(next_attempt_micros) FROM wallet_stub_webhookdelivery WHERE state = 'pending'"))
        }
    }

    public func list(limit: Int, beforeID: Int64?, state: String?) async throws -> [DeliveryView] {
        precondition(limit > 0 && limit <= OutboxLimits.listLimitMax, "page size out of range")
        return try await database.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT id, message_id, provider_tx_id, state, attempts, next_attempt_micros, last_http_status, last_error,
                               created_at, delivered_at
                        FROM wallet_stub_webhookdelivery
                        WHERE id < ? AND (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ?
                        """), arguments: [beforeID ?? Int64.max, state, state, limit]
            ).map { row in
                let state: String = row[3]
                return DeliveryView(
                    id: row[0], message_id: row[1], provider_tx_id: row[2], state: state, attempts: row[4],
                    next_attempt_at: state == "pending" ? Timestamp.format(micros: row[5]) : nil,
                    last_http_status: row[6], last_error: row[7], created_at: row[8], delivered_at: row[9])
            }
        }
    }

    public func attempts(deliveryID: Int64) async throws -> [AttemptView]? {
        try await database.read { db in
            guard
                try Bool.fetchOne(
                    db.cachedStatement(sql: "SELECT 1 FROM wallet_stub_webhookdelivery WHERE id = ?"), arguments: [deliveryID]) != nil
            else {
                return nil
            }
            return try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT attempt_no, attempted_at, http_status, error, duration_micros FROM wallet_stub_webhookattempt
                        WHERE delivery_id = ? ORDER BY attempt_no
                        """), arguments: [deliveryID]
            ).map { row in
                let micros: Int64 = row[4]
                return AttemptView(
                    attempt_no: row[0], attempted_at: row[1], http_status: row[2], error: row[3],
                    duration_ms: Timestamp.millisText(micros: micros))
            }
        }
    }

    public func countByState() async throws -> [String: Int] {
        try await database.read { db in
            var out: [String: Int] = [:]
            for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT state, COUNT(*) FROM wallet_stub_webhookdelivery GROUP BY state")) {
                out[row[0]] = row[1]
            }
            return out
        }
    }
}
