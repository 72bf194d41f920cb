import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import PKRApplication
import PKRCore
import PKRGateway

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
        /// CPU the provider stub's own process spent meanwhile, when it runs apart from the server.
        public var providerCPUMicros: Int64?
        /// How much the database grew over the workload (set by the caller for mint workloads only): what a mint leaves
        /// on disk.
        public var databaseGrowthBytes: Int64?

        public var perSecond: Int64 { elapsedMicros > 0 ? Int64(requests) * 1_000_000 / elapsedMicros : 0 }
        public var nonSuccess: Int { requests - okCount }
        public var serverCPUMicrosPerRequest: Int64 { requests > 0 ? serverCPUMicros / Int64(requests) : 0 }
        public var providerCPUMicrosPerRequest: Int64? { providerCPUMicros.map { requests > 0 ? $0 / Int64(requests) : 0 } }
        public var bytesPerMint: Int64? { databaseGrowthBytes.map { okCount > 0 ? $0 / Int64(okCount) : 0 } }
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
        return Sample(
            requests: outcomes.count, okCount: outcomes.filter(\.ok).count, elapsedMicros: elapsed,
            latenciesMicros: outcomes.map(\.latencyMicros).sorted())
    }

    /// The webhooks of `count` deposits of 1.00 PKR that the wallet stub holds (so payouts find their reserve),
    /// spread round-robin over `accounts`, each signed as the provider would send it.
    public static func signedDeposits(
        _ gateway: Gateway, accounts: [String] = [Demo.walletAccount], count: Int, secret: WebhookSecret
    ) async throws -> [Request] {
        let cursorBefore = try await lastProviderCursor(gateway)
        try await recordRoundRobin(gateway, accounts: accounts, count: count)
        var deposits: [ProviderTransaction] = []
        var cursor = cursorBefore
        while deposits.count < count {
            let page = try await providerStore(gateway).transactions(sinceMicros: 0, after: cursor, limit: 1000)
            guard page.nextCursor > cursor else { break }
            deposits += page.transactions
            cursor = page.nextCursor
        }
        let nowSeconds = SystemClock().nowMicros() / Timestamp.microsPerSecond
        return roundRobin(deposits, accounts: accounts).map { tx in
            let body = WebhookEvent.encode(tx)
            let signed = WebhookSender.sign(body: body, secret: secret, timestampSeconds: nowSeconds)
            return Request(
                method: .POST, path: "/api/webhooks/wallet",
                headers: [("content-type", "application/json")] + signed.headers, body: body)
        }
    }

    static func lastProviderCursor(_ gateway: Gateway) async throws -> Int64 {
        var cursor: Int64 = 0
        while true {
            let page = try await providerStore(gateway).transactions(sinceMicros: 0, after: cursor, limit: 1000)
            guard page.nextCursor > cursor else { return cursor }
            cursor = page.nextCursor
        }
    }

    /// `count` redeems of one paisa each, each with its own Idempotency-Key: the seed's current customer's, or, with
    /// `userIDs`, spread round-robin over those customers as an operator's server-to-server calls.
    public static func redeems(count: Int, tag: String, userIDs: [String] = []) -> [Request] {
        let plainBody = Array(#"{"amount_units":"10000","memo":"bench"}"#.utf8)
        return (0..<count).map { index in
            let body =
                userIDs.isEmpty
                ? plainBody
                : Array(
                    JSONText.object([
                        ("amount_units", .string("10000")), ("memo", .string("bench")),
                        ("user_id", .string(userIDs[index % userIDs.count])),
                    ]).utf8)
            return Request(
                method: .POST, path: "/api/redeem", headers: browserHeaders(idempotencyKey: "bench-\(tag)-\(index)"), body: body)
        }
    }

    /// A JSON POST as the seed's browser sends it: the CSRF cookie and its header (the bench server runs in demo
    /// mode, where operator calls need no token).
    static func browserHeaders(idempotencyKey: String?) -> [(String, String)] {
        let token = String(repeating: "b", count: 64)
        let headers = [("content-type", "application/json"), ("cookie", "csrftoken=\(token)"), ("X-CSRFToken", token)]
        return headers + (idempotencyKey.map { [("Idempotency-Key", $0)] } ?? [])
    }

    public static func gets(_ path: String, count: Int) -> [Request] {
        Array(repeating: Request(method: .GET, path: path, headers: [], body: nil), count: count)
    }

    /// Runs `requests` like `drive`, and records the CPU the server process `pid` (and the provider's, when it runs
    /// apart) spent meanwhile. The workload ends when `settle` returns after the last answer: what the requests set
    /// going (a redeem's debit webhook) counts in its time and CPU.
    public static func drive(
        port: Int, requests: [Request], concurrency: Int, serverPID pid: Int32, providerPID: Int32? = nil,
        settle: (@Sendable () async throws -> Void)? = nil
    ) async throws -> Sample {
        let before = cpuMicros(pid: pid)
        let providerBefore = providerPID.flatMap { cpuMicros(pid: $0) }
        var sample = try await drive(port: port, requests: requests, concurrency: concurrency)
        if let settle {
            let started = SystemClock().nowMicros()
            try await settle()
            sample.elapsedMicros += SystemClock().nowMicros() - started
        }
        if let before, let after = cpuMicros(pid: pid) { sample.serverCPUMicros = after - before }
        if let providerPID, let providerBefore, let after = cpuMicros(pid: providerPID) {
            sample.providerCPUMicros = after - providerBefore
        }
        return sample
    }

    /// Waits until the provider has no delivery left to push: every payout's debit has reached the server.
    public static func pushesDelivered(_ gateway: Gateway, timeoutSeconds: Int64 = 120) async throws {
        guard let outbox = gateway.localProvider?.outbox else { throw BenchmarkError.noLocalProvider }
        let deadline = SystemClock().nowMicros() + timeoutSeconds * 1_000_000
        // The earliest pending delivery is an index lookup; a count would scan the outbox on every poll.
        while try await outbox.nextDueMicros() != nil {
            guard SystemClock().nowMicros() < deadline else { throw BenchmarkError.pushesPending }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// User and system CPU of process `pid` so far, from `/proc/<pid>/stat` (clock ticks, 10 ms each here).
    public static func cpuMicros(pid: Int32) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let nameEnd = text.lastIndex(of: ")")
        else { return nil }
        // After the parenthesised command name: state is the first field, utime the 12th and stime the 13th.
        let fields = text[text.index(after: nameEnd)...].split(separator: " ")
        guard fields.count > 12, let user = Int64(fields[11]), let system = Int64(fields[12]) else { return nil }
        guard clockTicksPerSecond > 0 else { return nil }
        return (user + system) * 1_000_000 / clockTicksPerSecond
    }

    /// The unit of `/proc/<pid>/stat`'s CPU times: the resolution of every CPU figure the bench prints.
    public static let clockTicksPerSecond = Int64(sysconf(Int32(_SC_CLK_TCK)))

    /// Peak resident set (VmHWM) of a process, in KiB.
    public static func peakRSSKiB(pid: Int32) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int64(line.split(separator: " ").dropFirst().first { !$0.isEmpty }.map(String.init) ?? "")
        }
        return nil
    }

    // MARK: - Bulk loads for the backlog and ledger figures (through the provider's and the gateway's own paths)

    /// Records `count` settled deposits at the provider whose webhooks are lost, for the reconciler to find.
    public static func loadBacklog(_ gateway: Gateway, count: Int) async throws {
        // One call: its deposits are a millisecond apart, so their ids grow with time as a provider's do.
        let amounts = [Int64](repeating: 100, count: count)
        try await providerStore(gateway).recordUnannouncedDeposits(account: Demo.walletAccount, amountsPaisa: amounts, memo: "backlog")
        try await gateway.store.checkpoint()
    }

    /// The provider stub this process runs, which the benchmark plays the provider through.
    public static func providerStore(_ gateway: Gateway) throws -> any WalletStubStore {
        guard let store = gateway.localProvider?.store else { throw BenchmarkError.noLocalProvider }
        return store
    }

    /// Grows the ledger by about `count` entries (two per mint) as the reconciler would: deposits the provider never
    /// announced, then one pass that mints them all.
    public static func loadLedger(_ gateway: Gateway, count: Int) async throws {
        try await loadBacklog(gateway, count: count / 2)
        _ = try await withLocalProvider(gateway) { try await gateway.ingest(sinceMicros: nil) }
        try await gateway.store.checkpoint()
    }
}

enum BenchmarkError: Error, CustomStringConvertible {
    case noLocalProvider
    case customersNotBound(Int)
    case historyNotMinted(expected: Int, minted: Int)
    case pushesPending

    var description: String {
        switch self {
        case .noLocalProvider: "the benchmark plays the provider: run it in demo mode, without PKR_PROVIDER_URL"
        case .customersNotBound(let failed): "\(failed) customers were not bound through POST /api/users"
        case .historyNotMinted(let expected, let minted): "growing the history: \(minted) of \(expected) deposits minted"
        case .pushesPending: "the provider's webhooks were still pending two minutes after the last redeem"
        }
    }
}
