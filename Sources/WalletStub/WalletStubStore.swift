import PKRCore

/// The simulated provider's side of the house: what the demo endpoints and the reconciliation need beyond the
/// `WalletProvider` interface the gateway uses. One implementation per database engine.
public protocol WalletStubStore: WalletProvider {
    func openAccount(_ accountNo: String) async throws
    /// A deposit arrives at the provider; with push on, its webhook is queued in the same transaction.
    func credit(account: String, amountPaisa: Int64, memo: String) async throws -> ProviderTransaction
    /// Deposits whose webhooks are lost: recorded in one transaction and never pushed, so that only the polling
    /// reconciler finds them. For bulk loads (`pkr bench`) and tests of the fallback.
    func recordUnannouncedDeposits(account: String, amountsPaisa: [Int64], memo: String) async throws
    func balancePaisa(account: String) async throws -> Int64?
    /// The sum of all wallet balances: the PKR reserve backing the token supply.
    func reservePaisa() async throws -> Int64
}

/// The wallet stub's webhook outbox, drained by the dispatcher.
public protocol OutboxStore: Sendable {
    /// Claims due deliveries under a lease so that two dispatchers never send the same attempt at once.
    func claimDue(nowMicros: Int64, limit: Int) async throws -> [OutboxDelivery]
    func recordAttempt(_ delivery: OutboxDelivery, httpStatus: Int?, error: String?, durationMicros: Int64,
                       outcome: AttemptOutcome, nowMicros: Int64) async throws
    /// An operator's redelivery: due now with a fresh retry schedule. False if the id is unknown.
    func redeliver(id: Int64, nowMicros: Int64) async throws -> Bool
    /// When the next pending delivery falls due, so the dispatcher can sleep exactly that long.
    func nextDueMicros() async throws -> Int64?
    func list(limit: Int, beforeID: Int64?, state: String?) async throws -> [DeliveryView]
    func attempts(deliveryID: Int64) async throws -> [AttemptView]?
    func countByState() async throws -> [String: Int]
}

public enum OutboxLimits {
    public static let listLimitMax = 500
    /// How long a claimed delivery is hidden from other dispatchers; a crash mid-send is retried after it.
    public static let leaseMicros: Int64 = 30 * Timestamp.microsPerSecond
}
