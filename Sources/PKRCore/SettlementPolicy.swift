/// The pure rules for a provider transaction that arrives (again): what it means against what is recorded,
/// and what its status asks the gateway to do. Stores execute the answers; they decide nothing themselves.
public enum SettlementPolicy {
    public enum Arrival: Equatable, Sendable {
        /// Not seen before: record it, then act on its status.
        case new
        /// Seen before and still pending; it has now settled or failed: update the status, then act on it.
        case advance(to: TransactionStatus)
        /// Seen before with the same content (or a stale "pending" after the final status): change nothing.
        case duplicate
        /// Seen before with different content: quarantine it, change nothing.
        case conflict(fields: [String])
    }

    public static func classify(recorded: ProviderTransaction?, incoming: ProviderTransaction) -> Arrival {
        guard let recorded else { return .new }
        let fields = recorded.differingFields(from: incoming)
        if !fields.isEmpty { return .conflict(fields: fields) }
        switch (recorded.status, incoming.status) {
        case (.pending, .settled), (.pending, .failed):
            return .advance(to: incoming.status)
        case (.settled, .failed), (.failed, .settled):
            // Reversing a final status moves money the other way; only an operator may do that.
            return .conflict(fields: ["status"])
        default:
            return .duplicate
        }
    }

    public enum Action: Equatable, Sendable {
        case mint(amountUnits: Int64)
        case holdAboveLimit
        case matchPayout
        /// A payout's debit failed before the money left: its redemption is released.
        case releasePayout
        case none
    }

    /// What a transaction in its current status asks for. Only a settled credit mints.
    public static func action(for tx: ProviderTransaction, maxMintUnits: Int64) throws(MoneyError) -> Action {
        switch (tx.direction, tx.status) {
        case (.credit, .settled):
            let units = try Money.paisaToUnits(tx.amountPaisa)
            return units <= maxMintUnits ? .mint(amountUnits: units) : .holdAboveLimit
        case (.debit, .settled): return .matchPayout
        case (.debit, .failed): return .releasePayout
        case (_, .pending), (.credit, .failed): return .none
        }
    }

    /// An operator's manual mint of a recorded transaction: only a settled credit within the ceiling.
    public static func manualMintUnits(for tx: ProviderTransaction, maxMintUnits: Int64) throws(GatewayError) -> Int64 {
        guard tx.direction == .credit else { throw .notMintable("'\(tx.providerTxID)' is a debit; only credits mint") }
        guard tx.status == .settled else {
            throw .notMintable("'\(tx.providerTxID)' is \(tx.status.rawValue); only settled credits mint")
        }
        let units: Int64
        do { units = try Money.paisaToUnits(tx.amountPaisa) } catch { throw .invalidAmount(field: "amount_pkr", error) }
        guard units <= maxMintUnits else {
            throw .amountAboveLimit(field: "amount_pkr", limit: Money.formatPaisa(maxMintUnits / Money.unitsPerPaisa))
        }
        return units
    }
}
