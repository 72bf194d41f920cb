import ArgumentParser
import Foundation
import Glibc
import Logging
import PKRApplication
import PKRCore
import PKRGateway
import ServiceLifecycle

#if canImport(Glibc)
#endif

@main
struct PKR: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pkr",
        abstract: "The PKR stablecoin gateway: signed wallet webhooks in, tokens minted 1:1, redemptions paid out.",
        subcommands: [
            Serve.self, ProviderCommand.self, Migrate.self, Reconcile.self, LedgerCommand.self, Prune.self, Keys.self, WebhookCommand.self,
            Bench.self,
            Fuzz.self,
        ])
}

func loadConfig() throws -> GatewayConfig {
    do { return try GatewayConfig.load() } catch {
        throw ValidationError("\(error)")
    }
}

/// glibc gives busy threads malloc arenas of their own (up to eight per core), and each arena keeps what was freed
/// in it. Two arenas cut the server's peak RSS over a full benchmark run from 97 to 78 MiB at the same throughput.
/// An operator's own `MALLOC_ARENA_MAX` wins.
func limitMallocArenas() {
    #if canImport(Glibc)
    guard ProcessInfo.processInfo.environment["MALLOC_ARENA_MAX"] == nil,
        let mallopt = dlsym(dlopen(nil, RTLD_NOW), "mallopt")
    else { return }
    // `mallopt` and `M_ARENA_MAX` (-8) come from <malloc.h>, which the Glibc module does not import.
    let arenaMax: Int32 = -8
    _ = unsafeBitCast(mallopt, to: (@convention(c) (Int32, Int32) -> Int32).self)(arenaMax, 2)
    #endif
}

func makeLogger(_ config: GatewayConfig) -> Logger {
    makeLogger(format: config.logFormat, level: config.logLevel)
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway (and, in demo mode, the wallet stub and its dispatcher).")

    func run() async throws {
        limitMallocArenas()
        let config = try loadConfig()
        let logger = makeLogger(config)
        let built = try await buildApplication(config: config, logger: logger)
        logger.info(
            "pkr gateway starting",
            metadata: [
                "address": "\(config.host):\(config.port)", "db": "\(config.databaseEngine.rawValue)",
                "sqlite_path": "\(config.sqlitePath)", "demo_mode": "\(config.demoMode)", "webhook_push": "\(config.webhookPush)",
                "webhook_secrets": "\(config.webhookSecrets.map(\.fingerprint))", "dev_secret": "\(config.usesDevSecret)",
                "reconcile_interval_s": "\(config.reconcileIntervalSeconds)",
                "prune_older_than_s": "\(config.pruneOlderThanSeconds.map(String.init) ?? "off")",
                "log_format": "\(config.logFormat.rawValue)",
            ])
        try await built.application.runService()
        logger.info("pkr gateway stopped")
    }
}

struct ProviderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provider", abstract: "The wallet provider stub as its own service.", subcommands: [Serve.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the provider stub's API (PROVIDER_HOST:PROVIDER_PORT) and its webhook dispatcher.")

        func run() async throws {
            limitMallocArenas()
            let config = try loadConfig()
            let logger = makeLogger(config)
            let provider = try await buildProviderService(config: config, logger: logger)
            logger.info(
                "pkr provider starting",
                metadata: [
                    "address": "\(config.providerServer.host):\(config.providerServer.port)",
                    "db": "\(config.databaseEngine.rawValue)",
                    "webhook_url":
                        "\(config.webhookPush ? config.providerServer.webhookURL ?? config.providerServer.defaultWebhookURL : "off")",
                    "demo_mode": "\(config.demoMode)",
                ])
            let group = ServiceGroup(
                configuration: .init(services: provider.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            // The provider's database pool lives as long as the service runs.
            try await group.run()
            withExtendedLifetime(provider) {}
            logger.info("pkr provider stopped")
        }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or upgrade the database schema, then exit.")

    func run() async throws {
        let config = try loadConfig()
        _ = try await buildGateway(config: config, logger: makeLogger(config))
        print("migrations applied to \(config.databaseEngine == .sqlite ? config.sqlitePath : config.postgres.database)")
    }
}

struct Reconcile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one fallback reconciliation pass, print every invariant check, exit 1 if any fails.")

    @Flag(help: "Only check; do not pull the provider's transactions first.")
    var checkOnly = false
    @Flag(
        help: ArgumentHelp(
            "Recount every figure from the rows and walk the whole ledger from its first entry, confirming the running "
                + "totals and the ledger's verified checkpoint (without it, a check reads those and what is new since)."))
    var full = false

    func run() async throws {
        let config = try loadConfig()
        let gateway = try await buildGateway(config: config, logger: makeLogger(config))
        let checkOnly = self.checkOnly
        let full = self.full
        let report = try await withLocalProvider(gateway) {
            if !checkOnly, try await gateway.hasCustomer() {
                let line = ProgressLine("reconciler pass")
                let pass = try await gateway.reconcileOnce { result in
                    line.update(
                        "\(ProgressLine.count(result.ingested + result.duplicates)) transactions read, \(ProgressLine.count(result.minted)) minted"
                    )
                }
                line.finish()
                print("reconciler pass: ingested \(pass.ingested), minted \(pass.minted), conflicts \(pass.conflicts)")
            }
            return try await gateway.reconciliation(full: full)
        }
        print(report.text)
        if !report.ok { throw ExitCode(1) }
    }
}

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ledger", abstract: "Ledger tools.", subcommands: [Verify.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk the hash chain; report the first tampered or missing entry and exit 1.")

        func run() async throws {
            let config = try loadConfig()
            let gateway = try await buildGateway(config: config, logger: makeLogger(config))
            let started = ContinuousClock.now
            let line = ProgressLine("ledger verify")
            let result = try await gateway.verifyLedger { read in line.update("\(ProgressLine.count(read)) entries checked") }
            line.finish()
            let elapsed = ContinuousClock.now - started
            if let failure = result.firstBreak {
                print("ledger verify: FAILED after \(result.entriesChecked) good entries: \(failure)")
                throw ExitCode(1)
            }
            print(
                "ledger verify: ok, \(result.entriesChecked) entries, debits = credits = \(result.debitUnits) units, head \(result.head.lastHash) (\(elapsed))"
            )
        }
    }
}

struct Prune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete delivered outbox rows, inbound-log rows and idempotency records older than a window.",
        discussion: """
            Deletes in small batches, each its own transaction, so it can run beside live traffic. The ledger, the \
            provider transactions, the chain jobs and the quarantine are never pruned. A redeem replayed with an \
            idempotency key whose record was pruned is treated as a new request.
            """)

    @Option(help: "The retention window, such as 30d, 12h or 90m (at least 60s).")
    var olderThan: String

    @Option(help: "Rows per transaction (1 to 10000).")
    var batchRows = Gateway.pruneBatchRowsMax

    func validate() throws {
        guard RetentionWindow.seconds(olderThan) != nil else { throw ValidationError("--older-than: \(RetentionWindow.expected)") }
        guard (1...10_000).contains(batchRows) else { throw ValidationError("--batch-rows must be between 1 and 10000") }
    }

    func run() async throws {
        let config = try loadConfig()
        let gateway = try await buildGateway(config: config, logger: makeLogger(config))
        let line = ProgressLine("prune")
        let result = try await gateway.prune(olderThanSeconds: RetentionWindow.seconds(olderThan)!, batchRows: batchRows) { sofar in
            line.update("\(ProgressLine.count(sofar.rows)) rows deleted in \(sofar.batches) batches")
        }
        line.finish()
        print("prune: \(result.summary)")
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Webhook secrets.", subcommands: [New.self])

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a new random whsec_ secret (32 bytes).")

        @Option(help: "Key length in bytes (24 to 64).")
        var bytes = 32

        func validate() throws {
            guard (WebhookSecret.keyBytesMin...WebhookSecret.keyBytesMax).contains(bytes) else {
                throw ValidationError("--bytes must be between 24 and 64")
            }
        }

        func run() throws {
            print(WebhookSecret.generate(byteCount: bytes).encoded)
        }
    }
}
