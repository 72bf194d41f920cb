import ChainStub
import Logging
import NIOCore
import PKRApplication
import PKRCore
import PostgresNIO
import PostgresSupport
import Synchronization

/// Group commit for PostgreSQL's hot path: new settled credits from webhooks and polls.
///
/// Mints all queue on the same rows (the user's balance, the chain-stub balance, the ledger head), and a mint on its
/// own holds those locks through about six round trips and its commit. The credits that arrive while a batch is
/// being written wait in the store's `mintQueue` and are written together by the next one, in one transaction of
/// four statements however many
/// credits it holds: one records them and writes their receipts, jobs and inbound-log rows; then, under the locks,
/// one adds to the token balances, one to the chain-stub balances (and locks the ledger head), one appends the
/// ledger. Every caller still waits for the commit that holds its own mint.
///
/// Usually even that is one round trip: a batch chained after the ledger head this process's previous batch left
/// is a single call of the `pkr_mint_batch` function (migration v1-fast-paths), which writes all of it or,
/// when a credit is not new or another writer moved the head, nothing; then the transaction above runs instead.
///
/// The batch is only a fast path. A credit it does not handle (already recorded, no linked user, a repeat within
/// the batch) and every credit of a batch that failed are handed back, and the caller applies each of them on its
/// own with the full rules, so one bad event cannot fail its neighbours.
final class PostgresMintBatch: Sendable {
    static let batchSizeMax = 128

    /// A settled credit the settlement policy would mint, not yet known to be new.
    struct Credit: Sendable {
        var tx: ProviderTransaction
        var path: ArrivalPath
        var amountUnits: Int64
        var inbound: InboundDraft?
        var nowMicros: Int64
    }

    private let client: PostgresClient
    private let logger: Logger
    private let knownUsers = Mutex<[String: Customer]>([:])
    /// The ledger head this process's last planned batch leaves, which the one-call path chains after; nil when
    /// unknown.
    private let lastHead = Mutex<LedgerHead?>(nil)
    /// Credits minted by batches since start-up, batches rolled back, and one-call batches written and refused
    /// (each refused one then written by the transaction path), for tests and diagnosis.
    let mintedCount = Atomic<Int>(0)
    let rolledBackCount = Atomic<Int>(0)
    let oneCallMissCount = Atomic<Int>(0)
    let oneCallCount = Atomic<Int>(0)
    static let knownUsersMax = 10_000

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Writes `credits` in one transaction; the result holds each credit's job, or nil for one left to the caller.
    /// Never throws: a failed batch wrote nothing and hands every credit back.
    func write(_ credits: [Credit]) async -> [ChainJob?] {
        precondition(credits.count <= Self.batchSizeMax, "a batch is bounded")
        if let jobs = await writeInOneCall(credits) { return jobs }
        let logger = self.logger
        do {
            let (jobs, head) = try await client.transaction(logger: logger) { connection in
                try await self.write(connection, credits, logger: logger)
            }
            // A head behind the one already known (a later batch planned or committed meanwhile) is not kept.
            if let head { lastHead.withLock { last in if last.map({ head.lastID > $0.lastID }) ?? true { last = head } } }
            mintedCount.add(jobs.count { $0 != nil }, ordering: .relaxed)
            return jobs
        } catch {
            rolledBackCount.add(1, ordering: .relaxed)
            logger.notice(
                "mint batch rolled back; its credits are applied one by one",
                metadata: ["credits": "\(credits.count)", "error": "\(PostgresStore.describe(error))"])
            return Array(repeating: nil, count: credits.count)
        }
    }

    /// The batch as one call of `pkr_mint_batch`, one round trip in a transaction of its own, when this process
    /// knows every account and the ledger head its previous batch leaves. Nil when it cannot be used or the
    /// function refused (a credit not new, the head moved): nothing was written, and the transaction below runs.
    private func writeInOneCall(_ credits: [Credit]) async -> [ChainJob?]? {
        let accounts = Set(credits.map(\.tx.account))
        let users = knownUsers.withLock { known in
            Dictionary(uniqueKeysWithValues: accounts.compactMap { account in known[account].map { (account, $0) } })
        }
        guard users.count == accounts.count else { return nil }
        let plan = Plan(credits, users: users)
        guard !plan.minted.isEmpty else { return nil }
        // The entries chain after the head the last planned batch leaves, whether it has committed or is still in
        // flight: a batch planned behind another waits for that one's locks inside its call, then finds its head.
        let chained = lastHead.withLock { last -> (LedgerHead, LedgerEntryColumns, LedgerHead)? in
            guard let head = last else { return nil }
            let (entries, newHead) = LedgerAppend.entries(after: head, plan.ledgerAppends)
            last = newHead
            return (head, LedgerEntryColumns(entries), newHead)
        }
        guard let (head, entries, newHead) = chained else { return nil }
        let call = MintBatchCall(
            credit: plan.credit, inbound: plan.inbound, unitsByUser: plan.unitsByUser,
            unitsByAddress: plan.unitsByAddress, expectedHead: head, entries: entries, newHead: newHead)
        let logger = self.logger
        do {
            let recorded = try await client.withConnection { connection in
                var recorded: Int64?
                for try await count in try await connection.execute(call, logger: logger) { recorded = count }
                return recorded
            }
            guard recorded != MintBatchCall.headMoved else { throw MintBatchCall.HeadMoved() }
            guard recorded == Int64(plan.minted.count) else {
                throw GatewayError.storeUnavailable(
                    "pkr_mint_batch recorded \(recorded.map(String.init) ?? "no count") of \(plan.minted.count) credits")
            }
        } catch {
            // The head is no longer known (and batches chained after this one will be refused too); the transaction
            // below reads it under its lock and records it again.
            lastHead.withLock { $0 = nil }
            oneCallMissCount.add(1, ordering: .relaxed)
            logger.debug(
                "mint batch call refused; writing the batch in a transaction",
                metadata: ["error": "\(PostgresStore.describe(error))"])
            return nil
        }
        mintedCount.add(plan.minted.count, ordering: .relaxed)
        oneCallCount.add(1, ordering: .relaxed)
        var jobs = [ChainJob?](repeating: nil, count: credits.count)
        for planned in plan.minted { jobs[planned.index] = planned.job }
        return jobs
    }

    /// The credits a batch can mint, with their jobs planned and their rows laid out as columns.
    private struct Plan {
        struct Planned {
            var index: Int
            var job: ChainJob
            var user: Customer
        }

        /// Credits for an account nobody is linked to, and repeats within the batch, are left to the full rules.
        var minted: [Planned] = []
        var credit = CreditColumns()
        var inbound = InboundColumns()

        init(_ credits: [Credit], users: [String: Customer]) {
            var seen = Set<String>()
            for (index, item) in credits.enumerated() {
                guard let user = users[item.tx.account], seen.insert(item.tx.providerTxID).inserted else { continue }
                let createdAt = Timestamp.format(micros: item.nowMicros)
                let job = ChainJob(
                    id: Identifiers.timeOrderedUUID(unixMillis: item.nowMicros / 1000), jobType: .mint,
                    amountUnits: item.amountUnits, txHash: Identifiers.chainTxHash(unixMillis: item.nowMicros / 1000), createdAt: createdAt)
                minted.append(Planned(index: index, job: job, user: user))
                credit.append(item.tx, path: item.path, user: user, job: job, nowMicros: item.nowMicros)
                if let draft = item.inbound { inbound.append(draft, job: job) }
            }
        }

        /// Only the credits recorded by the transaction path, which may record fewer than planned.
        func keeping(_ recorded: Set<String>, of credits: [Credit]) -> [Planned] {
            minted.filter { recorded.contains(credits[$0.index].tx.providerTxID) }
        }

        var unitsByUser: UnitsByKey { UnitsByKey(minted.map { ($0.user.id, $0.job.amountUnits) }) }
        var unitsByAddress: UnitsByKey { UnitsByKey(minted.map { ($0.user.chainAddress, $0.job.amountUnits) }) }

        var ledgerAppends: [LedgerAppend] {
            minted.map {
                LedgerAppend(
                    refType: .mint, refID: $0.job.id, customerID: $0.user.id, amountUnits: $0.job.amountUnits,
                    createdAt: $0.job.createdAt)
            }
        }
    }

    private func write(
        _ connection: PostgresConnection, _ credits: [Credit],
        logger: Logger
    ) async throws -> (jobs: [ChainJob?], head: LedgerHead?) {
        var jobs = [ChainJob?](repeating: nil, count: credits.count)
        let users = try await self.users(connection, accounts: Set(credits.map(\.tx.account)), logger: logger)
        var plan = Plan(credits, users: users)
        if plan.minted.isEmpty { return (jobs, nil) }

        // One statement records the credits and writes the receipts, jobs and inbound-log rows of those it recorded,
        // all rows nobody else locks. A provider id already recorded (or being recorded by another instance, whose
        // commit this waits for) inserts nothing and goes back to the full rules, which see a repeat or an advance.
        // Each column is bound as one array, so the statement's text and its number of parameters never change.
        var recorded = Set<String>()
        let record = RecordCredits(credit: plan.credit, inbound: plan.inbound)
        for try await providerTxID in try await connection.execute(record, logger: logger) {
            recorded.insert(providerTxID)
        }
        if recorded.isEmpty { return (jobs, nil) }
        plan.minted = plan.keeping(recorded, of: credits)
        guard plan.minted.count == recorded.count else {
            throw GatewayError.storeUnavailable("the mint batch recorded \(recorded.count) credits but planned \(plan.minted.count)")
        }

        // The contended rows last, as few round trips as possible, since their locks are held until the commit.
        // Every mint and burn takes them in one order: token balances (here in user order), chain-stub balances,
        // ledger head. A chain-stub balance is only ever locked by a holder of its user's token balance, so the
        // chain-stub balances and the ledger head can share a statement whatever order it locks them in.
        let unitsByUser = plan.unitsByUser
        var balancesUpdated = 0
        for try await _ in try await connection.execute(AddToTokenBalances(amounts: unitsByUser), logger: logger) {
            balancesUpdated += 1
        }
        guard balancesUpdated == unitsByUser.keys.count else {
            throw GatewayError.storeUnavailable("a token balance row is missing for one of \(unitsByUser.keys.sorted())")
        }
        let unitsByAddress = plan.unitsByAddress
        var head: LedgerHead?
        var addressesMoved = 0
        let move = AddToChainStubBalancesAndLockLedgerHead(amounts: unitsByAddress)
        for try await (lastID, lastHash, moved) in try await connection.execute(move, logger: logger) {
            head = LedgerHead(lastID: lastID, lastHash: lastHash)
            addressesMoved = Int(moved)
        }
        guard let head else { throw GatewayError.storeUnavailable("ledger head row missing") }
        guard addressesMoved == unitsByAddress.keys.count else {
            throw GatewayError.storeUnavailable("a chain-stub balance row is missing")
        }
        let newHead = try await PostgresStore.appendLedger(connection, after: head, plan.ledgerAppends, logger: logger)
        for planned in plan.minted { jobs[planned.index] = planned.job }
        return (jobs, newHead)
    }

    /// The users linked to `accounts`. A user row never changes once written, so the ones found are kept.
    private func users(_ connection: PostgresConnection, accounts: Set<String>, logger: Logger) async throws -> [String: Customer] {
        // Looked up per account, not by scanning the cache: a batch names a few accounts, the cache may hold thousands.
        var users = knownUsers.withLock { known in
            Dictionary(uniqueKeysWithValues: accounts.compactMap { account in known[account].map { (account, $0) } })
        }
        let missing = accounts.subtracting(users.keys)
        if missing.isEmpty { return users }
        for try await (id, email, name, account, address) in try await connection.query(
            """
            SELECT id, email, display_name, wallet_account, chain_address FROM core_user WHERE wallet_account = ANY(\(Array(missing)))
            """, logger: logger
        ).decode((String, String, String, String, String).self) {
            users[account] = Customer(id: id, email: email, displayName: name, walletAccount: account, chainAddress: address)
        }
        let found = users
        knownUsers.withLock { known in
            if known.count < Self.knownUsersMax { known.merge(found) { old, _ in old } }
        }
        return users
    }
}

// The batch's statements. Their text never changes (each column is one array parameter), so each is prepared once
// per connection: PostgreSQL parses and plans it once instead of for every batch.

/// Records the credits and writes the receipts, jobs and inbound-log rows of those it recorded; returns the
/// provider ids recorded. Data-modifying CTEs all run to completion, read or not, and foreign keys are checked at
/// the statement's end.
private struct RecordCredits: PostgresPreparedStatement {
    static let sql = """
        WITH v AS (
          SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[],
                               $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[], $13::text[], $14::text[],
                               $15::text[], $16::text[], $17::bigint[])
            AS v(provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
                 occurred_at_micros, created_at, now_micros, path, job_id, tx_hash, address, amount_units)
        ), recorded AS (
          INSERT INTO core_externaltransaction
            (provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
             occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_webhook, seen_via_poll)
          SELECT provider_tx_id, account, user_id, direction, amount_paisa, status, memo, reference, occurred_at,
                 occurred_at_micros, created_at, now_micros, path, path = 'webhook', path = 'poll'
          FROM v
          ON CONFLICT (provider_tx_id) DO NOTHING RETURNING provider_tx_id
        ), minted AS (
          SELECT v.* FROM v WHERE provider_tx_id IN (SELECT provider_tx_id FROM recorded)
        ), receipts AS (
          INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
          SELECT tx_hash, 'mint', address, amount_units, job_id, created_at FROM minted
        ), jobs AS (
          INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, memo, created_at)
          SELECT job_id, 'mint', user_id, amount_units, 'confirmed', tx_hash, provider_tx_id, memo, created_at FROM minted
        ), inbound AS (
          INSERT INTO core_webhookinbound
            (received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
             provider_tx_id, job_id, body_bytes, body)
          SELECT i.* FROM unnest($18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
                                 $25::text[], $26::text[], $27::text[], $28::bigint[], $29::bytea[])
            AS i(received_at, message_id, webhook_timestamp, source_address, scheme, verification, outcome, error,
                 provider_tx_id, job_id, body_bytes, body)
          WHERE i.provider_tx_id IN (SELECT provider_tx_id FROM recorded)
        )
        SELECT provider_tx_id FROM recorded
        """

    var credit: CreditColumns
    var inbound: InboundColumns

    func makeBindings() -> PostgresBindings {
        var binds = PostgresBindings(capacity: 29)
        binds.append(credit.providerTxID)
        binds.append(credit.account)
        binds.append(credit.userID)
        binds.append(credit.direction)
        binds.append(credit.amountPaisa)
        binds.append(credit.status)
        binds.append(credit.memo)
        binds.append(credit.reference)
        binds.append(credit.occurredAt)
        binds.append(credit.occurredAtMicros)
        binds.append(credit.createdAt)
        binds.append(credit.nowMicros)
        binds.append(credit.path)
        binds.append(credit.jobID)
        binds.append(credit.txHash)
        binds.append(credit.address)
        binds.append(credit.amountUnits)
        binds.append(inbound.receivedAt)
        binds.append(inbound.messageID)
        binds.append(inbound.webhookTimestamp)
        binds.append(inbound.sourceAddress)
        binds.append(inbound.scheme)
        binds.append(inbound.verification)
        binds.append(inbound.outcome)
        binds.append(inbound.error)
        binds.append(inbound.providerTxID)
        binds.append(inbound.jobID)
        binds.append(inbound.bodyBytes)
        binds.append(inbound.body)
        return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> String { try row.decode(String.self) }
}

/// The whole batch in one call of `pkr_mint_batch` (migration v1-fast-paths); returns how many credits it recorded.
private struct MintBatchCall: PostgresPreparedStatement {
    static let sql = "SELECT pkr_mint_batch(" + (1...47).map { "$\($0)" }.joined(separator: ", ") + ")"
    /// What the function answers, having written nothing, when another writer has moved the head past the expected one.
    static let headMoved: Int64 = -1

    struct HeadMoved: Error {}

    var credit: CreditColumns
    var inbound: InboundColumns
    var unitsByUser: UnitsByKey
    var unitsByAddress: UnitsByKey
    var expectedHead: LedgerHead
    var entries: LedgerEntryColumns
    var newHead: LedgerHead

    func makeBindings() -> PostgresBindings {
        var binds = RecordCredits(credit: credit, inbound: inbound).makeBindings()
        binds.append(unitsByUser.keys)
        binds.append(unitsByUser.units)
        binds.append(unitsByAddress.keys)
        binds.append(unitsByAddress.units)
        binds.append(expectedHead.lastID)
        binds.append(expectedHead.lastHash)
        entries.appendBindings(to: &binds)
        binds.append(newHead.lastID)
        binds.append(newHead.lastHash)
        return binds
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode(Int64.self) }
}

/// Adds to the token balances, locking them in user order first; returns one row per balance updated.
private struct AddToTokenBalances: PostgresPreparedStatement {
    static let sql = """
        WITH v AS (
          SELECT * FROM unnest($1::text[], $2::bigint[]) AS v(user_id, units)
        ), locked AS (
          SELECT user_id FROM core_tokenbalance WHERE user_id IN (SELECT user_id FROM v) ORDER BY user_id FOR UPDATE
        )
        UPDATE core_tokenbalance t SET balance_units = t.balance_units + v.units FROM v
        WHERE t.user_id = v.user_id AND t.user_id IN (SELECT user_id FROM locked) RETURNING t.user_id
        """

    var amounts: UnitsByKey

    func makeBindings() -> PostgresBindings { amounts.bindings }

    func decodeRow(_ row: PostgresRow) throws -> String { try row.decode(String.self) }
}

/// Adds to the chain stub's balances and locks the ledger head; returns the head and how many balances it moved.
private struct AddToChainStubBalancesAndLockLedgerHead: PostgresPreparedStatement {
    static let sql = """
        WITH moved AS (
          UPDATE chain_stub_chainstubbalance b SET balance_units = b.balance_units + v.units
          FROM unnest($1::text[], $2::bigint[]) AS v(address, units)
          WHERE b.address = v.address RETURNING 1
        )
        SELECT last_id, last_hash, (SELECT COUNT(*) FROM moved)::BIGINT FROM core_ledgerhead WHERE singleton = 1 FOR UPDATE
        """

    var amounts: UnitsByKey

    func makeBindings() -> PostgresBindings { amounts.bindings }

    func decodeRow(_ row: PostgresRow) throws -> (Int64, String, Int64) { try row.decode((Int64, String, Int64).self) }
}

/// Amounts summed per key (a user id or a chain address), bound as `$1` keys and `$2` units.
private struct UnitsByKey: Sendable {
    var keys: [String] = []
    var units: [Int64] = []

    init(_ pairs: [(String, Int64)]) {
        for (key, amount) in Dictionary(pairs, uniquingKeysWith: +) {
            keys.append(key)
            units.append(amount)
        }
    }

    var bindings: PostgresBindings {
        var binds = PostgresBindings(capacity: 2)
        binds.append(keys)
        binds.append(units)
        return binds
    }
}

/// The batch's credits, one array per column.
private struct CreditColumns {
    var providerTxID: [String] = [], account: [String] = [], userID: [String] = [], direction: [String] = []
    var amountPaisa: [Int64] = [], status: [String] = [], memo: [String] = [], reference = NullableTextArray()
    var occurredAt: [String] = [], occurredAtMicros: [Int64] = [], createdAt: [String] = [], nowMicros: [Int64] = []
    var path: [String] = [], jobID: [String] = [], txHash: [String] = [], address: [String] = [], amountUnits: [Int64] = []

    mutating func append(_ tx: ProviderTransaction, path arrival: ArrivalPath, user: Customer, job: ChainJob, nowMicros now: Int64) {
        providerTxID.append(tx.providerTxID)
        account.append(tx.account)
        userID.append(user.id)
        direction.append(tx.direction.rawValue)
        amountPaisa.append(tx.amountPaisa)
        status.append(tx.status.rawValue)
        memo.append(tx.memo)
        reference.values.append(tx.reference)
        occurredAt.append(Timestamp.format(micros: tx.occurredAtMicros))
        occurredAtMicros.append(tx.occurredAtMicros)
        createdAt.append(job.createdAt)
        nowMicros.append(now)
        path.append(arrival.rawValue)
        jobID.append(job.id)
        txHash.append(job.txHash)
        address.append(user.chainAddress)
        amountUnits.append(job.amountUnits)
    }
}

/// The inbound-log rows of the batch's webhook deliveries, one array per column.
private struct InboundColumns {
    var receivedAt: [String] = [], messageID = NullableTextArray(), webhookTimestamp = NullableTextArray()
    var sourceAddress = NullableTextArray(), scheme = NullableTextArray(), verification: [String] = []
    var outcome: [String] = [], error = NullableTextArray(), providerTxID = NullableTextArray(), jobID: [String] = []
    var bodyBytes: [Int64] = [], body = NullableArray<[UInt8]>()

    mutating func append(_ draft: InboundDraft, job: ChainJob) {
        receivedAt.append(Timestamp.format(micros: draft.receivedAtMicros))
        messageID.values.append(draft.messageID)
        webhookTimestamp.values.append(draft.webhookTimestamp)
        sourceAddress.values.append(draft.sourceAddress)
        scheme.values.append(draft.scheme?.rawValue)
        verification.append(draft.verification)
        let minted = ApplyOutcome.minted(job)
        outcome.append(minted.code)
        error.values.append(draft.errorCode)
        providerTxID.values.append(draft.providerTxID)
        jobID.append(job.id)
        bodyBytes.append(Int64(draft.body.count))
        body.values.append(minted.logKeepsBody ? draft.body : nil)
    }
}

/// A `text[]` or `bytea[]` parameter whose elements may be NULL, which PostgresNIO's own arrays cannot express.
struct NullableArray<Element: NullableArrayElement>: PostgresNonThrowingEncodable {
    var values: [Element?] = []

    static var psqlType: PostgresDataType { Element.arrayType }
    static var psqlFormat: PostgresFormat { .binary }

    /// PostgreSQL's binary array format: dimensions, a has-nulls flag, the element type, then each dimension's
    /// length and lower bound; each element is its byte length (-1 for NULL) and its bytes.
    func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        buffer.writeInteger(values.isEmpty ? 0 : 1, as: Int32.self)
        buffer.writeInteger(values.contains(where: { $0 == nil }) ? 1 : 0, as: Int32.self)
        buffer.writeInteger(Element.elementType.rawValue)
        guard !values.isEmpty else { return }
        buffer.writeInteger(Int32(values.count), as: Int32.self)
        buffer.writeInteger(1, as: Int32.self)
        for value in values {
            guard let value else {
                buffer.writeInteger(-1, as: Int32.self)
                continue
            }
            buffer.writeInteger(Int32(value.binaryByteCount), as: Int32.self)
            value.writeBinary(into: &buffer)
        }
    }
}

typealias NullableTextArray = NullableArray<String>

/// An element `NullableArray` can carry: its types, and its bytes in PostgreSQL's binary format.
protocol NullableArrayElement: Sendable {
    static var elementType: PostgresDataType { get }
    static var arrayType: PostgresDataType { get }
    var binaryByteCount: Int { get }
    func writeBinary(into buffer: inout ByteBuffer)
}

extension String: NullableArrayElement {
    static var elementType: PostgresDataType { .text }
    static var arrayType: PostgresDataType { .textArray }
    var binaryByteCount: Int { utf8.count }
    func writeBinary(into buffer: inout ByteBuffer) { buffer.writeString(self) }
}

extension [UInt8]: NullableArrayElement {
    static var elementType: PostgresDataType { .bytea }
    static var arrayType: PostgresDataType { .byteaArray }
    var binaryByteCount: Int { count }
    func writeBinary(into buffer: inout ByteBuffer) { buffer.writeBytes(self) }
}
