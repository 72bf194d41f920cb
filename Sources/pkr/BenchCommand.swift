import ArgumentParser
import Foundation
import Logging
import PKRApplication
import PKRBench
import PKRCore
import PKRGateway
import PKRPostgres
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
        name: .customLong("server-env"),
        help: "KEY=VALUE for the server under test, after the bench's own settings (repeatable), e.g. PKR_METRICS=0.")
    var serverEnvironment: [String] = []

    func validate() throws {
        for pair in serverEnvironment where !pair.contains("=") { throw ValidationError("--server-env needs KEY=VALUE, got \(pair)") }
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

    func httpRows(engine: DatabaseEngine, binary: String, concurrencies: [Int], scratch: BenchScratch) async throws {
        let workloads = ["health", "webhook mint", "redeem", "balance"]
        var samples: [String: [Benchmark.Sample]] = [:]
        var peakRSS: Int64 = 0
        for run in 0..<runs {
            let env = try await freshDatabase(engine, scratch: scratch)
            var serverEnv = env
            for pair in serverEnvironment {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                serverEnv[String(parts[0])] = String(parts[1])
            }
            let server = try BenchServer(binary: binary, environment: serverEnv)
            defer { server.stop() }
            guard try await server.waitUntilUp() else { throw ValidationError("the server did not start") }
            // This process plays the provider (deposits into the stub's reserve) and, at the end, the auditor.
            let provider = try await buildGateway(config: try GatewayConfig(values: env), logger: quietLogger())
            var mintedOK = 0
            let line = ProgressLine("bench \(engine.rawValue)")
            for c in concurrencies {
                let tag = "r\(run)c\(c)"
                line.update("run \(run + 1)/\(runs), concurrency \(c): health, webhook mint, redeem, balance")
                let health = try await Benchmark.drive(
                    port: server.port, requests: Benchmark.gets("/api/health", count: requests), concurrency: c, serverPID: server.pid)
                let deposits = try await Benchmark.signedDeposits(provider, count: requests, secret: try devSecret())
                let mints = try await Benchmark.drive(port: server.port, requests: deposits, concurrency: c, serverPID: server.pid)
                let redeems = try await Benchmark.drive(
                    port: server.port, requests: Benchmark.redeems(count: requests, tag: tag), concurrency: c, serverPID: server.pid)
                let balance = try await Benchmark.drive(
                    port: server.port, requests: Benchmark.gets("/api/balance", count: requests), concurrency: c, serverPID: server.pid)
                mintedOK += mints.okCount
                for (name, sample) in zip(workloads, [health, mints, redeems, balance]) {
                    samples["\(name)|\(c)", default: []].append(sample)
                }
            }
            line.finish()
            peakRSS = max(peakRSS, Benchmark.peakRSSKiB(pid: server.pid) ?? 0)
            // A 2xx means a committed mint: the database must hold exactly as many as were acknowledged.
            let mintedUnits = try await provider.store.reconciliationSnapshot().mintedUnits
            let check = mintedUnits == Int64(mintedOK) * 1_000_000 ? "ok" : "MISMATCH"
            say("run \(run + 1) (\(engine.rawValue)): mints in database \(mintedUnits / 1_000_000), 2xx answers \(mintedOK): \(check)")
        }
        say("")
        say("| engine | workload | concurrency | req/s (median) | × health | p50 ms | p99 ms | max ms | non-2xx | server CPU µs/req |")
        say("|---|---|---|---|---|---|---|---|---|---|")
        for c in concurrencies {
            let ceiling = median(samples["health|\(c)"]!.map(\.perSecond))
            for name in workloads {
                let runs = samples["\(name)|\(c)"]!
                let rate = median(runs.map(\.perSecond))
                say(
                    "| \(engine.rawValue) | \(name) | \(c) | \(rate) | \(ratio(rate, ceiling)) | \(ms(median(runs.map { $0.percentile(50) }))) "
                        + "| \(ms(median(runs.map { $0.percentile(99) }))) | \(ms(median(runs.map { $0.latenciesMicros.last ?? 0 }))) "
                        + "| \(runs.map(\.nonSuccess).reduce(0, +)) | \(median(runs.map(\.serverCPUMicrosPerRequest))) |")
            }
        }
        say("peak server RSS (\(engine.rawValue)): \(peakRSS / 1024) MiB")
        // Metrics' share of a mint: too small to see between two noisy runs, so measured on its own and set
        // against the server's CPU per mint in this run.
        let mintCPUMicros = median(samples["webhook mint|\(concurrencies.last!)"]!.map(\.serverCPUMicrosPerRequest))
        let observationNanos = ObservationCost.nanosPerMint()
        // Hundredths of a percent, in integers.
        let share = mintCPUMicros > 0 ? observationNanos * 10_000 / (mintCPUMicros * 1000) : 0
        say(
            "metrics and request id per webhook mint: \(observationNanos) ns in one thread, "
                + "\(share / 100).\(String(share % 100 + 100).dropFirst())% of the server's \(mintCPUMicros) µs of CPU per mint "
                + "at concurrency \(concurrencies.last!)")
        say("")
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

    func devSecret() throws -> WebhookSecret { try WebhookSecret(encoded: DevKeys.webhookSecret) }

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
        case .postgres:
            let settings = try GatewayConfig.load().postgres
            let name = "pkr_bench_" + Crypto.hex(Crypto.randomBytes(6))
            let connection = try await PostgresConnection.connect(
                configuration: .init(
                    host: settings.host, port: settings.port, username: settings.user, password: settings.password,
                    database: settings.database, tls: .disable),
                id: 1, logger: quietLogger())
            do {
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: quietLogger())
                scratch.postgresDatabases.append(name)
            } catch {
                try? await connection.close()
                throw error
            }
            try await connection.close()
            env.merge([
                "POSTGRES_HOST": settings.host, "POSTGRES_PORT": String(settings.port), "POSTGRES_USER": settings.user,
                "POSTGRES_PASSWORD": settings.password, "POSTGRES_DB": name,
            ]) { _, new in new }
        }
        return env
    }

    func median(_ values: [Int64]) -> Int64 {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
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

/// A `pkr serve` child on a free loopback port.
final class BenchServer {
    let port: Int
    let process = Process()
    var pid: Int32 { process.processIdentifier }

    init(binary: String, environment: [String: String]) throws {
        let socket = try ServerSocketProbe.freePort()
        port = socket
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        env["PORT"] = String(port)
        env["HOST"] = "127.0.0.1"
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve"]
        process.environment = env
        try process.run()
    }

    func waitUntilUp() async throws -> Bool {
        for _ in 0..<400 {
            if let sample = try? await Benchmark.drive(port: port, requests: Benchmark.gets("/api/health", count: 1), concurrency: 1),
                sample.okCount == 1
            {
                return true
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<200 where waitpid(process.processIdentifier, &status, WNOHANG) == 0 { usleep(50_000) }
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
