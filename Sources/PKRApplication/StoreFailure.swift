import PKRCore

/// An engine's failure as the edge must see it. Engines make their drivers' errors conform, so that HTTP and the
/// command line classify failures without knowing which database is underneath.
public protocol StoreFailure: Error {
    var storeFailureKind: StoreFailureKind { get }
    /// What may be logged about the failure: codes and the server's message, never a bound value.
    var loggableDescription: String { get }
}

public enum StoreFailureKind: Sendable, Equatable {
    /// The database is down, restarting, busy or unreachable: retry shortly.
    case unavailable(detail: String)
    /// Deadlocked or conflicting even after the store's own retries: contention, not a fault.
    case contention
    /// Anything else: a genuine server fault.
    case fault
}
