import NIOCore
import PKRApplication
import PKRCore
import PostgresNIO

// The plain flow's statements that every webhook of a payout runs. An interpolated query is parsed and planned
// again on every run, which cost PostgreSQL about a fifth of its time under redeems; these are prepared once per
// connection. Their parameter types are stated, so that a NULL in the first run cannot fix a parameter's type.

/// A statement whose rows the caller decodes.
protocol PreparedRows: PostgresPreparedStatement where Row == PostgresRow {}

extension PreparedRows {
    func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
}

struct CustomerByAccount: PreparedRows {
    static let sql = "SELECT id, email, display_name, wallet_account, chain_address FROM core_user WHERE wallet_account = $1"
    static let bindingDataTypes: [PostgresDataType] = [.text]

    var walletAccount: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(walletAccount)
        return bindings
    }
}

/// A new provider transaction; nothing when its id is recorded already (`ON CONFLICT`), so no id comes back.
struct RecordTransaction: PreparedRows {
    static let sql = """
        INSERT INTO core_externaltransaction
          (provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
           occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        ON CONFLICT (provider_tx_id) DO NOTHING RETURNING id
        """
    static let bindingDataTypes: [PostgresDataType] = [
        .text, .text, .text, .text, .int8, .text, .text, .text, .text, .int8, .text, .int8, .text, .bool, .bool,
    ]

    var draft: TransactionDraft

    func makeBindings() -> PostgresBindings {
        let tx = draft.tx
        var bindings = PostgresBindings(capacity: 15)
        bindings.append(tx.providerTxID)
        bindings.append(tx.account)
        bindings.append(draft.customerID)
        bindings.append(tx.direction.rawValue)
        bindings.append(tx.amountPaisa)
        bindings.append(tx.status.rawValue)
        bindings.append(tx.memo)
        bindings.append(tx.reference)
        bindings.append(Timestamp.format(micros: tx.occurredAtMicros))
        bindings.append(tx.occurredAtMicros)
        bindings.append(draft.recordedAt)
        bindings.append(draft.recordedAtMicros)
        bindings.append(draft.path.rawValue)
        bindings.append(draft.path == .webhook)
        bindings.append(draft.path == .poll)
        return bindings
    }
}

/// The burn a debit pays: named by the debit's reference or by the payout's transaction id, of the same amount,
/// and not matched by another debit yet.
struct FindUnmatchedBurn: PreparedRows {
    static let sql = """
        SELECT id FROM core_chainjob
        WHERE job_type = 'burn' AND (id = $1 OR payout_provider_tx_id = $2) AND amount_units = $3
          AND NOT EXISTS (SELECT 1 FROM core_externaltransaction e WHERE e.matched_job_id = core_chainjob.id)
        LIMIT 1 FOR UPDATE
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .int8]

    var reference: String
    var providerTxID: String
    var amountUnits: Int64

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 3)
        bindings.append(reference)
        bindings.append(providerTxID)
        bindings.append(amountUnits)
        return bindings
    }
}

struct FindHoldForUpdate: PreparedRows {
    static let sql = """
        SELECT h.user_id, u.chain_address, h.amount_units, h.state
        FROM core_redemptionhold h JOIN core_user u ON u.id = h.user_id
        WHERE h.job_id = $1 FOR UPDATE OF h
        """
    static let bindingDataTypes: [PostgresDataType] = [.text]

    var jobID: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(jobID)
        return bindings
    }
}

/// The debit that paid a burn, matched to it.
struct MatchDebit: PreparedRows {
    static let sql = "UPDATE core_externaltransaction SET matched_job_id = $1 WHERE id = $2"
    static let bindingDataTypes: [PostgresDataType] = [.text, .int8]

    var jobID: String
    var rowID: Int64

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(jobID)
        bindings.append(rowID)
        return bindings
    }
}

/// A burn's payout, confirmed by its debit.
struct ConfirmPayout: PreparedRows {
    static let sql = "UPDATE core_chainjob SET payout_state = 'confirmed', payout_provider_tx_id = $1 WHERE id = $2"
    static let bindingDataTypes: [PostgresDataType] = [.text, .text]

    var providerTxID: String
    var jobID: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(providerTxID)
        bindings.append(jobID)
        return bindings
    }
}

struct InsertInbound: PreparedRows {
    static let sql = """
        INSERT INTO core_webhookinbound
          (received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
           provider_tx_id, job_id, body_bytes, body)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        RETURNING id
        """
    static let bindingDataTypes: [PostgresDataType] = [
        .text, .text, .text, .text, .text, .text, .text, .text, .text, .text, .int8, .bytea,
    ]

    var row: InboundRow

    func makeBindings() -> PostgresBindings {
        let inbound = row.draft
        var bindings = PostgresBindings(capacity: 12)
        bindings.append(Timestamp.format(micros: inbound.receivedAtMicros))
        bindings.append(inbound.messageID)
        bindings.append(inbound.webhookTimestamp)
        bindings.append(inbound.sourceAddress)
        bindings.append(inbound.scheme?.rawValue)
        bindings.append(inbound.verification)
        bindings.append(row.outcome)
        bindings.append(row.errorCode)
        bindings.append(inbound.providerTxID)
        bindings.append(row.jobID)
        bindings.append(Int64(inbound.body.count))
        bindings.append(row.keptBody.map { ByteBuffer(bytes: $0) })
        return bindings
    }
}

/// Whether a debit is the one the provider's answer already named as a burn's paid payout, for this amount and
/// account, with the burn done.
struct PayoutAnsweredQuery: PreparedRows {
    static let sql = """
        SELECT 1 FROM core_chainjob j JOIN core_user u ON u.id = j.user_id
        WHERE j.id = $1 AND j.job_type = 'burn' AND j.payout_provider_tx_id = $2
          AND j.amount_units = $3 AND u.wallet_account = $4
          AND NOT EXISTS (SELECT 1 FROM core_redemptionhold h WHERE h.job_id = j.id AND h.state <> 'burnt')
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .int8, .text]

    var jobID: String
    var providerTxID: String
    var amountUnits: Int64
    var account: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 4)
        bindings.append(jobID)
        bindings.append(providerTxID)
        bindings.append(amountUnits)
        bindings.append(account)
        return bindings
    }
}

/// A new settled debit whose redemption is burnt already, confirmed in one call (`pkr_pair_debit`); the job's id,
/// or NULL when the flow must decide. The inbound-log columns are NULL for a polled debit.
struct PairDebit: PreparedRows {
    static let sql = """
        SELECT pkr_pair_debit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
        """
    static let bindingDataTypes: [PostgresDataType] = [
        .text, .text, .int8, .int8, .text, .text, .text, .int8, .text, .int8, .text,
        .text, .text, .text, .text, .text, .text, .text, .text, .text, .int8,
    ]

    var tx: ProviderTransaction
    var amountUnits: Int64
    var path: ArrivalPath
    var recordedAtMicros: Int64
    var inbound: InboundRow?

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 21)
        bindings.append(tx.providerTxID)
        bindings.append(tx.account)
        bindings.append(tx.amountPaisa)
        bindings.append(amountUnits)
        bindings.append(tx.memo)
        bindings.append(tx.reference)
        bindings.append(Timestamp.format(micros: tx.occurredAtMicros))
        bindings.append(tx.occurredAtMicros)
        bindings.append(Timestamp.format(micros: recordedAtMicros))
        bindings.append(recordedAtMicros)
        bindings.append(path.rawValue)
        let logged = inbound?.draft
        bindings.append(logged.map { Timestamp.format(micros: $0.receivedAtMicros) })
        bindings.append(logged?.messageID)
        bindings.append(logged?.webhookTimestamp)
        bindings.append(logged?.sourceAddress)
        bindings.append(logged?.scheme?.rawValue)
        bindings.append(logged?.verification)
        bindings.append(inbound?.outcome)
        bindings.append(inbound?.errorCode)
        bindings.append(logged?.providerTxID)
        bindings.append(logged.map { Int64($0.body.count) })
        return bindings
    }
}
