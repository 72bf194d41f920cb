/// What the gateway needs from a wallet provider. The bundled stub implements it; a real provider adapter would too.
public protocol WalletProvider: Sendable {
    /// Transactions that occurred at or after `sinceMicros`, in provider order, after `cursor` (exclusive).
    func transactions(sinceMicros: Int64, after cursor: Int64, limit: Int) async throws -> ProviderPage
    /// Pays PKR out of a wallet. Idempotent per `reference`: asking twice pays once and returns the same transaction.
    func payout(account: String, amountPaisa: Int64, memo: String, reference: String) async throws -> ProviderTransaction
}

public struct ProviderPage: Sendable {
    public var transactions: [ProviderTransaction]
    /// Pass back as `cursor` to continue; equal to the input cursor when nothing new was found.
    public var nextCursor: Int64

    public init(transactions: [ProviderTransaction], nextCursor: Int64) {
        self.transactions = transactions
        self.nextCursor = nextCursor
    }
}

public enum ProviderError: Error, Equatable, Sendable {
    case unknownAccount(String)
    case insufficientFunds(account: String)
    case referenceConflict(String)
    case corruptRow(String)
}
