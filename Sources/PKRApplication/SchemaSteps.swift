/// The schema's migration steps, in the order they run. Both engines register exactly these, under these names
/// and in this order (`SQLiteSchema.steps`, `PostgresSchema.migrations`, checked as they migrate and by
/// SchemaRuleTests), so a database of either engine that has run a step holds the same rules as the other's.
///
/// Migrations are never edited once merged: change the schema by appending a step, with the same name on both
/// engines. A step one engine has nothing to do for is still registered there, empty, with a comment saying why.
package enum SchemaSteps {
    package static let names = [
        "v1-stub-tables",  // the wallet stub's and the chain stub's tables
        "v1-gateway-tables",  // the gateway's tables, with their keys, checks and indexes
        "v1-guards",  // rules a table cannot state for itself: triggers
        "v1-fast-paths",  // server-side functions a hot path calls in one round trip
        "v2-payouts",  // the provider's payouts (one per idempotency key and per reference); references indexed
        "v3-redemption-holds",  // redeemed tokens held at the redemption address until the payout ends
    ]

    /// Steps a database has applied that this history does not have: one migrated by a build from before the
    /// history started again at v1 (or by a newer build). Migrating it would fail halfway or leave it unlike the
    /// schema here, so migrations refuse it; such a database is recreated.
    package static func unknown(_ applied: some Sequence<String>) -> [String] {
        applied.filter { !names.contains($0) }.sorted()
    }
}

/// A database recorded migration steps this build does not know.
package struct UnknownSchemaStepsError: Error, CustomStringConvertible {
    package var steps: [String]

    package init(steps: [String]) {
        self.steps = steps
    }

    package var description: String {
        "the database has applied migration steps this build does not know (\(steps.joined(separator: ", "))): "
            + "it was migrated by another schema history; recreate it"
    }
}
