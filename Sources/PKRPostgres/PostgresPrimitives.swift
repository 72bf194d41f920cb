import ChainStub
import Logging
import NIOCore
import PKRApplication
import PKRCore
import PostgresNIO
import PostgresSupport

/// The settlement primitives on PostgreSQL, inside the caller's transaction. They decide nothing: `Settlement`
/// does. Several instances may share the database, so reads the flow acts on lock their rows until the commit, and
/// the flows take the contended rows in one order (token balance, chain balance, ledger head).
enum PostgresPrimitives {
    static func execute(_ primitive: Primitive, _ connection: PostgresConnection, logger: Logger) async throws -> PrimitiveAnswer {
        switch primitive {
        case .findCustomer(let account):
            return .customer(try await customer(connection, walletAccount: account, logger: logger))
        case .findCustomerByID(let id):
            return .customer(try await customer(connection, id: id, logger: logger))
        case .recordTransaction(let draft):
            return .rowID(try await recordTransaction(connection, draft, logger: logger))
        case .findTransaction(let providerTxID):
            let rows = try await connection.query(
                """
                SELECT \(unescaped: externalColumns) FROM core_externaltransaction e WHERE e.provider_tx_id = \(providerTxID)
                FOR UPDATE OF e
                """, logger: logger
            ).collect()
            return .transaction(try rows.first.map(decodeExternal))
        case .markSeen(let rowID, let path):
            let column = path == .webhook ? "seen_via_webhook" : "seen_via_poll"
            try await connection.query(
                "UPDATE core_externaltransaction SET \(unescaped: column) = TRUE WHERE id = \(rowID)",
                logger: logger)
        case .setStatus(let rowID, let status):
            try await connection.query(
                "UPDATE core_externaltransaction SET status = \(status.rawValue) WHERE id = \(rowID)",
                logger: logger)
        case .flag(let rowID, let flag):
            try await connection.query(
                "UPDATE core_externaltransaction SET flag = \(flag.rawValue) WHERE id = \(rowID)",
                logger: logger)
        case .clearHold(let rowID):
            try await connection.query(
                """
                UPDATE core_externaltransaction SET flag = NULL WHERE id = \(rowID) AND flag = 'above_mint_limit'
                """, logger: logger)
        case .bindCustomer(let rowID, let customerID):
            try await connection.query(
                "UPDATE core_externaltransaction SET user_id = \(customerID) WHERE id = \(rowID) AND user_id IS NULL", logger: logger)
        case .findUnmatchedBurn(let reference, let providerTxID, let amountUnits):
            let find = FindUnmatchedBurn(reference: reference ?? "", providerTxID: providerTxID, amountUnits: amountUnits)
            for try await row in try await connection.execute(find, logger: logger) { return .jobID(try row.decode(String.self)) }
            return .jobID(nil)
        case .markPayoutSubmitted(let jobID, let providerTxID):
            try await connection.query(
                """
                UPDATE core_chainjob SET payout_state = 'submitted', payout_provider_tx_id = \(providerTxID)
                WHERE id = \(jobID) AND job_type = 'burn' AND payout_state = 'requested'
                """, logger: logger)
        case .confirmPayout(let rowID, let jobID, let providerTxID):
            for try await _ in try await connection.execute(MatchDebit(jobID: jobID, rowID: rowID), logger: logger) {}
            for try await _ in try await connection.execute(ConfirmPayout(providerTxID: providerTxID, jobID: jobID), logger: logger) {}
        case .moveTokenBalance(let customerID, let deltaUnits):
            precondition(deltaUnits != 0, "a balance move has an amount")
            let moved = try await connection.query(
                """
                UPDATE core_tokenbalance SET balance_units = balance_units + \(deltaUnits)
                WHERE user_id = \(customerID) AND balance_units + \(deltaUnits) >= 0 RETURNING 1
                """, logger: logger
            ).collect()
            return .moved(moved.count == 1)
        case .tokenBalance(let customerID):
            let rows = try await connection.query(
                "SELECT balance_units FROM core_tokenbalance WHERE user_id = \(customerID)",
                logger: logger
            ).collect()
            return .units(try rows.first?.decode(Int64.self) ?? 0)
        case .chainTransfer(let transfer):
            let txHash = try await PostgresChainStub.recordReceipt(
                connection, op: transfer.op, address: transfer.address,
                amountUnits: transfer.amountUnits, reference: transfer.reference,
                createdAt: transfer.createdAt, nowMicros: transfer.nowMicros,
                logger: logger)
            try await PostgresChainStub.moveBalance(
                connection, op: transfer.op, address: transfer.address,
                amountUnits: transfer.amountUnits, logger: logger)
            return .txHash(txHash)
        case .insertJob(let row):
            let job = row.job
            try await connection.query(
                """
                INSERT INTO core_chainjob
                  (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, idempotency_key, memo, payout_state,
                   created_at)
                VALUES (\(job.id), \(job.jobType.rawValue), \(row.customerID), \(job.amountUnits), 'confirmed', \(job.txHash),
                        \(row.creditProviderTxID), \(row.idempotencyKey), \(row.memo), \(row.payoutState), \(job.createdAt))
                """, logger: logger)
        case .findJob(let id):
            let rows = try await connection.query(
                """
                SELECT id, job_type, amount_units, tx_hash, created_at FROM core_chainjob WHERE id = \(id)
                """, logger: logger)
            for try await (id, type, amount, hash, created) in rows.decode((String, String, Int64, String, String).self) {
                guard let type = ChainJobType(rawValue: type) else {
                    throw GatewayError.storeUnavailable("core_chainjob \(id) is corrupt")
                }
                return .job(ChainJob(id: id, jobType: type, amountUnits: amount, txHash: hash, createdAt: created))
            }
            return .job(nil)
        case .appendLedger(let append):
            // The head row's lock orders appends across all instances.
            var head: LedgerHead?
            for try await (lastID, lastHash) in try await connection.query(
                "SELECT last_id, last_hash FROM core_ledgerhead WHERE singleton = 1 FOR UPDATE", logger: logger
            ).decode((Int64, String).self) {
                head = LedgerHead(lastID: lastID, lastHash: lastHash)
            }
            guard let head else { throw GatewayError.storeUnavailable("ledger head row missing") }
            try await PostgresStore.appendLedger(connection, after: head, [append], logger: logger)
        case .openHold(let jobID, let customerID, let amountUnits, let createdAt):
            try await connection.query(
                """
                INSERT INTO core_redemptionhold (job_id, user_id, amount_units, state, created_at)
                VALUES (\(jobID), \(customerID), \(amountUnits), 'held', \(createdAt))
                """, logger: logger)
        case .findHold(let jobID):
            for try await row in try await connection.execute(FindHoldForUpdate(jobID: jobID), logger: logger) {
                let (customerID, address, amount, state) = try row.decode((String, String, Int64, String).self)
                guard let state = RedemptionHold.State(rawValue: state), amount > 0, amount % Money.unitsPerPaisa == 0 else {
                    throw GatewayError.storeUnavailable("core_redemptionhold \(jobID) is corrupt")
                }
                return .hold(
                    RedemptionHold(jobID: jobID, customerID: customerID, chainAddress: address, amountUnits: amount, state: state))
            }
            return .hold(nil)
        case .closeHold(let jobID, let state, let txHash, let closedAt):
            precondition(state != .held, "a hold ends burnt or released")
            let closed = try await connection.query(
                """
                UPDATE core_redemptionhold SET state = \(state.rawValue), closing_tx_hash = \(txHash), closed_at = \(closedAt)
                WHERE job_id = \(jobID) AND state = 'held' RETURNING 1
                """, logger: logger
            ).collect()
            guard closed.count == 1 else { throw GatewayError.storeUnavailable("the hold of \(jobID) had already ended") }
        case .claimIdempotencyKey(let claim):
            return .claim(try await claimKey(connection, claim, logger: logger))
        case .storeAnswer(let claim, let receipt):
            try await connection.query(
                """
                UPDATE core_idempotencyrecord SET response_status = 201, response_body = \(receipt.storedForm)
                WHERE user_id = \(claim.customerID) AND endpoint = \(claim.endpoint) AND idempotency_key = \(claim.key)
                """, logger: logger)
        case .logInbound(let row):
            return .rowID(try await insertInbound(connection, row, logger: logger))
        case .quarantine(let row):
            try await connection.query(
                """
                INSERT INTO core_webhookquarantine (inbound_id, provider_tx_id, arrived_via, differing_fields, body, created_at)
                VALUES (\(row.inboundID), \(row.providerTxID), \(row.via.rawValue), \(row.differingFields.joined(separator: ",")),
                        \(ByteBuffer(bytes: row.body)), \(row.createdAt))
                """, logger: logger)
        }
        return .none
    }

    /// Another instance may insert the same id at this moment: the loser of the race waits on the unique index,
    /// inserts nothing, and then finds the winner's row as the recorded one.
    private static func recordTransaction(
        _ connection: PostgresConnection, _ draft: TransactionDraft,
        logger: Logger
    ) async throws -> Int64? {
        for try await row in try await connection.execute(RecordTransaction(draft: draft), logger: logger) {
            return try row.decode(Int64.self)
        }
        return nil
    }

    /// Claims the key by inserting its row first. A concurrent request with the same key (on any instance) waits
    /// on the primary key until this transaction ends, then finds the stored answer.
    private static func claimKey(
        _ connection: PostgresConnection, _ claim: IdempotencyClaim,
        logger: Logger
    ) async throws -> IdempotencyClaim.Result {
        let claimed = try await connection.query(
            """
            INSERT INTO core_idempotencyrecord
              (user_id, endpoint, idempotency_key, request_fingerprint, response_status, response_body, created_at)
            VALUES (\(claim.customerID), \(claim.endpoint), \(claim.key), \(claim.fingerprint), 0, '', \(claim.createdAt))
            ON CONFLICT DO NOTHING RETURNING 1
            """, logger: logger
        ).collect()
        if !claimed.isEmpty { return .claimed }
        let rows = try await connection.query(
            """
            SELECT request_fingerprint, response_status, response_body FROM core_idempotencyrecord
            WHERE user_id = \(claim.customerID) AND endpoint = \(claim.endpoint) AND idempotency_key = \(claim.key)
            """, logger: logger)
        for try await (fingerprint, status, body) in rows.decode((String, Int, String).self) {
            guard status == 201 else { return .taken(fingerprint: fingerprint, answer: nil) }
            guard let receipt = BurnReceipt(storedForm: body) else {
                throw GatewayError.storeUnavailable("core_idempotencyrecord holds an answer this gateway did not write")
            }
            return .taken(fingerprint: fingerprint, answer: receipt)
        }
        // The holder rolled back after this insert gave up on it: still being decided.
        return .taken(fingerprint: claim.fingerprint, answer: nil)
    }

    static func insertInbound(_ connection: PostgresConnection, _ row: InboundRow, logger: Logger) async throws -> Int64 {
        for try await inserted in try await connection.execute(InsertInbound(row: row), logger: logger) {
            return try inserted.decode(Int64.self)
        }
        throw GatewayError.storeUnavailable("core_webhookinbound answered no id")
    }

    // MARK: - Customers and records

    static func customer(
        _ connection: PostgresConnection, walletAccount: String? = nil, id: String? = nil, email: String? = nil,
        logger: Logger
    ) async throws -> Customer? {
        if let walletAccount, id == nil, email == nil {
            for try await row in try await connection.execute(CustomerByAccount(walletAccount: walletAccount), logger: logger) {
                let (id, email, name, account, address) = try row.decode((String, String, String, String, String).self)
                return Customer(id: id, email: email, displayName: name, walletAccount: account, chainAddress: address)
            }
            return nil
        }
        let rows = try await connection.query(
            """
            SELECT id, email, display_name, wallet_account, chain_address FROM core_user
            WHERE wallet_account = \(walletAccount) OR id = \(id) OR email = \(email)
            """, logger: logger)
        for try await (id, email, name, account, address) in rows.decode((String, String, String, String, String).self) {
            return Customer(id: id, email: email, displayName: name, walletAccount: account, chainAddress: address)
        }
        return nil
    }

    /// A credit's mint job is read as the first of its jobs: were the unique rule ever gone and a credit minted
    /// twice, a listing (the reconciliation's among them) must still show it, and the reconciliation name it,
    /// rather than fail on a scalar subquery returning two rows.
    static let externalColumns = """
        e.id, e.provider_tx_id, e.account, e.direction, e.amount_paisa, e.status, e.occurred_at_micros, e.memo, e.reference,
        e.recorded_at, e.first_seen_via, e.seen_via_webhook, e.seen_via_poll, e.recorded_at_micros, e.matched_job_id, e.flag,
        (SELECT min(j.id) FROM core_chainjob j WHERE j.external_tx_id = e.provider_tx_id), e.user_id
        """

    static func decodeExternal(_ row: PostgresRow) throws -> ExternalTransactionRecord {
        let (
            id, txID, account, direction, amount, status, occurred, memo, reference, recordedAt, firstSeen, viaWebhook, viaPoll,
            recordedMicros, matched, flag, mintJob, customerID
        ) =
            try row.decode(
                (
                    Int64, String, String, String, Int64, String, Int64, String, String?, String, String, Bool, Bool,
                    Int64, String?, String?, String?, String?
                ).self)
        guard let direction = TransactionDirection(rawValue: direction), let status = TransactionStatus(rawValue: status),
            let path = ArrivalPath(rawValue: firstSeen), amount > 0
        else {
            throw GatewayError.storeUnavailable("core_externaltransaction row \(id) is corrupt")
        }
        let tx = ProviderTransaction(
            providerTxID: txID, account: account, direction: direction, amountPaisa: amount,
            status: status, occurredAtMicros: occurred, memo: memo, reference: reference)
        return ExternalTransactionRecord(
            id: id, tx: tx, customerID: customerID, recordedAt: recordedAt, firstSeenVia: path, seenViaWebhook: viaWebhook,
            seenViaPoll: viaPoll, lagMicros: recordedMicros - occurred, mintJobID: mintJob,
            matchedJobID: matched, flag: flag)
    }
}
