import Foundation
import GRDB
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import PKRCore
import PostgresNIO
import WalletStub

/// The load generator and bulk loaders behind `pkr bench`. It builds nothing: it starts the `pkr` binary it
/// runs from (build it with `swift build -c release` first), drives it over loopback with keep-alive, and
/// prints figures. Integer microseconds throughout.
public enum Benchmark {
    public struct Sample: Sendable {
        public var requests: Int
        public var okCount: Int
        public var elapsedMicros: Int64
        public var latenciesMicros: [Int64]
        /// CPU the server process spent (user and system, all threads) while this workload ran. On a noisy shared
        /// machine it moves far less than the rate does, so it is what back-to-back comparisons lean on.
        public var serverCPUMicros: Int64 = 0

        public var perSecond: Int64 { elapsedMicros > 0 ? Int64(requests) * 1_000_000 / elapsedMicros : 0 }
        public var nonSuccess: Int { requests - okCount }
        public var serverCPUMicrosPerRequest: Int64 { requests > 0 ? serverCPUMicros / Int64(requests) : 0 }
        public func percentile(_ p: Int) -> Int64 {
            guard !latenciesMicros.isEmpty else { return 0 }
            return latenciesMicros[max(0, min(latenciesMicros.count - 1, (latenciesMicros.count * p + 99) / 100 - 1))]
        }
    }

    public struct Request: Sendable {
        public var method: HTTPMethod
        public var path: String
        public var headers: [(String, String)]
        public var body: [UInt8]?
    }

    /// Sends every request once over `concurrency` keep-alive connections, each sending its share one request at
    /// a time (see `LoadConnection`).
    public static func drive(port: Int, requests: [Request], concurrency: Int) async throws -> Sample {
        precondition(concurrency > 0 && concurrency <= 1024, "concurrency out of range")
        let group = MultiThreadedEventLoopGroup.singleton
        let clock = SystemClock()
        let started = clock.nowMicros()
        let stride = requests.count / concurrency + 1
        let runs = (0..<concurrency).map { worker in
            LoadConnection.run(port: port, requests: Array(requests.dropFirst(worker * stride).prefix(stride)), group: group)
        }
        let outcomes = try await EventLoopFuture.whenAllSucceed(runs, on: group.any()).get().joined()
        let elapsed = clock.nowMicros() - started
        return Sample(requests: outcomes.count, okCount: outcomes.filter(\.ok).count, elapsedMicros: elapsed,
                      latenciesMicros: outcomes.map(\.latencyMicros).sorted())
    }

    /// The webhooks of `count` deposits of 1.00 PKR that the wallet stub holds (so payouts find their reserve),
    /// each signed as the provider would send it.
    public static func signedDeposits(_ gateway: Gateway, count: Int, secret: WebhookSecret, tag: String) async throws -> [Request] {
        let cursorBefore = try await lastProviderCursor(gateway)
        try await loadBacklog(gateway, count: count, tag: tag)
        var deposits: [ProviderTransaction] = []
        var cursor = cursorBefore
        while deposits.count < count {
            let page = try await gateway.provider.transactions(sinceMicros: 0, after: cursor, limit: 1000)
            guard page.nextCursor > cursor else { break }
            deposits += page.transactions
            cursor = page.nextCursor
        }
        let nowSeconds = SystemClock().nowMicros() / Timestamp.microsPerSecond
        return deposits.map { tx in
            let body = WebhookEvent.encode(tx)
            let signed = WebhookSender.sign(body: body, secret: secret, timestampSeconds: nowSeconds)
            return Request(method: .POST, path: "/api/webhooks/wallet",
                           headers: [("content-type", "application/json")] + signed.headers, body: body)
        }
    }

    static func lastProviderCursor(_ gateway: Gateway) async throws -> Int64 {
        var cursor: Int64 = 0
        while true {
            let page = try await gateway.provider.transactions(sinceMicros: 0, after: cursor, limit: 1000)
            guard page.nextCursor > cursor else { return cursor }
            cursor = page.nextCursor
        }
    }

    /// `count` redeems of one paisa each, each with its own Idempotency-Key.
    public static func redeems(count: Int, tag: String) -> [Request] {
        let token = String(repeating: "b", count: 64)
        let body = Array(#"{"amount_units":"10000","memo":"bench"}"#.utf8)
        return (0..<count).map { index in
            Request(method: .POST, path: "/api/redeem",
                    headers: [("content-type", "application/json"), ("cookie", "csrftoken=\(token)"), ("X-CSRFToken", token),
                              ("Idempotency-Key", "bench-\(tag)-\(index)")], body: body)
        }
    }

    public static func gets(_ path: String, count: Int) -> [Request] {
        Array(repeating: Request(method: .GET, path: path, headers: [], body: nil), count: count)
    }

    /// Runs `requests` like `drive`, and records the CPU the server process `pid` spent meanwhile.
    public static func drive(port: Int, requests: [Request], concurrency: Int, serverPID pid: Int32) async throws -> Sample {
        let before = cpuMicros(pid: pid)
        var sample = try await drive(port: port, requests: requests, concurrency: concurrency)
        if let before, let after = cpuMicros(pid: pid) { sample.serverCPUMicros = after - before }
        return sample
    }

    /// User and system CPU of process `pid` so far, from `/proc/<pid>/stat` (clock ticks, 10 ms each here).
    public static func cpuMicros(pid: Int32) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let nameEnd = text.lastIndex(of: ")") else { return nil }
        // After the parenthesised command name: state is the first field, utime the 12th and stime the 13th.
        let fields = text[text.index(after: nameEnd)...].split(separator: " ")
        guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]) else { return nil }
        let ticksPerSecond = Int64(sysconf(Int32(_SC_CLK_TCK)))
        guard ticksPerSecond > 0 else { return nil }
        return (user + system) * 1_000_000 / ticksPerSecond
    }

    /// Peak resident set (VmHWM) of a process, in KiB.
    public static func peakRSSKiB(pid: Int32) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int64(line.split(separator: " ").dropFirst().first { !$0.isEmpty }.map(String.init) ?? "")
        }
        return nil
    }

    // MARK: - Bulk loads for the backlog and ledger figures

    /// Leaves a bulk load fully in the SQLite database file and the WAL empty, so that the timed pass that follows
    /// does not share the machine with a checkpoint of the load itself.
    private static func settle(_ gateway: Gateway) async throws {
        guard let sqlite = gateway.store as? SQLiteStore else { return }
        // The background checkpointer may hold the checkpoint lock; SQLite then answers busy at once.
        for attempt in 1...100 {
            do {
                _ = try await sqlite.database.writeWithoutTransaction { try $0.checkpoint(.truncate) }
                return
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && attempt < 100 {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Writes `count` settled credits straight into the wallet stub, as if their webhooks had all been lost.
    public static func loadBacklog(_ gateway: Gateway, count: Int, tag: String = "backlog") async throws {
        let now = SystemClock().nowMicros()
        let occurred = Timestamp.format(micros: now)
        switch gateway.store {
        case let sqlite as SQLiteStore:
            try await sqlite.database.write { db in
                let accountID = try Int64.fetchOne(db, sql: "SELECT id FROM wallet_stub_walletstubaccount WHERE account_no = ?",
                                                   arguments: [Gateway.demoWalletAccount]) ?? 0
                let statement = try db.makeStatement(sql: """
                    INSERT INTO wallet_stub_walletstubtx (provider_tx_id, account_id, direction, amount_paisa, status, memo, occurred_at)
                    VALUES (?, ?, 'credit', 100, 'settled', 'backlog', ?)
                    """)
                for index in 0..<count { try statement.execute(arguments: ["TX-\(tag)-\(index)", accountID, occurred]) }
                try db.execute(sql: "UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + ? WHERE id = ?",
                               arguments: [Int64(count) * 100, accountID])
            }
        case let postgres as PostgresStore:
            try await postgres.client.query("""
                INSERT INTO wallet_stub_walletstubtx (provider_tx_id, account_id, direction, amount_paisa, status, memo, occurred_at)
                SELECT \("TX-\(tag)-") || n, a.id, 'credit', 100, 'settled', 'backlog', \(occurred)
                FROM generate_series(0, \(count - 1)) AS n, wallet_stub_walletstubaccount a WHERE a.account_no = \(Gateway.demoWalletAccount)
                """, logger: gateway.logger)
            try await postgres.client.query("""
                UPDATE wallet_stub_walletstubaccount SET balance_paisa = balance_paisa + \(Int64(count) * 100)
                WHERE account_no = \(Gateway.demoWalletAccount)
                """, logger: gateway.logger)
        default:
            throw ConfigError.refused("unknown store")
        }
        try await settle(gateway)
    }

    /// Writes a valid hash chain of `count` ledger entries (count / 2 mint jobs) for the verify figure.
    public static func loadLedger(_ gateway: Gateway, count: Int) async throws {
        let user = try await gateway.requireUser()
        let createdAt = Timestamp.format(micros: SystemClock().nowMicros())
        var head = LedgerHead.genesis
        let batch = 5000
        var jobIndex = 0
        while jobIndex < count / 2 {
            let jobs = (jobIndex..<min(count / 2, jobIndex + batch)).map { "bench-job-\($0)" }
            var entries: [LedgerEntry] = []
            for job in jobs {
                for posting in PostingRules.postings(for: .mint, amountUnits: 1_000_000) {
                    let entry = LedgerEntry.next(after: head, userID: posting.account == .userToken ? user.id : nil, posting: posting,
                                                 refType: .mint, refID: job, createdAt: createdAt)
                    entries.append(entry)
                    head = LedgerHead(entry)
                }
            }
            try await insert(gateway, jobs: jobs, entries: entries, user: user, createdAt: createdAt, head: head)
            jobIndex += jobs.count
        }
        try await settle(gateway)
    }

    private static func insert(_ gateway: Gateway, jobs: [String], entries: [LedgerEntry], user: DemoUser, createdAt: String,
                               head: LedgerHead) async throws {
        let userID = user.id
        switch gateway.store {
        case let sqlite as SQLiteStore:
            try await sqlite.database.write { db in
                // A mint job refers to its provider transaction and to its chain receipt (schema v3).
                let external = try db.makeStatement(sql: """
                    INSERT INTO core_externaltransaction (provider_tx_id, account, user_id, direction, amount_paisa, status, occurred_at,
                      occurred_at_micros, recorded_at, recorded_at_micros, first_seen_via, seen_via_poll)
                    VALUES (?, ?, ?, 'credit', 100, 'settled', ?, 0, ?, 0, 'poll', 1)
                    """)
                let receipt = try db.makeStatement(sql: """
                    INSERT INTO chain_stub_chainstubreceipt (tx_hash, op, address, amount_units, reference, created_at)
                    VALUES (?, 'mint', ?, 1000000, ?, ?)
                    """)
                let job = try db.makeStatement(sql: """
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_row_id, external_tx_id, created_at)
                    VALUES (?, 'mint', ?, 1000000, 'confirmed', ?, ?, ?, ?)
                    """)
                for id in jobs {
                    try external.execute(arguments: [id, user.walletAccount, userID, createdAt, createdAt])
                    let externalRowID = db.lastInsertedRowID
                    try receipt.execute(arguments: ["0x" + id, user.chainAddress, id, createdAt])
                    try job.execute(arguments: [id, userID, "0x" + id, externalRowID, id, createdAt])
                }
                let entry = try db.makeStatement(sql: """
                    INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
                for e in entries {
                    try entry.execute(arguments: [e.id, e.userID, e.side.rawValue, e.account.rawValue, e.amountUnits, e.refType.rawValue,
                                                  e.refID, e.createdAt, e.prevHash, e.entryHash])
                }
                try db.execute(sql: "UPDATE core_ledgerhead SET last_id = ?, last_hash = ?", arguments: [head.lastID, head.lastHash])
            }
        case let postgres as PostgresStore:
            let logger = gateway.logger
            try await postgres.client.transaction(logger: logger) { connection in
                try await connection.query("""
                    INSERT INTO core_chainjob (id, job_type, user_id, amount_units, status, tx_hash, external_tx_id, created_at)
                    SELECT j, 'mint', \(userID), 1000000, 'confirmed', '0x' || j, j, \(createdAt) FROM unnest(\(jobs)::TEXT[]) AS j
                    """, logger: logger)
                try await connection.query("""
                    INSERT INTO core_ledgerentry (id, user_id, side, account, amount_units, ref_type, ref_id, created_at, prev_hash, entry_hash)
                    SELECT i, NULLIF(u, ''), s, a, m, r, f, c, p, h FROM unnest(\(entries.map(\.id))::BIGINT[], \(entries.map { $0.userID ?? "" })::TEXT[],
                                         \(entries.map(\.side.rawValue))::TEXT[], \(entries.map(\.account.rawValue))::TEXT[],
                                         \(entries.map(\.amountUnits))::BIGINT[], \(entries.map(\.refType.rawValue))::TEXT[],
                                         \(entries.map(\.refID))::TEXT[], \(entries.map(\.createdAt))::TEXT[],
                                         \(entries.map(\.prevHash))::TEXT[], \(entries.map(\.entryHash))::TEXT[])
                      AS t(i, u, s, a, m, r, f, c, p, h)
                    """, logger: logger)
                try await connection.query("UPDATE core_ledgerhead SET last_id = \(head.lastID), last_hash = \(head.lastHash)",
                                           logger: logger)
            }
        default:
            throw ConfigError.refused("unknown store")
        }
    }
}
