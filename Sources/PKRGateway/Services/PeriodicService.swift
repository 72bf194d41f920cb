import Logging
import PKRApplication
import ServiceLifecycle

/// Work done every interval until shutdown (the reconciler, retention). A pass that fails is logged and the next
/// one runs on time; shutdown interrupts the wait, never a pass.
struct PeriodicService: Service {
    let name: String
    let intervalSeconds: Int64
    let logger: Logger
    let pass: @Sendable () async throws -> Void

    init(name: String, intervalSeconds: Int64, logger: Logger, pass: @escaping @Sendable () async throws -> Void) {
        precondition(intervalSeconds > 0, "a periodic service needs a positive interval")
        self.name = name
        self.intervalSeconds = intervalSeconds
        self.logger = logger
        self.pass = pass
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(self.intervalSeconds)) }
            } catch {
                return
            }
            do {
                try await pass()
            } catch {
                logger.error("\(name) pass failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The fallback reconciler: pulls what the provider has that webhooks did not bring.
    static func reconciler(gateway: Gateway, intervalSeconds: Int64, logger: Logger) -> PeriodicService {
        PeriodicService(name: "reconciler", intervalSeconds: intervalSeconds, logger: logger) {
            guard (try? await gateway.hasCustomer()) == true else { return }
            let result = try await gateway.reconcileOnce()
            // A pass that found nothing is routine; one that healed something is what an operator looks for.
            logger.log(
                level: result.ingested > 0 || result.conflicts > 0 ? .info : .debug, "reconciler pass",
                metadata: [
                    "ingested": "\(result.ingested)", "healed_mints": "\(result.minted)", "conflicts": "\(result.conflicts)",
                ])
        }
    }

    /// Every reconciliation check, for `pkr_invariant_ok` and the log: a broken one is an error line. Kept apart
    /// from the reconciler because the checks verify the ledger entries since the last check, which a busy interval
    /// makes many, while a reconciler pass reads only the provider's listing after its cursor.
    static func invariantChecks(gateway: Gateway, intervalSeconds: Int64, logger: Logger) -> PeriodicService {
        PeriodicService(name: "invariant check", intervalSeconds: intervalSeconds, logger: logger) {
            guard (try? await gateway.hasCustomer()) == true else { return }
            let report = try await gateway.reconciliation()
            if !report.ok {
                logger.error(
                    "reconciliation check failed",
                    metadata: ["failed": "\(report.failed.map(\.name))", "detail": "\(report.failed.map(\.detail).prefix(3))"])
            }
        }
    }

    /// Retention on a schedule (`PKR_PRUNE_OLDER_THAN`): a prune every interval, in small batches.
    static func retention(gateway: Gateway, olderThanSeconds: Int64, intervalSeconds: Int64, logger: Logger) -> PeriodicService {
        precondition(olderThanSeconds > 0, "retention needs a positive window")
        return PeriodicService(name: "scheduled prune", intervalSeconds: intervalSeconds, logger: logger) {
            _ = try await gateway.prune(olderThanSeconds: olderThanSeconds)
        }
    }
}
