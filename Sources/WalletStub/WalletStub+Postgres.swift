import Foundation
import Logging
import NIOCore
import PKRApplication
import PKRCore
import PostgresNIO
import PostgresSupport
import Synchronization

/// The wallet stub on PostgreSQL: the same behaviour as `SQLiteWalletStub`, row locks instead of one writer.
public final class PostgresWalletStub: WalletStubStore {
    private let client: PostgresClient
    private let availability: PostgresAvailability
    private let pushEnabled: Bool
    private let nowMicros: @Sendable () -> Int64
    private let onOutboxWrite: @Sendable () -> Void
    private let logger: Logger
    /// Concurrent paid payouts, written together (`pay`).
    private let payingBatch: PostgresCallBatch<PayingPayout, Bool>
    /// Batches of paid payouts written by one statement (`payTogether`), for tests.
    let paidTogether = PaidTogetherCount()

    public init(
        client: PostgresClient, availability: PostgresAvailability, pushEnabled: Bool,
        nowMicros: @escaping @Sendable () -> Int64, logger: Logger, onOutboxWrite: @escaping @Sendable () -> Void = {}
    ) {
        self.client = client
        self.availability = availability
        self.pushEnabled = pushEnabled
        self.nowMicros = nowMicros
        self.logger = logger
        self.onOutboxWrite = onOutboxWrite
        self.payingBatch = PostgresCallBatch { [paidTogether] calls in
            try await Self.pay(calls, try availability.checked(client), push: pushEnabled, together: paidTogether, logger: logger)
        }
    }

    private var pg: PostgresClient { get throws { try availability.checked(client) } }

    /// Every write of a provider transaction takes this transaction-scoped lock before its row takes an id, so ids
    /// are handed out in commit order: a listing read after a cursor never meets, later, a row whose id is at or
    /// before that cursor (a sequence alone allows it: a transaction that took id 10 may commit after one that took
    /// id 11 and was already listed). It serializes the provider's writes, as a real provider's ordered log does.
    static let listingOrderLockKey: Int64 = 0x706b_725f_7374_7562  // "pkr_stub"

    @discardableResult public func openAccount(_ accountNo: String) async throws -> Bool {
        let createdAt = Timestamp.format(micros: nowMicros())
        let rows = try await pg.query(
            """
            INSERT INTO wallet_stub_walletstubaccount (account_no, balance_paisa, created_at) VALUES (\(accountNo), 0, \(createdAt))
            ON CONFLICT (account_no) DO NOTHING RETURNING id
            """, logger: logger
        ).collect()
        return rows.count == 1
    }

    public func account(_ accountNo: String) async throws -> ProviderAccount? {
        for try await (balance, createdAt) in try await pg.query(
            "SELECT balance_paisa, created_at FROM wallet_stub_walletstubaccount WHERE account_no = \(accountNo)", logger: logger
        ).decode((Int64, String).self) {
            guard let createdAtMicros = Timestamp.parse(createdAt) else { throw ProviderError.corruptRow(accountNo) }
            return ProviderAccount(accountNo: accountNo, balancePaisa: balance, createdAtMicros: createdAtMicros)
        }
        return nil
    }

    public func credit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction {
        let now = nowMicros()
        let tx = ProviderTransaction(
            providerTxID: Identifiers.providerTxID(unixMillis: now / 1000), account: account,
            direction: .credit, amountPaisa: amountPaisa, status: .settled, occurredAtMicros: now,
            memo: memo)
        try await pg.transaction(logger: logger) { connection in
            try await self.append(connection, tx)
        }
        if pushEnabled { onOutboxWrite() }
        return tx
    }

    public func recordUnannouncedDeposits(account: String, amountsPaisa: [Int64], memo: String) async throws {
        guard !amountsPaisa.isEmpty else { return }
        precondition(amountsPaisa.allSatisfy { $0 > 0 }, "deposits are positive")
        let times = UnannouncedDeposits.occurredAtMicros(count: amountsPaisa.count, endingAt: nowMicros())
        let ids = times.map { Identifiers.providerTxID(unixMillis: $0 / 1000) }
        let occurredAt = times.map { Timestamp.format(micros: $0) }
        let logger = self.logger
        try await pg.transaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.listingOrderLockKey))", logger: logger)
            let updated = try await connection.query(
                """
                UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + \(amountsPaisa.reduce(0, +))
                WHERE account_no = \(account) RETURNING id
                """, logger: logger
            ).collect()
            guard let row = updated.first else { throw ProviderError.unknownAccount(account) }
            let accountID = try row.decode(Int64.self)
            try await connection.query(
                """
                INSERT INTO wallet_stub_walletstubtx (provider_tx_id, account_id, direction, amount_paisa, status, memo, occurred_at)
                SELECT id, \(accountID), 'credit', amount, 'settled', \(memo), occurred
                FROM unnest(\(ids)::TEXT[], \(amountsPaisa)::BIGINT[], \(occurredAt)::TEXT[]) AS t(id, amount, occurred)
                """, logger: logger)
        }
    }

    public func payout(_ request: PayoutRequest, failing: PayoutFailure?, pending: Bool) async throws -> (payout: Payout, replayed: Bool) {
        if failing != nil || pending, try await payout(column: "idempotency_key", request.idempotencyKey) == nil {
            do {
                return (try await plainPayout(request, failing: failing, pending: pending), false)
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.uniqueViolation {
                // A concurrent request with the key or the reference won: answered below, as any taken key is.
            }
            return try await takenPayout(request)
        }
        return try await payingPayout(request)
    }

    /// SQLSTATE unique_violation.
    static let uniqueViolation = "23505"

    /// A test control's failing or pending payout, in one transaction: refused with no money moved; its debit, the
    /// reversal that puts the money back, and the failed payout; or its pending debit and the pending payout. Rare, so
    /// the plain path rather than the single statement a paid payout is.
    private func plainPayout(_ request: PayoutRequest, failing: PayoutFailure?, pending: Bool) async throws -> Payout {
        let now = nowMicros()
        var payout: Payout
        var transactions: [ProviderTransaction] = []
        if let failing, failing.afterDebit {
            let debit = PayoutRecords.debit(for: request, nowMicros: now)
            payout = PayoutRecords.payout(for: request, debit: debit, nowMicros: now)
            payout.status = .failed
            payout.failureCode = failing.code.rawValue
            let reversal = PayoutRecords.reversal(for: payout, status: .failed, nowMicros: now)
            payout.reversalProviderTxID = reversal.providerTxID
            transactions = [debit, reversal]
        } else if let failing {
            payout = PayoutRecords.refused(request, code: failing.code, nowMicros: now)
        } else {
            // A pending payout's debit is pending too: its money is set aside until the payout ends.
            let debit = PayoutRecords.debit(for: request, status: .pending, nowMicros: now)
            payout = PayoutRecords.payout(for: request, debit: debit, nowMicros: now)
            payout.status = .pending
            transactions = [debit]
        }
        let at = Timestamp.format(micros: now)
        let logger = self.logger
        try await pg.transaction(logger: logger) { [transactions, payout] connection in
            guard
                try await connection.query(
                    "SELECT 1 FROM wallet_stub_walletstubaccount WHERE account_no = \(request.account)", logger: logger
                ).collect().count == 1
            else { throw ProviderError.unknownAccount(request.account) }
            for tx in transactions { try await self.append(connection, tx) }
            try await connection.query(
                """
                INSERT INTO wallet_stub_payout
                  (id, idempotency_key, request_fingerprint, account_no, amount_paisa, memo, reference, status,
                   failure_code, provider_tx_id, reversal_provider_tx_id, created_at, updated_at)
                VALUES (\(payout.id), \(request.idempotencyKey), \(request.fingerprint), \(payout.account), \(payout.amountPaisa),
                        \(payout.memo), \(payout.reference), \(payout.status.rawValue), \(payout.failureCode), \(payout.providerTxID),
                        \(payout.reversalProviderTxID), \(at), \(at))
                """, logger: logger)
        }
        if pushEnabled && !transactions.isEmpty { onOutboxWrite() }
        return payout
    }

    public func advancePayout(id: String, to status: PayoutStatus, failureCode: PayoutFailureCode?) async throws -> Payout {
        let now = nowMicros()
        let at = Timestamp.format(micros: now)
        let logger = self.logger
        let payout = try await pg.transaction(logger: logger) { connection -> Payout in
            guard var payout = try await self.payout(column: "id", id, on: connection, forUpdate: true)?.0 else {
                throw ProviderError.unknownPayout(id)
            }
            // Listing entries are numbered in commit order: a status change takes the listing's lock, as an append
            // does, and after the payout's row, as a return does.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.listingOrderLockKey))", logger: logger)
            // A return credits the money back with a reversal: `returnPayout`.
            guard status != .returned, payout.status.canMove(to: status) else {
                throw ProviderError.payoutState(id: id, status: payout.status)
            }
            if status.debitStatus != payout.status.debitStatus {
                guard let debitID = payout.providerTxID else { throw ProviderError.corruptRow(id) }
                let changed = try await connection.query(
                    """
                    UPDATE wallet_stub_walletstubtx SET status = \(status.debitStatus.rawValue)
                    WHERE provider_tx_id = \(debitID) AND status = 'pending' RETURNING 1
                    """, logger: logger
                ).collect()
                guard changed.count == 1 else { throw ProviderError.corruptRow(id) }
                if status.debitStatus == .failed {
                    try await connection.query(
                        """
                        UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + \(payout.amountPaisa)
                        WHERE account_no = \(payout.account)
                        """, logger: logger)
                }
                if self.pushEnabled {
                    // The debit as the listing now shows it, pushed again with its new status.
                    var debit: ProviderTransaction?
                    for try await (txID, account, direction, amount, txStatus, occurred, memo, reference) in try await connection.query(
                        """
                        SELECT t.provider_tx_id, a.account_no, t.direction, t.amount_paisa, t.status, t.occurred_at, t.memo, t.reference
                        FROM wallet_stub_walletstubtx t JOIN wallet_stub_walletstubaccount a ON a.id = t.account_id
                        WHERE t.provider_tx_id = \(debitID)
                        """, logger: logger
                    ).decode((String, String, String, Int64, String, String, String, String?).self) {
                        debit = try Self.decode(txID, account, direction, amount, txStatus, occurred, memo, reference)
                    }
                    guard let debit else { throw ProviderError.corruptRow(id) }
                    try await PostgresWebhookOutbox.enqueue(connection, debit, nowMicros: now, logger: logger)
                }
            }
            payout.status = status
            payout.failureCode = status == .failed ? (failureCode ?? .railRejected).rawValue : nil
            payout.updatedAtMicros = now
            try await connection.query(
                """
                UPDATE wallet_stub_payout SET status = \(status.rawValue), failure_code = \(payout.failureCode), updated_at = \(at)
                WHERE id = \(id)
                """, logger: logger)
            return payout
        }
        if pushEnabled { onOutboxWrite() }
        return payout
    }

    public func returnPayout(id: String) async throws -> Payout {
        let now = nowMicros()
        let logger = self.logger
        let payout = try await pg.transaction(logger: logger) { connection -> Payout in
            guard var payout = try await self.payout(column: "id", id, on: connection, forUpdate: true)?.0 else {
                throw ProviderError.unknownPayout(id)
            }
            guard payout.status == .paid else { throw ProviderError.payoutState(id: id, status: payout.status) }
            let reversal = PayoutRecords.reversal(for: payout, status: .returned, nowMicros: now)
            try await self.append(connection, reversal)
            payout.status = .returned
            payout.reversalProviderTxID = reversal.providerTxID
            payout.updatedAtMicros = now
            try await connection.query(
                """
                UPDATE wallet_stub_payout SET status = 'returned', reversal_provider_tx_id = \(reversal.providerTxID),
                  updated_at = \(Timestamp.format(micros: now))
                WHERE id = \(id)
                """, logger: logger)
            return payout
        }
        if pushEnabled { onOutboxWrite() }
        return payout
    }

    /// A paid payout waiting for its batch: its debit and the payout that answers it, made before the write.
    struct PayingPayout: Sendable {
        var request: PayoutRequest
        var debit: ProviderTransaction
        var payout: Payout
        var nowMicros: Int64
    }

    private func payingPayout(_ request: PayoutRequest) async throws -> (payout: Payout, replayed: Bool) {
        let now = nowMicros()
        let tx = PayoutRecords.debit(for: request, nowMicros: now)
        let candidate = PayoutRecords.payout(for: request, debit: tx, nowMicros: now)
        let paid: Bool
        do {
            paid = try await payingBatch.call(PayingPayout(request: request, debit: tx, payout: candidate, nowMicros: now))
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == Self.checkViolation {
            // Another payout drained the account between this statement's snapshot and its debit.
            throw ProviderError.insufficientFunds(account: request.account)
        }
        if paid {
            if pushEnabled { onOutboxWrite() }
            return (candidate, false)
        }
        return try await takenPayout(request)
    }

    /// Paid payouts in one transaction; one alone is its own. Each statement takes the listing's lock, which the
    /// transaction then holds to its commit: concurrent payouts share that commit instead of queueing for the lock one
    /// commit at a time. The batch is one statement when every account covers its payouts together; otherwise each
    /// payout is a statement of its own, in order, as it would be alone.
    static func pay(
        _ calls: [PayingPayout], _ client: PostgresClient, push: Bool, together: PaidTogetherCount, logger: Logger
    ) async throws -> [Bool] {
        guard calls.count > 1 else { return [try await client.withConnection { try await pay(calls[0], $0, push: push, logger: logger) }] }
        return try await client.transaction(logger: logger) { connection in
            if let paid = try await payTogether(calls, connection, push: push, logger: logger) {
                together.batches.add(1, ordering: .relaxed)
                return paid
            }
            var paid: [Bool] = []
            for call in calls { paid.append(try await pay(call, connection, push: push, logger: logger)) }
            return paid
        }
    }

    /// Writes every payout of a batch in one statement, as `pay` writes one: true for each written, false for one whose
    /// key or reference was taken. Nil, having written nothing, when an account is unknown or cannot cover the
    /// batch's payouts from it together: one by one, some of them may still be paid.
    static func payTogether(
        _ calls: [PayingPayout], _ connection: PostgresConnection, push: Bool, logger: Logger
    ) async throws -> [Bool]? {
        let at = calls.map { Timestamp.format(micros: $0.nowMicros) }
        var written: Set<String>?
        for try await (fits, payoutID) in try await connection.query(
            """
            WITH ordered AS (
              SELECT pg_advisory_xact_lock(\(Self.listingOrderLockKey))
            ), c AS (
              SELECT * FROM unnest(
                \(calls.map(\.payout.id))::TEXT[], \(calls.map(\.request.idempotencyKey))::TEXT[],
                \(calls.map(\.request.fingerprint))::TEXT[], \(calls.map(\.request.account))::TEXT[],
                \(calls.map(\.request.amountPaisa))::BIGINT[], \(calls.map(\.request.memo))::TEXT[],
                \(calls.map(\.request.reference))::TEXT[], \(calls.map(\.debit.providerTxID))::TEXT[], \(at)::TEXT[],
                \(calls.map { ByteBuffer(bytes: WebhookEvent.encode($0.debit)) })::BYTEA[],
                \(calls.map { _ in Identifiers.webhookMessageID() })::TEXT[], \(calls.map(\.nowMicros))::BIGINT[]
              ) WITH ORDINALITY AS c(payout_id, idempotency_key, fingerprint, account_no, amount_paisa, memo, reference,
                                     provider_tx_id, at, payload, message_id, now_micros, n)
            ), fits AS (
              SELECT count(*) = (SELECT count(DISTINCT account_no) FROM c) AND bool_and(a.balance_paisa >= t.total) AS ok
              FROM (SELECT account_no, sum(amount_paisa) AS total FROM c GROUP BY account_no) t
              JOIN wallet_stub_walletstubaccount a ON a.account_no = t.account_no
            ), made AS (
              INSERT INTO wallet_stub_payout
                (id, idempotency_key, request_fingerprint, account_no, amount_paisa, memo, reference, status,
                 failure_code, provider_tx_id, created_at, updated_at)
              SELECT c.payout_id, c.idempotency_key, c.fingerprint, c.account_no, c.amount_paisa, c.memo, c.reference, 'paid',
                     NULL, c.provider_tx_id, c.at, c.at
              FROM ordered, fits, c WHERE fits.ok ORDER BY c.n
              ON CONFLICT DO NOTHING RETURNING id
            ), claimed AS (
              INSERT INTO wallet_stub_walletstubtx
                (provider_tx_id, account_id, direction, amount_paisa, status, memo, reference, occurred_at)
              SELECT c.provider_tx_id, a.id, 'debit', c.amount_paisa, 'settled', c.memo, c.reference, c.at
              FROM made JOIN c ON c.payout_id = made.id JOIN wallet_stub_walletstubaccount a ON a.account_no = c.account_no
              ORDER BY c.n
              RETURNING account_id, amount_paisa, provider_tx_id
            ), debited AS (
              UPDATE wallet_stub_walletstubaccount a SET balance_paisa = a.balance_paisa - d.total
              FROM (SELECT account_id, sum(amount_paisa) AS total FROM claimed GROUP BY account_id) d
              WHERE a.id = d.account_id
            ), queued AS (
              INSERT INTO wallet_stub_webhookdelivery
                (message_id, provider_tx_id, payload, state, attempts, round_attempts, next_attempt_micros, created_at)
              SELECT c.message_id, c.provider_tx_id, c.payload, 'pending', 0, 0, c.now_micros, c.at
              FROM claimed JOIN c ON c.provider_tx_id = claimed.provider_tx_id WHERE \(push) ORDER BY c.n
            )
            SELECT fits.ok, made.id FROM fits LEFT JOIN made ON TRUE
            """, logger: logger
        ).decode((Bool?, String?).self) {
            guard fits == true else { return nil }
            written = written ?? []
            if let payoutID { written?.insert(payoutID) }
        }
        guard let written else { return nil }
        return calls.map { written.contains($0.payout.id) }
    }

    /// Writes a paid payout in one statement: true if it was written, false if its key or reference was taken or the
    /// funds were short. The account row is locked by the debit and released at the commit, not held across round
    /// trips of this process. The payout's unique key and reference make it happen once: a concurrent payout with
    /// either waits on the index until this one ends, then writes nothing. The payout row is written before its debit,
    /// which the foreign key checks at the end of the statement.
    static func pay(_ call: PayingPayout, _ connection: PostgresConnection, push: Bool, logger: Logger) async throws -> Bool {
        let payload = ByteBuffer(bytes: WebhookEvent.encode(call.debit))
        let (payout, now) = (call.payout, call.nowMicros)
        let at = Timestamp.format(micros: now)
        for try await count in try await connection.query(
            """
            WITH ordered AS (
              SELECT pg_advisory_xact_lock(\(Self.listingOrderLockKey))
            ), made AS (
              INSERT INTO wallet_stub_payout
                (id, idempotency_key, request_fingerprint, account_no, amount_paisa, memo, reference, status,
                 failure_code, provider_tx_id, created_at, updated_at)
              SELECT \(payout.id), \(call.request.idempotencyKey), \(call.request.fingerprint), a.account_no, \(call.request.amountPaisa),
                     \(call.request.memo), \(call.request.reference), 'paid', NULL, \(call.debit.providerTxID), \(at), \(at)
              FROM ordered, wallet_stub_walletstubaccount a
              WHERE a.account_no = \(call.request.account) AND a.balance_paisa >= \(call.request.amountPaisa)
              ON CONFLICT DO NOTHING RETURNING provider_tx_id
            ), claimed AS (
              INSERT INTO wallet_stub_walletstubtx
                (provider_tx_id, account_id, direction, amount_paisa, status, memo, reference, occurred_at)
              SELECT made.provider_tx_id, a.id, 'debit', \(call.request.amountPaisa), 'settled', \(call.request.memo),
                     \(call.request.reference), \(at)
              FROM made, wallet_stub_walletstubaccount a
              WHERE a.account_no = \(call.request.account)
              RETURNING account_id, provider_tx_id
            ), debited AS (
              UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa - \(call.request.amountPaisa)
              WHERE id IN (SELECT account_id FROM claimed) RETURNING id
            ), queued AS (
              INSERT INTO wallet_stub_webhookdelivery
                (message_id, provider_tx_id, payload, state, attempts, round_attempts, next_attempt_micros, created_at)
              SELECT \(Identifiers.webhookMessageID()), provider_tx_id, \(payload), 'pending', 0, 0, \(now), \(at)
              FROM claimed WHERE \(push)
            )
            SELECT count(*) FROM debited
            """, logger: logger
        ).decode(Int64.self) {
            return count == 1
        }
        return false
    }

    /// What a payout that wrote nothing answers: the key's payout, or why there is none.
    private func takenPayout(_ request: PayoutRequest) async throws -> (payout: Payout, replayed: Bool) {
        // The key or the reference is taken, the funds are short, or the account is unknown.
        if let (existing, fingerprint) = try await payout(column: "idempotency_key", request.idempotencyKey) {
            guard fingerprint == request.fingerprint else { throw ProviderError.idempotencyKeyReused(request.idempotencyKey) }
            return (existing, true)
        }
        if try await payout(column: "reference", request.reference) != nil {
            throw ProviderError.referenceConflict(request.reference)
        }
        guard try await balancePaisa(account: request.account) != nil else { throw ProviderError.unknownAccount(request.account) }
        throw ProviderError.insufficientFunds(account: request.account)
    }

    public func payout(id: String) async throws -> Payout? {
        try await payout(column: "id", id)?.0
    }

    public func payout(reference: String) async throws -> Payout? {
        try await payout(column: "reference", reference)?.0
    }

    /// A payout and the fingerprint of the request that made it, by one of its unique columns.
    private func payout(
        column: String, _ value: String, on connection: PostgresConnection? = nil, forUpdate: Bool = false
    ) async throws -> (Payout, String)? {
        precondition(["id", "idempotency_key", "reference"].contains(column), "payouts are found by a unique column")
        var query = PostgresQuery(
            unsafeSQL: """
                SELECT id, status, account_no, amount_paisa, memo, reference, failure_code, provider_tx_id, created_at,
                       updated_at, request_fingerprint, reversal_provider_tx_id
                FROM wallet_stub_payout WHERE \(column) = $1\(forUpdate ? " FOR UPDATE" : "")
                """)
        query.binds.append(value)
        let rows: PostgresRowSequence
        if let connection {
            rows = try await connection.query(query, logger: logger)
        } else {
            rows = try await pg.query(query, logger: logger)
        }
        for try await (id, status, account, amount, memo, reference, failureCode, providerTxID, createdAt, updatedAt, fingerprint, reversal)
            in rows.decode((String, String, String, Int64, String, String, String?, String?, String, String, String, String?).self)
        {
            guard let status = PayoutStatus(rawValue: status), amount > 0, let created = Timestamp.parse(createdAt),
                let updated = Timestamp.parse(updatedAt)
            else { throw ProviderError.corruptRow(id) }
            let payout = Payout(
                id: id, status: status, account: account, amountPaisa: amount, memo: memo, reference: reference,
                failureCode: failureCode, providerTxID: providerTxID, reversalProviderTxID: reversal, createdAtMicros: created,
                updatedAtMicros: updated)
            return (payout, fingerprint)
        }
        return nil
    }

    /// SQLSTATE check_violation: here, a balance below zero.
    static let checkViolation = "23514"

    public func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage {
        precondition(limit > 0 && limit <= ProviderLimits.pageSizeMax + 1, "page size out of range")
        let since = Timestamp.format(micros: sinceMicros)
        let rows = try await pg.query(
            """
            SELECT e.id, t.provider_tx_id, a.account_no, t.direction, t.amount_paisa, e.status, t.occurred_at, t.memo, t.reference
            FROM wallet_stub_txentry e JOIN wallet_stub_walletstubtx t ON t.id = e.tx_id
              JOIN wallet_stub_walletstubaccount a ON a.id = t.account_id
            WHERE e.id > \(cursor) AND t.occurred_at >= \(since) ORDER BY e.id LIMIT \(limit)
            """, logger: logger)
        var next = cursor
        var out: [ProviderTransaction] = []
        var cursors: [Int64] = []
        for try await (id, txID, account, direction, amount, status, occurred, memo, reference)
            in rows.decode((Int64, String, String, String, Int64, String, String, String, String?).self)
        {
            next = id
            cursors.append(id)
            out.append(try Self.decode(txID, account, direction, amount, status, occurred, memo, reference))
        }
        return ProviderPage(transactions: out, nextCursor: next, cursors: cursors)
    }

    public func balancePaisa(account: String) async throws -> Int64? {
        for try await balance in try await pg.query(
            "SELECT balance_paisa FROM wallet_stub_walletstubaccount WHERE account_no = \(account)", logger: logger
        ).decode(Int64.self) {
            return balance
        }
        return nil
    }

    public func reservePaisa() async throws -> Int64 {
        for try await total in try await pg.query(
            "SELECT COALESCE(SUM(balance_paisa), 0)::BIGINT FROM wallet_stub_walletstubaccount", logger: logger
        ).decode(Int64.self) {
            return total
        }
        return 0
    }

    /// Writes one transaction (and its outbox row) inside the caller's database transaction.
    func append(_ connection: PostgresConnection, _ tx: ProviderTransaction) async throws {
        try await connection.query("SELECT pg_advisory_xact_lock(\(Self.listingOrderLockKey))", logger: logger)
        let delta = tx.direction == .credit ? tx.amountPaisa : -tx.amountPaisa
        let updated = try await connection.query(
            """
            UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + \(delta)
            WHERE account_no = \(tx.account) AND balance_paisa + \(delta) >= 0 RETURNING id
            """, logger: logger
        ).collect()
        guard let row = updated.first else {
            let exists = try await connection.query(
                "SELECT 1 FROM wallet_stub_walletstubaccount WHERE account_no = \(tx.account)",
                logger: logger
            ).collect()
            throw exists.isEmpty ? ProviderError.unknownAccount(tx.account) : ProviderError.insufficientFunds(account: tx.account)
        }
        let accountID = try row.decode(Int64.self)
        try await connection.query(
            """
            INSERT INTO wallet_stub_walletstubtx
              (provider_tx_id, account_id, direction, amount_paisa, status, memo, reference, occurred_at)
            VALUES (\(tx.providerTxID), \(accountID), \(tx.direction.rawValue), \(tx.amountPaisa), \(tx.status.rawValue),
                    \(tx.memo), \(tx.reference), \(Timestamp.format(micros: tx.occurredAtMicros)))
            """, logger: logger)
        if pushEnabled {
            try await PostgresWebhookOutbox.enqueue(connection, tx, nowMicros: tx.occurredAtMicros, logger: logger)
        }
    }

    static func decode(
        _ txID: String, _ account: String, _ direction: String, _ amount: Int64, _ status: String,
        _ occurred: String, _ memo: String, _ reference: String?
    ) throws -> ProviderTransaction {
        guard let direction = TransactionDirection(rawValue: direction), let status = TransactionStatus(rawValue: status),
            let occurredAtMicros = Timestamp.parse(occurred), amount > 0
        else {
            throw ProviderError.corruptRow(txID)
        }
        return ProviderTransaction(
            providerTxID: txID, account: account, direction: direction, amountPaisa: amount,
            status: status, occurredAtMicros: occurredAtMicros, memo: memo, reference: reference)
    }
}

/// The outbox on PostgreSQL. `FOR UPDATE SKIP LOCKED` lets dispatchers of several instances share it.
public final class PostgresWebhookOutbox: OutboxStore {
    private let client: PostgresClient
    private let availability: PostgresAvailability
    private let logger: Logger

    public init(client: PostgresClient, availability: PostgresAvailability, logger: Logger) {
        self.client = client
        self.availability = availability
        self.logger = logger
    }

    private var pg: PostgresClient { get throws { try availability.checked(client) } }

    static func enqueue(_ connection: PostgresConnection, _ tx: ProviderTransaction, nowMicros: Int64, logger: Logger) async throws {
        let payload = ByteBuffer(bytes: WebhookEvent.encode(tx))
        try await connection.query(
            """
            INSERT INTO wallet_stub_webhookdelivery
              (message_id, provider_tx_id, payload, state, attempts, round_attempts, next_attempt_micros, created_at)
            VALUES (\(Identifiers.webhookMessageID()), \(tx.providerTxID), \(payload), 'pending', 0, 0, \(nowMicros),
                    \(Timestamp.format(micros: nowMicros)))
            """, logger: logger)
    }

    public func claimDue(nowMicros: Int64, limit: Int) async throws -> [OutboxDelivery] {
        let leaseUntil = nowMicros + OutboxLimits.leaseMicros
        return try await pg.transaction(logger: logger) { connection in
            let rows = try await connection.query(
                """
                UPDATE wallet_stub_webhookdelivery SET next_attempt_micros = \(leaseUntil)
                WHERE id IN (SELECT id FROM wallet_stub_webhookdelivery
                             WHERE state = 'pending' AND next_attempt_micros <= \(nowMicros)
                             ORDER BY next_attempt_micros, id LIMIT \(limit) FOR UPDATE SKIP LOCKED)
                RETURNING id, message_id, provider_tx_id, payload, round_attempts
                """, logger: self.logger)
            var out: [OutboxDelivery] = []
            for try await (id, messageID, txID, payload, round) in rows.decode((Int64, String, String, ByteBuffer, Int).self) {
                out.append(
                    OutboxDelivery(
                        id: id, messageID: messageID, providerTxID: txID, payload: Array(buffer: payload),
                        roundAttempts: round))
            }
            return out
        }
    }

    /// Records a round's attempts in one statement: a round trip per attempt and row kept the dispatcher's next
    /// round waiting. Each column is one array, so the text never changes.
    public func recordAttempts(_ attempts: [OutboxAttempt]) async throws {
        guard !attempts.isEmpty else { return }
        precondition(Set(attempts.map(\.delivery.id)).count == attempts.count, "a round attempts each delivery once")
        var ids: [Int64] = [], statuses: [Int32] = [], errors: [String] = [], hasErrors: [Bool] = []
        var durations: [Int64] = [], finishedAt: [String] = [], outcomes: [String] = [], retryAt: [Int64] = []
        for attempt in attempts {
            precondition(attempt.httpStatus.map { $0 >= 0 } ?? true, "an HTTP status is not negative")
            ids.append(attempt.delivery.id)
            statuses.append(Int32(attempt.httpStatus ?? -1))
            errors.append(attempt.error ?? "")
            hasErrors.append(attempt.error != nil)
            durations.append(attempt.durationMicros)
            finishedAt.append(Timestamp.format(micros: attempt.finishedAtMicros))
            let (outcome, retryAtMicros): (String, Int64) =
                switch attempt.outcome {
                case .delivered: ("delivered", 0)
                case .retry(let atMicros): ("retry", atMicros)
                case .dead: ("dead", 0)
                }
            outcomes.append(outcome)
            retryAt.append(retryAtMicros)
        }
        // The attempt rows read each delivery's count before the update below adds to it (one snapshot). Every attempt
        // counts, so the next is numbered after it; a retry or a death only moves a delivery still pending, as an
        // operator may have redelivered or parked it meanwhile.
        try await pg.query(
            """
            WITH a AS (
              SELECT * FROM unnest(\(ids)::BIGINT[], \(statuses)::INTEGER[], \(errors)::TEXT[], \(hasErrors)::BOOLEAN[],
                                   \(durations)::BIGINT[], \(finishedAt)::TEXT[], \(outcomes)::TEXT[], \(retryAt)::BIGINT[])
                AS t(id, status, error, has_error, duration_micros, finished_at, outcome, retry_at)
            ), j AS (
              SELECT a.*, d.attempts, a.outcome = 'delivered' OR d.state = 'pending' AS moves
              FROM a JOIN wallet_stub_webhookdelivery d ON d.id = a.id
            ), logged AS (
              INSERT INTO wallet_stub_webhookattempt (delivery_id, attempt_no, attempted_at, http_status, error, duration_micros)
              SELECT j.id, j.attempts + 1, j.finished_at, NULLIF(j.status, -1), CASE WHEN j.has_error THEN j.error END,
                     j.duration_micros
              FROM j
            )
            UPDATE wallet_stub_webhookdelivery d SET
              attempts = d.attempts + 1,
              state = CASE WHEN j.moves AND j.outcome <> 'retry' THEN j.outcome ELSE d.state END,
              round_attempts = CASE WHEN j.moves THEN d.round_attempts + 1 ELSE d.round_attempts END,
              next_attempt_micros = CASE WHEN j.moves AND j.outcome = 'retry' THEN j.retry_at ELSE d.next_attempt_micros END,
              last_http_status = CASE WHEN j.moves THEN NULLIF(j.status, -1) ELSE d.last_http_status END,
              last_error = CASE WHEN NOT j.moves THEN d.last_error
                                WHEN j.outcome = 'delivered' OR NOT j.has_error THEN NULL ELSE j.error END,
              delivered_at = CASE WHEN j.moves AND j.outcome = 'delivered' THEN j.finished_at ELSE d.delivered_at END
            FROM j WHERE d.id = j.id
            """, logger: logger)
    }

    public func pruneDelivered(deliveredBefore cutoff: String, rowsMax: Int) async throws -> (deliveries: Int, attempts: Int) {
        precondition(rowsMax > 0, "a prune batch is bounded")
        let rows = try await pg.query(
            """
            WITH ids AS (
              SELECT id FROM wallet_stub_webhookdelivery WHERE state = 'delivered' AND delivered_at < \(cutoff) LIMIT \(rowsMax)),
            attempts AS (DELETE FROM wallet_stub_webhookattempt WHERE delivery_id IN (SELECT id FROM ids) RETURNING 1),
            deliveries AS (DELETE FROM wallet_stub_webhookdelivery WHERE id IN (SELECT id FROM ids) RETURNING 1)
            SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM attempts)
            """, logger: logger)
        for try await (deliveries, attempts) in rows.decode((Int64, Int64).self) { return (Int(deliveries), Int(attempts)) }
        return (0, 0)
    }

    public func redeliver(id: Int64, nowMicros: Int64) async throws -> Bool {
        let rows = try await pg.query(
            """
            UPDATE wallet_stub_webhookdelivery SET state = 'pending', round_attempts = 0, next_attempt_micros = \(nowMicros)
            WHERE id = \(id) RETURNING 1
            """, logger: logger
        ).collect()
        return rows.count == 1
    }

    public func nextDueMicros() async throws -> Int64? {
        for try await next in try await pg.query(
            "SELECT MIN(next_attempt_micros) FROM wallet_stub_webhookdelivery WHERE state = 'pending'", logger: logger
        )
        .decode(Int64?.self) {
            return next
        }
        return nil
    }

    public func list(limit: Int, beforeID: Int64?, state: String?) async throws -> [DeliveryView] {
        precondition(limit > 0 && limit <= OutboxLimits.listLimitMax, "page size out of range")
        let rows = try await pg.query(
            """
            SELECT id, message_id, provider_tx_id, state, attempts, next_attempt_micros, last_http_status, last_error,
                   created_at, delivered_at
            FROM wallet_stub_webhookdelivery
            WHERE id < \(beforeID ?? Int64.max) AND (\(state)::TEXT IS NULL OR state = \(state)) ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var out: [DeliveryView] = []
        for try await (id, messageID, txID, state, attempts, next, status, error, created, delivered)
            in rows.decode((Int64, String, String, String, Int, Int64, Int?, String?, String, String?).self)
        {
            out.append(
                DeliveryView(
                    id: id, message_id: messageID, provider_tx_id: txID, state: state, attempts: attempts,
                    next_attempt_at: state == "pending" ? Timestamp.format(micros: next) : nil,
                    last_http_status: status, last_error: error, created_at: created, delivered_at: delivered))
        }
        return out
    }

    public func attempts(deliveryID: Int64) async throws -> [AttemptView]? {
        let exists = try await pg.query("SELECT 1 FROM wallet_stub_webhookdelivery WHERE id = \(deliveryID)", logger: logger).collect()
        guard !exists.isEmpty else { return nil }
        let rows = try await pg.query(
            """
            SELECT attempt_no, attempted_at, http_status, error, duration_micros FROM wallet_stub_webhookattempt
            WHERE delivery_id = \(deliveryID) ORDER BY attempt_no
            """, logger: logger)
        var out: [AttemptView] = []
        for try await (number, at, status, error, micros) in rows.decode((Int, String, Int?, String?, Int64).self) {
            out.append(
                AttemptView(
                    attempt_no: number, attempted_at: at, http_status: status, error: error,
                    duration_ms: Timestamp.millisText(micros: micros)))
        }
        return out
    }

    public func countByState() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for try await (state, count) in try await pg.query(
            "SELECT state, COUNT(*)::BIGINT FROM wallet_stub_webhookdelivery GROUP BY state", logger: logger
        ).decode((String, Int).self) {
            out[state] = count
        }
        return out
    }
}

/// How many batches of paid payouts one statement wrote.
final class PaidTogetherCount: Sendable {
    let batches = Atomic<Int>(0)
}
