// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "pkr-stablecoin",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pkr", targets: ["pkr"])
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // OpenSSL's libcrypto: HMAC-SHA256, SHA-256 and constant-time comparison.
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // The pure core: money, ledger rules, webhook signatures, what a provider transaction means. No I/O, no clock.
        .target(name: "PKRCore", dependencies: ["CLibCrypto"]),
        // The application: the use cases (Gateway), the settlement flows written once for every engine, and the store
        // and provider interfaces they run against.
        .target(
            name: "PKRApplication",
            dependencies: [
                "PKRCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // SQLite's process-wide options, which only C can set (sqlite3_config is variadic).
        .target(name: "CSQLiteProcess", linkerSettings: [.linkedLibrary("sqlite3")]),
        // Binding and stepping SQLite statements without per-execution allocations, for the writer's hot paths.
        .target(
            name: "SQLiteSupport",
            dependencies: [
                "CSQLiteProcess",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]),
        // A PostgreSQL pool that fails fast while the database is down.
        .target(
            name: "PostgresSupport",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The simulated token chain (balances and receipts), on either engine.
        .target(
            name: "ChainStub",
            dependencies: [
                "PKRCore", "SQLiteSupport",
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
        // The simulated wallet provider (PKR reserve) and its webhook outbox, on either engine.
        .target(
            name: "WalletStub",
            dependencies: [
                "PKRCore", "PKRApplication", "SQLiteSupport", "PostgresSupport",
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
        // The embedded engine: the store's primitives on SQLite, group commit, migrations.
        .target(
            name: "PKRSQLite",
            dependencies: [
                "PKRCore", "PKRApplication", "SQLiteSupport", "ChainStub", "WalletStub",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]),
        // The production engine: the store's primitives on PostgreSQL, the mint batch and burn fast paths, migrations.
        .target(
            name: "PKRPostgres",
            dependencies: [
                "PKRCore", "PKRApplication", "PostgresSupport", "ChainStub",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The gateway's side of the provider boundary: the provider's HTTP API as a `WalletProvider`.
        .target(
            name: "ProviderClient",
            dependencies: [
                "PKRCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // HTTP: routes, middleware, the one place errors become status codes, the OpenAPI document.
        .target(
            name: "PKRHTTP",
            dependencies: [
                "PKRCore", "PKRApplication",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ], resources: [.copy("Resources/openapi.yaml"), .copy("Resources/provider-openapi.yaml"), .copy("Resources/console")]),
        // The composition root: opens the engine, wires the stubs, the routes and the background services.
        .target(
            name: "PKRGateway",
            dependencies: [
                "PKRCore", "PKRApplication", "PKRSQLite", "PKRPostgres", "PKRHTTP", "WalletStub", "ChainStub", "ProviderClient",
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // Tools the server does not link: the benchmark and its load generator, and the fuzzer (the core alone).
        .target(
            name: "PKRBench",
            dependencies: [
                "PKRCore", "PKRApplication", "PKRGateway", "PKRHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .target(name: "PKRFuzz", dependencies: ["PKRCore"]),
        // The command line: serve, migrate, reconcile, ledger verify, keys, webhook tools, bench, fuzz.
        .executableTarget(
            name: "pkr",
            dependencies: [
                "PKRCore", "PKRApplication", "PKRGateway", "PKRPostgres", "PKRSQLite", "PKRBench", "PKRFuzz",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
        .testTarget(name: "PKRCoreTests", dependencies: ["PKRCore"], resources: [.copy("Vectors")]),
        .testTarget(
            name: "PKRGatewayTests",
            dependencies: [
                "PKRCore", "PKRApplication", "PKRSQLite", "PKRPostgres", "PKRHTTP", "PKRGateway", "PKRBench", "PKRFuzz",
                "WalletStub", "ChainStub", "ProviderClient", "PostgresSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
    ]
)
