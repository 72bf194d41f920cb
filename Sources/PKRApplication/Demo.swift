import PKRCore

/// The seed's demo customer and wallet, which demo mode creates and the seed's walkthrough uses.
public enum Demo {
    public static let walletAccount = "WALLET-001"
    public static let email = "demo@pkr.local"
    public static let displayName = "Demo User"
    public static var customer: CustomerDraft { CustomerDraft(email: email, displayName: displayName, walletAccount: walletAccount) }
}

extension Gateway {
    /// Opens the demo wallet at the provider and creates the demo customer bound to it (both idempotent).
    public func seedDemo() async throws -> Customer {
        try await provider.openAccount(Demo.walletAccount)
        return try await bindDemoCustomer()
    }

    /// Creates the demo customer alone: at start-up, before this process answers HTTP, when the provider mounted here
    /// has opened the demo wallet itself.
    package func bindDemoCustomer() async throws -> Customer {
        try await store.createCustomer(Demo.customer)
    }
}
