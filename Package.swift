// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "pkr-stablecoin",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pkr", targets: ["pkr"]),
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
    ],
    targets: [
        // OpenSSL's libcrypto: HMAC-SHA256, SHA-256 and constant-time comparison.
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // The pure core: money, ledger rules, webhook signatures. No I/O, no clock.
        .target(name: "PKRCore", dependencies: ["CLibCrypto"]),
        // The simulated wallet provider (PKR reserve) and its webhook outbox.
        .target(name: "WalletStub", dependencies: [
            "PKRCore", "SQLiteSupport",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ]),
        // SQLite's process-wide options, which only C can set (sqlite3_config is variadic).
        .target(name: "CSQLiteProcess", linkerSettings: [.linkedLibrary("sqlite3")]),
        // Binding and stepping SQLite statements without per-execution allocations, for the writer's hot paths.
        .target(name: "SQLiteSupport", dependencies: [
            "CSQLiteProcess",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
        ]),
        // The simulated token chain (balances and receipts).
        .target(name: "ChainStub", dependencies: [
            "PKRCore", "SQLiteSupport",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ]),
        // The gateway: stores, HTTP, services, composition root.
        .target(name: "PKRGateway", dependencies: [
            "PKRCore", "WalletStub", "ChainStub", "SQLiteSupport",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ], resources: [.copy("Resources/openapi.yaml")]),
        .executableTarget(name: "pkr", dependencies: [
            "PKRGateway",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ]),
        .testTarget(name: "PKRCoreTests", dependencies: ["PKRCore"], resources: [.copy("Vectors")]),
        .testTarget(name: "PKRGatewayTests", dependencies: [
            "PKRGateway",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    ]
)
