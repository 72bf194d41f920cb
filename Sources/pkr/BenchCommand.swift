import ArgumentParser
import Foundation
import Logging
import PKRApplication
import PKRBench
import PKRCore
import PKRGateway
import PKRPostgres
import PKRSQLite
import PostgresNIO

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark this binary: webhook mints, redeems, balance reads and the health ceiling over loopback, "
            + "then a 100k backlog ingest and a 1M-entry ledger verify. Build with `swift build -c release` first.")

    @Option(help: "Engines, comma-separated: sqlite, postgres (PostgreSQL from POSTGRES_*; a fresh database per run).")
    var engines = "sqlite"
    @Option(help: "Requests per workload and concurrency.")
    var requests = 5000
    @Option(help: "Concurrencies, comma-separated.")
    var concurrency = "1,16,64"
    @Option(help: "Runs per figure; the table shows medians.")
    var runs = 3
    @Option(help: "Provider transactions in the lost-webhook backlog (0 skips).")
    var backlog = 100_000
    @Option(help: "Ledger entries for the verify figure (0 skips).")
    var ledger = 1_000_000
    @Option(
        help: ArgumentHelp(
            "Customers, each bound to a provider account of its own through POST /api/users (the demo customer is the "
                + "first); webhook mints and a second redeem row are spread over them."))
    var customers = 1
    @Option(
        help: ArgumentHelp(
            "Provider transactions to grow the database by, spread over the customers and minted by reconciler passes, "
                + "before the workloads run again on it (0 skips)."))
    var grow = 0
    @Option(
        name: .customLong("server-env"),
        help: ArgumentHelp(
            "KEY=VALUE for the server under test (and the provider with --provider process), after the bench's own "
                + "settings (repeatable), e.g. PKR_METRICS=0."))
    var serverEnvironment: [String] = []
    @Option(
        help: ArgumentHelp(
            "Where the provider stub runs: inside (in the server's process, as in demo mode) or process (its own "
                + "`pkr provider serve`, whose CPU per request is printed apart from the gateway's)."))
    var provider: ProviderPlacement = .inside

    enum ProviderPlacement: String, ExpressibleByArgument {
        case inside, process
    }

    func validate() throws {
        for pair in serverEnvironment where !pair.contains("=") { throw ValidationError("--server-env needs KEY=VALUE, got \(pair)") }
        guard customers >= 1 else { throw ValidationError("--customers needs at least 1 (the demo customer)") }
        guard grow >= 0 else { throw ValidationError("--grow needs 0 or more") }
    }

    func run() async throws {
        // The bulk figures run the gateway in this process: with the same allocator settings as `pkr serve`.
        limitMallocArenas()
        let concurrencies = concurrency.split(separator: ",").compactMap { Int($0) }
        guard !concurrencies.isEmpty, requests > 0, runs > 0 else { throw ValidationError("nothing to run") }
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        say(
            "pkr bench: \(binary), \(requests) requests per workload, concurrency \(concurrencies), \(runs) runs, "
                + "\(ProcessInfo.processInfo.activeProcessorCount) cores")
        let scratch = BenchScratch()
        do {
            for engineName in engines.split(separator: ",").map(String.init) {
                guard let engine = DatabaseEngine(rawValue: engineName) else { throw ValidationError("unknown engine \(engineName)") }
                try await httpRows(engine: engine, binary: binary, concurrencies: concurrencies, scratch: scratch)
                try await bulkRows(engine: engine, scratch: scratch)
            }
        } catch {
            await scratch.removeAll(logger: quietLogger())
            throw error
        }
        await scratch.removeAll(logger: quietLogger())
    }

    // MARK: - HTTP workloads against a real server process

    /// `GET /api/debug/summary` samples, and reconciler passes, per database and run.
    static let summarySamples = 3

    /// The databases the workloads run on in a run: the fresh one, then with `--grow` the same one grown.
    var phases: [String] { grow > 0 ? ["empty", "grown \(grow)"] : ["empty"] }

    /// The workloads of a round, in the order they run. With many customers the one-customer redeem stays beside
    /// theirs, so the two compare within a run.
    var workloads: [String] {
        customers == 1
            ? ["health", "webhook mint", "redeem", "balance"]
            : ["health", "webhook mint", "redeem (1 customer)", "redeem (\(customers) customers)", "balance"]
    }

    /// A run's server, and the gateway in this process that plays the provider, grows the history and audits.
    struct RunContext {
        let engine: DatabaseEngine
        let env: [String: String]
        let server: BenchServer
        /// The provider stub's own process, with `--provider process`.
        let providerServer: BenchServer?
        let provider: Gateway
        /// The demo customer first.
        let customers: [Customer]
    }

    func httpRows(engine: DatabaseEngine, binary: String, concurrencies: [Int], scratch: BenchScratch) async throws {
        var samples: [String: [Benchmark.Sample]] = [:]
        var summaryMicros: [String: [Int64]] = [:]
        var phaseBytes: [String: [Int64]] = [:]
        var summaryRSSKiB: [String: [(before: Int64, after: Int64)]] = [:]
        var firstSummaryMicros: [String: [Int64]] = [:]
        var reconcileMicros: [String: [Int64]] = [:]
        var ledgerPageMicros: [String: [Int64]] = [:]
        var restingCPUMicrosPerSecond: [String: [Int64]] = [:]
        var peakRSS: Int64 = 0
        var providerPeakRSS: Int64?
        for run in 0..<runs {
            let env = try await freshDatabase(engine, scratch: scratch)
            let serverPort = try ServerSocketProbe.freePort()
            var providerServer: BenchServer?
            defer { providerServer?.stop() }
            var gatewayEnv = serverEnv(env)
            if provider == .process {
                var providerPort = try ServerSocketProbe.freePort()
                while providerPort == serverPort { providerPort = try ServerSocketProbe.freePort() }
                let started = try BenchServer(
                    binary: binary, arguments: ["provider", "serve"], port: providerPort, healthPath: "/health",
                    environment: providerEnv(gatewayEnv, port: providerPort, gatewayPort: serverPort))
                providerServer = started
                guard try await started.waitUntilUp() else { throw ValidationError("the provider did not start") }
                gatewayEnv["PKR_PROVIDER_URL"] = "http://127.0.0.1:\(providerPort)"
            }
            let server = try BenchServer(binary: binary, arguments: ["serve"], port: serverPort, environment: gatewayEnv)
            defer { server.stop() }
            guard try await server.waitUntilUp() else { throw ValidationError("the server did not start") }
            let provider = try await buildGateway(config: try GatewayConfig(values: env), logger: quietLogger())
            let context = RunContext(
                engine: engine, env: env, server: server, providerServer: providerServer, provider: provider,
                customers: try await bindCustomers(provider, server: server, run: run))
            var seededUnits = try await fundDemoCustomer(context, concurrencies: concurrencies)
            var mintedOK = 0
            for (index, phase) in phases.enumerated() {
                if index > 0 { seededUnits += try await growHistory(context, run: run) }
                phaseBytes[phase, default: []].append(try await databaseBytes(context))
                // The first check after growth verifies the ledger entries added since the last checkpoint, as the
                // scheduled check does on a server that grows; the samples after it are what an operator waits for.
                let catchUp = try await summaryLatencies(context, count: 1)
                firstSummaryMicros[phase, default: []] += catchUp
                reconcileMicros[phase, default: []] += try await reconcilePassLatencies(context)
                // The summary's memory must not grow with history: the server's peak RSS before and after it.
                let rssBeforeKiB = Benchmark.peakRSSKiB(pid: server.pid) ?? 0
                summaryMicros[phase, default: []] += try await summaryLatencies(context)
                summaryRSSKiB[phase, default: []].append((rssBeforeKiB, Benchmark.peakRSSKiB(pid: server.pid) ?? 0))
                ledgerPageMicros[phase, default: []] += try await ledgerPageLatencies(context)
                let line = ProgressLine("bench \(engine.rawValue)")
                for c in concurrencies {
                    line.update("run \(run + 1)/\(runs), \(phase) database, concurrency \(c): \(workloads.joined(separator: ", "))")
                    let round = try await workloadRound(context, concurrency: c, tag: "r\(run)p\(index)c\(c)")
                    mintedOK += round[1].okCount  // the webhook mints
                    for (name, sample) in zip(workloads, round) { samples[key(phase, name, c), default: []].append(sample) }
                }
                line.finish()
                restingCPUMicrosPerSecond[phase, default: []].append(try await cpuMicrosPerSecondAtRest(pid: server.pid))
            }
            peakRSS = max(peakRSS, Benchmark.peakRSSKiB(pid: server.pid) ?? 0)
            if let providerServer { providerPeakRSS = max(providerPeakRSS ?? 0, Benchmark.peakRSSKiB(pid: providerServer.pid) ?? 0) }
            try await auditRun(context, run: run, mintedOK: mintedOK, seededUnits: seededUnits)
            if run == runs - 1 { try await printBytesPerMint(context) }
        }
        say("")
        printTable(engine: engine, concurrencies: concurrencies, samples: samples)
        say("peak server RSS (\(engine.rawValue)): \(peakRSS / 1024) MiB")
        if let providerPeakRSS { say("peak provider RSS (\(engine.rawValue), its own process): \(providerPeakRSS / 1024) MiB") }
        for phase in phases {
            let latencies = summaryMicros[phase, default: []].sorted()
            say(
                "GET /api/debug/summary (\(engine.rawValue), \(phase) database, \(mib(median(phaseBytes[phase, default: []]))) MiB "
                    + "before its workloads): median \(ms(median(latencies))) ms, max \(ms(latencies.last ?? 0)) ms "
                    + "over \(latencies.count) requests; server peak RSS \(median(summaryRSSKiB[phase, default: []].map(\.before)) / 1024) MiB "
                    + "before them, \(median(summaryRSSKiB[phase, default: []].map(\.after)) / 1024) MiB after; "
                    + "the first after growth (the ledger since the last checkpoint) \(ms(median(firstSummaryMicros[phase, default: []]))) ms"
            )
            let pages = ledgerPageMicros[phase, default: []].sorted()
            say(
                "GET /api/ledger?user_id=… (\(engine.rawValue), \(phase) database, the latest customer's first page of "
                    + "\(Self.ledgerPageLimit)): median \(ms(median(pages))) ms, max \(ms(pages.last ?? 0)) ms over \(pages.count) requests"
            )
            let resting = restingCPUMicrosPerSecond[phase, default: []].sorted()
            say(
                "server CPU at rest (\(engine.rawValue), \(phase) database, after its workloads): median "
                    + "\(median(resting) / 1000) ms per second, max \((resting.last ?? 0) / 1000) ms over \(resting.count) "
                    + "windows of \(Self.restingWindowSeconds) s (in clock ticks of \(1000 / max(1, Benchmark.clockTicksPerSecond)) ms)")
            let passes = reconcileMicros[phase, default: []].sorted()
            say(
                "reconciler pass finding nothing new (\(engine.rawValue), \(phase) database): median \(ms(median(passes))) ms, "
                    + "max \(ms(passes.last ?? 0)) ms over \(passes.count) passes")
        }
        // Metrics' share of a mint: too small to see between two noisy runs, so measured on its own and set
        // against the server's CPU per mint in this run.
        let mintCPUMicros = median(samples[key(phases[0], "webhook mint", concurrencies.last!)]!.map(\.serverCPUMicrosPerRequest))
        let observationNanos = ObservationCost.nanosPerMint()
        // Hundredths of a percent, in integers.
        let share = mintCPUMicros > 0 ? observationNanos * 10_000 / (mintCPUMicros * 1000) : 0
        say(
            "metrics and request id per webhook mint: \(observationNanos) ns in one thread, "
                + "\(share / 100).\(String(share % 100 + 100).dropFirst())% of the server's \(mintCPUMicros) µs of CPU per mint "
                + "at concurrency \(concurrencies.last!)")
        say("")
    }

    func key(_ phase: String, _ workload: String, _ concurrency: Int) -> String { "\(phase)|\(workload)|\(concurrency)" }

    static let restingWindowSeconds = 2

    /// The server's CPU per second while nothing is asked of it, a second after the last workload: what an idle
    /// gateway costs (its dispatcher, probes and periodic services).
    func cpuMicrosPerSecondAtRest(pid: Int32) async throws -> Int64 {
        try await Task.sleep(for: .seconds(1))
        let before = Benchmark.cpuMicros(pid: pid) ?? 0
        try await Task.sleep(for: .seconds(Self.restingWindowSeconds))
        return ((Benchmark.cpuMicros(pid: pid) ?? 0) - before) / Int64(Self.restingWindowSeconds)
    }

    /// The provider stub's own process on `port`, on the run's database (its file of its own on SQLite), pushing
    /// to the server on `gatewayPort`. It takes the server's environment, `--server-env` included, so that it pushes
    /// (`PKR_WEBHOOK_PUSH`) and signs (`PKR_WEBHOOK_SECRETS`) as the server expects.
    func providerEnv(_ serverEnv: [String: String], port: Int, gatewayPort: Int) -> [String: String] {
        var providerEnv = serverEnv
        // The key the gateway calls with is the one the provider expects.
        if providerEnv["PROVIDER_API_KEY"] == nil, let key = serverEnv["PKR_PROVIDER_API_KEY"] { providerEnv["PROVIDER_API_KEY"] = key }
        providerEnv["PROVIDER_HOST"] = "127.0.0.1"
        providerEnv["PROVIDER_PORT"] = String(port)
        providerEnv["PROVIDER_WEBHOOK_URL"] = "http://127.0.0.1:\(gatewayPort)/api/webhooks/wallet"
        return providerEnv
    }

    /// The bench's environment for the server, then the `--server-env` pairs over it.
    func serverEnv(_ env: [String: String]) -> [String: String] {
        var serverEnv = env
        // The server pushes, as by default: each payout's debit comes back to it as a webhook. The bench's own
        // gateway, which records the deposits it then sends signed, does not.
        serverEnv["PKR_WEBHOOK_PUSH"] = "1"
        for pair in serverEnvironment {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            serverEnv[String(parts[0])] = String(parts[1])
        }
        return serverEnv
    }

    /// One round of the workloads at one concurrency, in `workloads` order. Deposits go round-robin to the customers'
    /// accounts and the many-customer redeems round-robin to the customers, so each customer's redeems are paid for
    /// by its own deposits of the round.
    func workloadRound(_ context: RunContext, concurrency c: Int, tag: String) async throws -> [Benchmark.Sample] {
        let (port, pid, providerPID) = (context.server.port, context.server.pid, context.providerServer?.pid)
        func drive(_ requests: [Benchmark.Request]) async throws -> Benchmark.Sample {
            try await Benchmark.drive(port: port, requests: requests, concurrency: c, serverPID: pid, providerPID: providerPID)
        }
        // A redeem ends when its payout's debit has come back to the server by webhook.
        let provider = context.provider
        func driveRedeems(_ requests: [Benchmark.Request]) async throws -> Benchmark.Sample {
            try await Benchmark.drive(
                port: port, requests: requests, concurrency: c, serverPID: pid, providerPID: providerPID,
                settle: { try await Benchmark.pushesDelivered(provider) })
        }
        let health = try await drive(Benchmark.gets("/api/health", count: requests))
        let deposits = try await Benchmark.signedDeposits(
            context.provider, accounts: context.customers.map(\.walletAccount), count: requests,
            secret: try GatewayConfig(values: serverEnv(context.env)).webhookSecrets[0])
        let bytesBefore = try await databaseBytes(context)
        var mints = try await drive(deposits)
        mints.databaseGrowthBytes = try await databaseBytes(context) - bytesBefore
        var round = [health, mints, try await driveRedeems(Benchmark.redeems(count: requests, tag: tag))]
        if customers > 1 {
            let userIDs = context.customers.map(\.id)
            round.append(try await driveRedeems(Benchmark.redeems(count: requests, tag: tag + "n", userIDs: userIDs)))
        }
        round.append(try await drive(Benchmark.gets("/api/balance", count: requests)))
        return round
    }

    /// The run's customers, the demo one first; says how long binding the others through the server took.
    func bindCustomers(_ provider: Gateway, server: BenchServer, run: Int) async throws -> [Customer] {
        let started = SystemClock().nowMicros()
        let bound = try await Benchmark.bindCustomers(provider, port: server.port, count: customers)
        if customers > 1 {
            say(
                "customers (\(provider.config.databaseEngine.rawValue), run \(run + 1)): \(customers - 1) bound through POST /api/users "
                    + "in \(ms(SystemClock().nowMicros() - started)) ms, beside the demo customer")
        }
        return bound
    }

    /// With many customers the mint workload gives the demo customer only 1/N of its deposits, too little for its
    /// own redeem row (a paisa a request): one deposit, minted by the reconciler, pays for all of them. Returns the
    /// units minted.
    func fundDemoCustomer(_ context: RunContext, concurrencies: [Int]) async throws -> Int64 {
        guard customers > 1 else { return 0 }
        let paisa = Int64(requests * concurrencies.count * phases.count)
        try await Benchmark.fund(context.provider, account: Demo.walletAccount, amountPaisa: paisa)
        return paisa * Money.unitsPerPaisa
    }

    /// Grows the run's database by `grow` provider transactions spread over its customers, through the provider's
    /// bulk record and the reconciler's batches, and says how long that took and how large the database is after.
    /// Returns the units minted.
    func growHistory(_ context: RunContext, run: Int) async throws -> Int64 {
        let (total, runCount) = (grow, runs)
        let line = ProgressLine("grow \(context.engine.rawValue)")
        let started = SystemClock().nowMicros()
        let timing = try await Benchmark.growHistory(context.provider, accounts: context.customers.map(\.walletAccount), count: total) {
            minted in
            line.update("run \(run + 1)/\(runCount): \(ProgressLine.count(minted)) of \(ProgressLine.count(total)) minted")
        }
        let elapsedMicros = SystemClock().nowMicros() - started
        line.finish()
        let bytes = try await databaseBytes(context)
        let perSecond = elapsedMicros > 0 ? Int64(total) * 1_000_000 / elapsedMicros : 0
        say(
            "grow (\(context.engine.rawValue), run \(run + 1)): \(total) provider transactions over \(customers) customers "
                + "recorded and minted in \(ms(elapsedMicros)) ms (\(perSecond)/s: the provider's records \(ms(timing.recordMicros)) ms, "
                + "the reconciler's passes \(ms(timing.mintMicros)) ms); database \(mib(bytes)) MiB after it\(mintBatchText(context.provider))"
        )
        return Int64(total) * Benchmark.historyDepositPaisa * Money.unitsPerPaisa
    }

    /// On PostgreSQL, how the in-process gateway's mint batches went: a refused one-call batch redoes its work in a
    /// transaction, so a figure that needs many is slower.
    func mintBatchText(_ gateway: Gateway) -> String {
        guard let postgres = gateway.store as? PostgresStore else { return "" }
        let counts = postgres.mintBatchCounts
        return "; mint batches \(counts.oneCall) in one call, \(counts.refused) refused, \(counts.rolledBack) rolled back"
    }

    /// `GET /api/debug/summary` a few times, one at a time.
    func summaryLatencies(_ context: RunContext, count: Int = Self.summarySamples) async throws -> [Int64] {
        try await getLatencies(context, path: "/api/debug/summary", count: count)
    }

    /// `GET path` `count` times, one at a time; any answer but a 2xx ends the bench.
    func getLatencies(_ context: RunContext, path: String, count: Int = Self.summarySamples) async throws -> [Int64] {
        let sample = try await Benchmark.drive(
            port: context.server.port, requests: Benchmark.gets(path, count: count), concurrency: 1)
        guard sample.nonSuccess == 0 else { throw ValidationError("GET \(path) failed \(sample.nonSuccess) times") }
        return sample.latenciesMicros
    }

    static let ledgerPageLimit = 50

    /// A customer's first ledger page, a few times, one at a time: the newest customer's, one of many when the run
    /// has many.
    func ledgerPageLatencies(_ context: RunContext) async throws -> [Int64] {
        let customer = context.customers[context.customers.count - 1]
        return try await getLatencies(context, path: "/api/ledger?user_id=\(customer.id)&limit=\(Self.ledgerPageLimit)")
    }

    /// Reconciler passes with nothing left to heal (the first drains whatever is new), timed in this process on the
    /// run's database.
    func reconcilePassLatencies(_ context: RunContext) async throws -> [Int64] {
        let gateway = context.provider
        return try await withLocalProvider(gateway) {
            _ = try await gateway.reconcileOnce()
            let clock = SystemClock()
            var latencies: [Int64] = []
            for _ in 0..<Self.summarySamples {
                let startMicros = clock.nowMicros()
                let pass = try await gateway.reconcileOnce()
                guard pass.ingested == 0 else { throw ValidationError("a reconciler pass after a draining one ingested \(pass.ingested)") }
                latencies.append(clock.nowMicros() - startMicros)
            }
            return latencies
        }
    }

    /// Money must be conserved whatever the load did: the database holds every mint answered 2xx and every one this
    /// process made, and the reconciliation (the checks of `pkr reconcile`) holds. Either failing ends the bench.
    func auditRun(_ context: RunContext, run: Int, mintedOK: Int, seededUnits: Int64) async throws {
        let provider = context.provider
        let mintedUnits = try await provider.store.reconciliationSnapshot().mintedUnits
        let expectedUnits = Int64(mintedOK) * Money.unitsPerPKR + seededUnits
        let report = try await withLocalProvider(provider) { try await provider.reconciliation() }
        say(
            "run \(run + 1) (\(context.engine.rawValue)): minted units in database \(mintedUnits), expected \(expectedUnits) "
                + "(2xx mint answers \(mintedOK) + \(seededUnits) minted by the bench): \(mintedUnits == expectedUnits ? "ok" : "MISMATCH"); "
                + "reconciliation: \(report.ok ? "ok" : "FAILED") (\(report.checks.count) checks)")
        guard mintedUnits == expectedUnits else { throw ValidationError("minted units \(mintedUnits), expected \(expectedUnits)") }
        guard report.ok else {
            throw ValidationError("reconciliation failed: " + report.failed.map { "\($0.name): \($0.detail)" }.joined(separator: "; "))
        }
    }

    func printTable(engine: DatabaseEngine, concurrencies: [Int], samples: [String: [Benchmark.Sample]]) {
        say(
            "| engine | database | workload | concurrency | req/s (median) | × health | slowest run × health | p50 ms | p99 ms "
                + "| slowest run p99 ms | max ms | non-2xx | server CPU µs/req | bytes/mint | provider CPU µs/req |")
        say("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for phase in phases {
            for c in concurrencies {
                let ceilings = samples[key(phase, "health", c)]!
                let ceiling = median(ceilings.map(\.perSecond))
                for name in workloads {
                    let runs = samples[key(phase, name, c)]!
                    let rate = median(runs.map(\.perSecond))
                    let bytesPerMint = runs.compactMap(\.bytesPerMint)
                    let providerCPU = runs.compactMap(\.providerCPUMicrosPerRequest)
                    // The slowest window: the run whose rate was the smallest share of its own run's ceiling.
                    let slowest = zip(runs, ceilings).min {
                        $0.0.perSecond * max(1, $1.1.perSecond) < $1.0.perSecond * max(1, $0.1.perSecond)
                    }
                    say(
                        "| \(engine.rawValue) | \(phase) | \(name) | \(c) | \(rate) | \(ratio(rate, ceiling)) "
                            + "| \(slowest.map { ratio($0.0.perSecond, $0.1.perSecond) } ?? "-") "
                            + "| \(ms(median(runs.map { $0.percentile(50) }))) | \(ms(median(runs.map { $0.percentile(99) }))) "
                            + "| \(ms(runs.map { $0.percentile(99) }.max() ?? 0)) "
                            + "| \(ms(median(runs.map { $0.latenciesMicros.last ?? 0 }))) | \(runs.map(\.nonSuccess).reduce(0, +)) "
                            + "| \(median(runs.map(\.serverCPUMicrosPerRequest))) | \(bytesPerMint.isEmpty ? "-" : String(median(bytesPerMint))) "
                            + "| \(providerCPU.isEmpty ? "-" : String(median(providerCPU))) |"
                    )
                }
            }
        }
    }

    /// The run's database on disk: for SQLite the file and its WAL, after a checkpoint that truncates the WAL (so
    /// that a growth is the rows', not the WAL's high-water mark); for PostgreSQL `pg_database_size`. Both include
    /// the provider stub's tables.
    func databaseBytes(_ context: RunContext) async throws -> Int64 {
        let config = try GatewayConfig(values: context.env)
        switch context.engine {
        case .sqlite:
            try await context.provider.store.checkpoint()
            return fileBytes(config.sqlitePath) + fileBytes(config.sqlitePath + "-wal")
        case .postgres:
            return try await withPostgres(config.postgres) { connection in
                let rows = try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT pg_database_size(current_database())"), logger: quietLogger())
                for try await bytes in rows.decode(Int64.self) { return bytes }
                return 0
            }
        }
    }

    /// What each table holds per mint at the end of a run (every transaction of the run is one mint or one redeem,
    /// so this slightly overstates a mint). The chain stub stands for the chain and the wallet stub for the provider:
    /// in production neither is in the gateway's database.
    func printBytesPerMint(_ context: RunContext) async throws {
        let gateway = context.provider
        // From the running totals: a recount would read every job.
        let checkpoint = try await gateway.store.ledgerCheckpoint()
        let mints = try await gateway.store.reconciliationSnapshot(.recent(ledgerFrom: checkpoint)).runningTotals?.mintJobs ?? 0
        guard mints > 0 else { return }
        try await gateway.store.checkpoint()
        var bytes = try await gateway.store.bytesByTable()
        // On SQLite the provider stub keeps a file of its own (see `freshDatabase`); its tables are counted there.
        if let path = gateway.config.providerServer.sqlitePath {
            bytes = bytes.filter { !$0.key.hasPrefix("wallet_stub_") }
            bytes.merge(try SQLiteStore.bytesByTable(path: path).filter { $0.key.hasPrefix("wallet_stub_") }) { $1 }
        }
        say("database bytes per mint by table (\(context.engine.rawValue), \(mints) mints):")
        for owner in ["core_", "chain_stub_", "wallet_stub_"] {
            let tables = bytes.filter { $0.key.hasPrefix(owner) }.sorted { $0.value > $1.value }
            let total = tables.reduce(0) { $0 + $1.value }
            say(
                "  \(owner)*: \(total / mints) B (" + tables.map { "\($0.key) \($0.value / mints)" }.joined(separator: ", ") + ")")
        }
    }

    func fileBytes(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }

    // MARK: - Backlog ingest and ledger verify, in this process

    /// A gateway in this process on a fresh database, with the demo user seeded.
    func seededGateway(_ engine: DatabaseEngine, scratch: BenchScratch) async throws -> Gateway {
        let env = try await freshDatabase(engine, scratch: scratch)
        let gateway = try await buildGateway(config: try GatewayConfig(values: env), logger: quietLogger())
        try await Benchmark.providerStore(gateway).openAccount(Demo.walletAccount)
        _ = try await gateway.bindDemoCustomer()
        return gateway
    }

    func bulkRows(engine: DatabaseEngine, scratch: BenchScratch) async throws {
        if backlog > 0 {
            var times: [Int64] = []
            var batches = ""
            for _ in 0..<runs {
                let gateway = try await seededGateway(engine, scratch: scratch)
                try await Benchmark.loadBacklog(gateway, count: backlog)
                let started = SystemClock().nowMicros()
                let result = try await withLocalProvider(gateway) { try await gateway.reconcileOnce() }
                times.append(SystemClock().nowMicros() - started)
                guard result.minted == backlog else { throw ValidationError("backlog: minted \(result.minted) of \(backlog)") }
                if let postgres = gateway.store as? PostgresStore {
                    // Refused one-call batches redo their work in a transaction: a figure that needs them is slower.
                    let counts = postgres.mintBatchCounts
                    batches =
                        "; the last run's mint batches: \(counts.oneCall) in one call, \(counts.refused) refused, "
                        + "\(counts.rolledBack) rolled back"
                }
            }
            say(
                "backlog (\(engine.rawValue)): \(backlog) lost webhooks minted by one reconciler pass in \(ms(median(times))) ms "
                    + "(median of \(runs)); peak RSS of this process \((Benchmark.peakRSSKiB(pid: getpid()) ?? 0) / 1024) MiB\(batches)")
        }
        if ledger > 0 {
            var times: [Int64] = []
            for _ in 0..<runs {
                let gateway = try await seededGateway(engine, scratch: scratch)
                try await Benchmark.loadLedger(gateway, count: ledger)
                let started = SystemClock().nowMicros()
                let verified = try await gateway.verifyLedger()
                times.append(SystemClock().nowMicros() - started)
                guard verified.firstBreak == nil, verified.entriesChecked == Int64(ledger) else {
                    throw ValidationError("ledger verify: \(verified.firstBreak.map { "\($0)" } ?? "\(verified.entriesChecked) entries")")
                }
            }
            say(
                "ledger verify (\(engine.rawValue)): \(ledger) entries in \(ms(median(times))) ms (median of \(runs)); "
                    + "peak RSS of this process \((Benchmark.peakRSSKiB(pid: getpid()) ?? 0) / 1024) MiB")
        }
    }

    // MARK: - Helpers

    func quietLogger() -> Logger {
        var logger = Logger(label: "pkr-bench")
        logger.logLevel = .error
        return logger
    }

    /// The environment of a server (or an in-process gateway) on a database of its own, which `scratch` removes
    /// when the bench ends.
    func freshDatabase(_ engine: DatabaseEngine, scratch: BenchScratch) async throws -> [String: String] {
        var env = [
            "PKR_WEBHOOK_PUSH": "0", "PKR_RECONCILE_INTERVAL_S": "0", "PKR_INVARIANT_CHECK_INTERVAL_S": "0", "LOG_LEVEL": "error",
            "PKR_DEMO_SEED_ON_START": "1",
            "DB_ENGINE": engine.rawValue, "MAX_SINGLE_MINT_PKR": "5000000.00",
        ]
        switch engine {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pkr-bench-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            scratch.directories.append(directory)
            env["SQLITE_PATH"] = directory.appendingPathComponent("bench.sqlite3").path
            // The provider is another system: its stub keeps its own file, so the two writers do not share a lock.
            env["PROVIDER_SQLITE_PATH"] = directory.appendingPathComponent("provider.sqlite3").path
        case .postgres:
            let settings = try GatewayConfig.load().postgres
            let name = "pkr_bench_" + Crypto.hex(Crypto.randomBytes(6))
            try await withPostgres(settings) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: quietLogger())
                scratch.postgresDatabases.append(name)
            }
            env.merge([
                "POSTGRES_HOST": settings.host, "POSTGRES_PORT": String(settings.port), "POSTGRES_USER": settings.user,
                "POSTGRES_PASSWORD": settings.password, "POSTGRES_DB": name,
            ]) { _, new in new }
        }
        return env
    }

    /// Runs `body` on a connection of its own to the database `settings` name, closed after, whether `body` threw
    /// or not.
    func withPostgres<T>(_ settings: PostgresSettings, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await PostgresConnection.connect(
            configuration: .init(
                host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                database: settings.database, tls: .disable),
            id: 1, logger: quietLogger())
        do {
            let value = try await body(connection)
            try await connection.close()
            return value
        } catch {
            try? await connection.close()
            throw error
        }
    }

    func median(_ values: [Int64]) -> Int64 {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }

    /// Bytes as MiB with one decimal, in integers.
    func mib(_ bytes: Int64) -> String {
        let tenths = bytes * 10 / 1_048_576
        return "\(tenths / 10).\(tenths % 10)"
    }

    func ms(_ micros: Int64) -> String { "\(micros / 1000).\(String(String(micros % 1000 + 1000).dropFirst()))" }

    func ratio(_ rate: Int64, _ ceiling: Int64) -> String {
        guard ceiling > 0 else { return "-" }
        let hundredths = rate * 100 / ceiling
        return "\(hundredths / 100).\(String(String(hundredths % 100 + 100).dropFirst()))"
    }
}

/// The databases a bench made. A 1M-entry ledger is hundreds of MiB, so they go when the bench ends, failed or not.
final class BenchScratch {
    var directories: [URL] = []
    var postgresDatabases: [String] = []

    func removeAll(logger: Logger) async {
        for directory in directories { try? FileManager.default.removeItem(at: directory) }
        directories.removeAll()
        guard !postgresDatabases.isEmpty, let settings = try? GatewayConfig.load().postgres else { return }
        guard
            let connection = try? await PostgresConnection.connect(
                configuration: .init(
                    host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                    database: settings.database, tls: .disable),
                id: 1, logger: logger)
        else { return }
        // FORCE ends the connections this process's own gateways still hold on them.
        for name in postgresDatabases {
            _ = try? await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: logger)
        }
        postgresDatabases.removeAll()
        try? await connection.close()
    }
}

/// A `pkr serve` (or `pkr provider serve`) child on a loopback port.
final class BenchServer {
    let port: Int
    let healthPath: String
    let process = Process()
    var pid: Int32 { process.processIdentifier }

    init(binary: String, arguments: [String], port: Int, healthPath: String = "/api/health", environment: [String: String]) throws {
        self.port = port
        self.healthPath = healthPath
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        env["PORT"] = String(port)
        env["HOST"] = "127.0.0.1"
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.environment = env
        try process.run()
    }

    func waitUntilUp() async throws -> Bool {
        for _ in 0..<400 {
            if let sample = try? await Benchmark.drive(port: port, requests: Benchmark.gets(healthPath, count: 1), concurrency: 1),
                sample.okCount == 1
            {
                return true
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// SIGTERM, then SIGKILL if it has not exited within ten seconds, so that no child outlives the bench (whose
    /// scratch removal then deletes its database).
    func stop() {
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for attempt in 1...220 {
            if waitpid(pid, &status, WNOHANG) != 0 { return }
            if attempt == 200 { kill(pid, SIGKILL) }
            usleep(50_000)
        }
    }
}

enum ServerSocketProbe {
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw ValidationError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Writes a line at once (unbuffered), so each figure appears as soon as it is known, even in a file.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
