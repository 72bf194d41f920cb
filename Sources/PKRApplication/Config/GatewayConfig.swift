import Foundation
import Logging
import PKRCore

/// Per-transaction ceilings in token units.
public struct MoneyLimits: Sendable {
    public var maxMintUnits: Int64
    public var maxPayoutUnits: Int64

    public init(maxMintUnits: Int64, maxPayoutUnits: Int64) {
        precondition(maxMintUnits > 0 && maxPayoutUnits > 0, "ceilings are positive")
        self.maxMintUnits = maxMintUnits
        self.maxPayoutUnits = maxPayoutUnits
    }
}

public enum DatabaseEngine: String, Sendable {
    case sqlite
    case postgres
}

/// The dev-only webhook secret, also in keys/dev-webhook-secret.txt. Public by design: never use it in production.
public enum DevKeys {
    public static let webhookSecret = "whsec_/XvKwvSyKGwMVfJ/Yt14xePVF64NrDvOFSOHd8hwkGM="
    /// The dev-only provider API key, also in keys/dev-provider-api-key.txt: demo mode's default on both sides.
    public static let providerAPIKey = "pk_dev_not_secret_provider_key"
}

/// `pkr provider serve`: the wallet provider stub as its own service.
public struct ProviderServerSettings: Sendable {
    public var host = "127.0.0.1"
    public var port = 8001
    /// nil: the gateway's SQLite file, so the seed's inspection queries see both sides.
    public var sqlitePath: String?
    /// The bearer key its clients must send.
    public var apiKey = DevKeys.providerAPIKey
    /// Where its outbox pushes; nil: a gateway on this machine's default port.
    public var webhookURL: String?
    /// nil: the gateway's `PKR_WEBHOOK_SECRETS`; the first signs.
    public var webhookSecrets: [WebhookSecret]?

    public init() {}

    public var defaultWebhookURL: String { "http://127.0.0.1:8000/api/webhooks/wallet" }
}

/// Everything the gateway reads from its environment, validated once at start-up.
public struct GatewayConfig: Sendable {
    public var host = "127.0.0.1"
    public var port = 8000
    public var databaseEngine = DatabaseEngine.sqlite
    public var sqlitePath = "./pkr.sqlite3"
    public var postgres = PostgresSettings()
    public var demoMode = true
    /// In demo mode, create the demo user and wallet at start-up so the walkthrough can begin at once.
    public var seedDemoOnStart = true
    public var allowedHosts: [String] = ["localhost", "127.0.0.1"]
    public var csrfTrustedOrigins: [String] = ["http://localhost:8000", "http://127.0.0.1:8000"]
    public var webhookSecrets: [WebhookSecret] = []
    public var webhookToleranceSeconds: Int64 = 300
    public var legacyWebhookKey: [UInt8]?
    public var webhookPush = true
    /// Where the wallet stub pushes; nil means this gateway's own receiver.
    public var webhookURL: String?
    public var webhookRetryScheduleMillis: [Int64] = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]
    public var webhookTimeoutMillis: Int64 = 10_000
    public var reconcileIntervalSeconds: Int64 = 60
    /// How often the server runs every reconciliation check for the metrics and the log; 0 = only when asked
    /// (summary, `pkr reconcile`). The checks read the whole history, so this is slower than the reconciler.
    public var invariantCheckIntervalSeconds: Int64 = 300
    public var limits = MoneyLimits(maxMintUnits: 5_000_000 * Money.unitsPerPKR, maxPayoutUnits: 5_000_000 * Money.unitsPerPKR)
    public var adminToken: String?
    public var webhookRateLimitPerSecond: Int?
    public var webhookAllowedCIDRs: [String] = []
    public var bodyBytesMax = 64 * 1024
    public var webhookBodyBytesMax = 64 * 1024
    /// How long a client may take to send a request body once its head has arrived.
    public var requestBodyTimeoutMillis: Int64 = 10_000
    /// How long a keep-alive connection may sit without a request before it is closed.
    public var idleTimeoutSeconds: Int64 = 60
    public var logLevel = Logger.Level.info
    public var logFormat = LogFormat.text
    /// `/metrics` and the counting behind it; off only to measure what they cost.
    public var metricsEnabled = true
    /// Retention: delivered outbox rows, inbound-log rows and idempotency records older than this are pruned in the
    /// background every `pruneIntervalSeconds`; nil keeps them forever.
    public var pruneOlderThanSeconds: Int64?
    public var pruneIntervalSeconds: Int64 = 3600
    /// The provider's base URL (without `/v1`); nil in demo mode runs the provider stub in this process, on a
    /// loopback port of its own.
    public var providerURL: String?
    public var providerAPIKey = DevKeys.providerAPIKey
    /// Each attempt of a call to the provider.
    public var providerTimeoutMillis: Int64 = 5_000
    public var providerServer = ProviderServerSettings()

    public init() {}

    public var usesDevSecret: Bool { webhookSecrets.contains { $0.encoded == DevKeys.webhookSecret } }

    public var ownWebhookURL: String { "http://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)/api/webhooks/wallet" }

    /// Reads the process environment over an optional `.env` file (the environment wins, as in the seed).
    public static func load(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        dotEnvPath: String? = ".env"
    ) throws -> GatewayConfig {
        var merged: [String: String] = [:]
        if let dotEnvPath, let text = try? String(contentsOfFile: dotEnvPath, encoding: .utf8) {
            merged = DotEnv.parse(text)
        }
        merged.merge(environment) { _, env in env }
        return try GatewayConfig(values: merged)
    }

    public init(values env: [String: String]) throws {
        func value(_ name: String) -> String? {
            guard let raw = env[name]?.trimmingCharacters(in: .whitespaces), !raw.isEmpty else { return nil }
            return raw
        }
        func integer(_ name: String, _ range: ClosedRange<Int64>) throws -> Int64? {
            guard let text = value(name) else { return nil }
            guard let number = Int64(text), range.contains(number) else {
                throw ConfigError.invalid(name, "an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return number
        }
        func flag(_ name: String) throws -> Bool? {
            guard let text = value(name)?.lowercased() else { return nil }
            switch text {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default: throw ConfigError.invalid(name, "1 or 0")
            }
        }
        func list(_ name: String) -> [String]? {
            value(name).map { $0.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init) }
        }
        func pkr(_ name: String) throws -> Int64? {
            guard let text = value(name) else { return nil }
            do { return try Money.paisaToUnits(Money.parsePaisa(text)) } catch {
                throw ConfigError.invalid(name, "a PKR amount such as 5000000.00 (\(error.detail))")
            }
        }

        if let host = value("HOST") { self.host = host }
        if let port = try integer("PORT", 0...65535) { self.port = Int(port) }
        if let engine = value("DB_ENGINE") {
            guard let parsed = DatabaseEngine(rawValue: engine.lowercased()) else {
                throw ConfigError.invalid("DB_ENGINE", "sqlite or postgres")
            }
            databaseEngine = parsed
        }
        if let path = value("SQLITE_PATH") { sqlitePath = path }
        postgres = try PostgresSettings(values: env)
        if let demo = try flag("PKR_DEMO_MODE") ?? flag("DEBUG") { demoMode = demo }
        if let seed = try flag("PKR_DEMO_SEED_ON_START") { seedDemoOnStart = seed }
        if let hosts = list("ALLOWED_HOSTS") { allowedHosts = hosts }
        if let origins = list("CSRF_TRUSTED_ORIGINS") { csrfTrustedOrigins = origins }

        var encodedSecrets: [String] = []
        if let secrets = value("PKR_WEBHOOK_SECRETS") {
            encodedSecrets += secrets.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
        }
        if let file = value("PKR_WEBHOOK_SECRET_FILE") {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ConfigError.invalid("PKR_WEBHOOK_SECRET_FILE", "a readable file")
            }
            encodedSecrets += text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        if encodedSecrets.isEmpty { encodedSecrets = [DevKeys.webhookSecret] }
        webhookSecrets = try encodedSecrets.enumerated().map { index, encoded in
            do { return try WebhookSecret(encoded: encoded) } catch {
                // Only the position is named: the secret itself never reaches a message.
                throw ConfigError.invalid("PKR_WEBHOOK_SECRETS", "secret #\(index + 1): \(error)")
            }
        }
        if let tolerance = try integer("PKR_WEBHOOK_TOLERANCE_S", 0...86_400) { webhookToleranceSeconds = tolerance }
        if let legacy = value("PKR_WEBHOOK_LEGACY_SECRET") {
            guard legacy.utf8.count >= 16 else { throw ConfigError.invalid("PKR_WEBHOOK_LEGACY_SECRET", "at least 16 bytes") }
            legacyWebhookKey = Array(legacy.utf8)
        }
        if let push = try flag("PKR_WEBHOOK_PUSH") { webhookPush = push }
        if let url = value("PKR_WEBHOOK_URL") {
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
                throw ConfigError.invalid("PKR_WEBHOOK_URL", "an http:// or https:// URL")
            }
            webhookURL = url
        }
        if let schedule = list("PKR_WEBHOOK_RETRY_SCHEDULE_MS") {
            let parsed = schedule.compactMap { Int64($0) }
            guard parsed.count == schedule.count, parsed.count <= 20, parsed.allSatisfy({ $0 >= 0 && $0 <= 86_400_000 }) else {
                throw ConfigError.invalid("PKR_WEBHOOK_RETRY_SCHEDULE_MS", "up to 20 comma-separated delays in milliseconds")
            }
            webhookRetryScheduleMillis = parsed
        }
        if let timeout = try integer("PKR_WEBHOOK_TIMEOUT_MS", 10...120_000) { webhookTimeoutMillis = timeout }
        if let interval = try integer("PKR_RECONCILE_INTERVAL_S", 0...86_400) { reconcileIntervalSeconds = interval }
        if let interval = try integer("PKR_INVARIANT_CHECK_INTERVAL_S", 0...86_400) { invariantCheckIntervalSeconds = interval }
        let maxMint = try pkr("MAX_SINGLE_MINT_PKR") ?? limits.maxMintUnits
        let maxPayout = try pkr("MAX_SINGLE_PAYOUT_PKR") ?? limits.maxPayoutUnits
        limits = MoneyLimits(maxMintUnits: maxMint, maxPayoutUnits: maxPayout)
        adminToken = value("PKR_ADMIN_TOKEN")
        if let token = adminToken, token.utf8.count < 16 {
            throw ConfigError.invalid("PKR_ADMIN_TOKEN", "at least 16 characters")
        }
        webhookRateLimitPerSecond =
            try integer("PKR_WEBHOOK_RATE_LIMIT_PER_S", 0...1_000_000).map(Int.init)
            ?? (demoMode ? 0 : 1000)
        if webhookRateLimitPerSecond == 0 { webhookRateLimitPerSecond = nil }
        if let cidrs = list("PKR_WEBHOOK_ALLOWED_CIDRS") {
            for cidr in cidrs where CIDR(cidr) == nil {
                throw ConfigError.invalid("PKR_WEBHOOK_ALLOWED_CIDRS", "CIDR blocks such as 127.0.0.0/8")
            }
            webhookAllowedCIDRs = cidrs
        }
        if let max = try integer("PKR_BODY_BYTES_MAX", 1024...16_777_216) { bodyBytesMax = Int(max) }
        if let max = try integer("PKR_WEBHOOK_BODY_BYTES_MAX", 1024...16_777_216) { webhookBodyBytesMax = Int(max) }
        if let millis = try integer("PKR_REQUEST_BODY_TIMEOUT_MS", 100...600_000) { requestBodyTimeoutMillis = millis }
        if let seconds = try integer("PKR_IDLE_TIMEOUT_S", 1...3600) { idleTimeoutSeconds = seconds }
        if let level = value("LOG_LEVEL") {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigError.invalid("LOG_LEVEL", "one of trace, debug, info, notice, warning, error, critical")
            }
            logLevel = parsed
        }
        if let enabled = try flag("PKR_METRICS") { metricsEnabled = enabled }
        if let format = value("LOG_FORMAT") {
            guard let parsed = LogFormat(rawValue: format.lowercased()) else { throw ConfigError.invalid("LOG_FORMAT", "text or json") }
            logFormat = parsed
        }
        if let window = value("PKR_PRUNE_OLDER_THAN") {
            guard let seconds = RetentionWindow.seconds(window) else {
                throw ConfigError.invalid("PKR_PRUNE_OLDER_THAN", RetentionWindow.expected)
            }
            pruneOlderThanSeconds = seconds
        }
        if let seconds = try integer("PKR_PRUNE_INTERVAL_S", 60...604_800) { pruneIntervalSeconds = seconds }

        func httpURL(_ name: String) throws -> String? {
            guard let url = value(name) else { return nil }
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil,
                parsed.query == nil
            else {
                throw ConfigError.invalid(name, "an http:// or https:// URL")
            }
            return url.hasSuffix("/") ? String(url.dropLast()) : url
        }
        func apiKey(_ name: String) throws -> String? {
            guard let key = value(name) else { return nil }
            guard key.utf8.count >= 16, key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                throw ConfigError.invalid(name, "at least 16 printable characters without spaces")
            }
            return key
        }
        providerURL = try httpURL("PKR_PROVIDER_URL")
        if let key = try apiKey("PKR_PROVIDER_API_KEY") { providerAPIKey = key }
        if let millis = try integer("PKR_PROVIDER_TIMEOUT_MS", 50...120_000) { providerTimeoutMillis = millis }
        if let host = value("PROVIDER_HOST") { providerServer.host = host }
        if let port = try integer("PROVIDER_PORT", 0...65535) { providerServer.port = Int(port) }
        providerServer.sqlitePath = value("PROVIDER_SQLITE_PATH")
        if let key = try apiKey("PROVIDER_API_KEY") { providerServer.apiKey = key }
        providerServer.webhookURL = try httpURL("PROVIDER_WEBHOOK_URL")
        if let secrets = value("PROVIDER_WEBHOOK_SECRETS") {
            providerServer.webhookSecrets = try secrets.split(whereSeparator: { $0 == " " || $0 == "\n" }).enumerated().map {
                index, encoded in
                do { return try WebhookSecret(encoded: String(encoded)) } catch {
                    throw ConfigError.invalid("PROVIDER_WEBHOOK_SECRETS", "secret #\(index + 1): \(error)")
                }
            }
        }
    }

    /// The secrets the provider signs with (the first) when it runs as its own service.
    public var providerWebhookSecrets: [WebhookSecret] { providerServer.webhookSecrets ?? webhookSecrets }

    /// Checks that only make sense once everything is read: production refuses demo shortcuts.
    public func validateForServing() throws {
        if !demoMode {
            if usesDevSecret { throw ConfigError.refused("the dev webhook secret is for demo mode only; set PKR_WEBHOOK_SECRETS") }
            if adminToken == nil { throw ConfigError.refused("PKR_ADMIN_TOKEN is required outside demo mode") }
            if providerURL == nil { throw ConfigError.refused("PKR_PROVIDER_URL is required outside demo mode") }
            if providerAPIKey == DevKeys.providerAPIKey {
                throw ConfigError.refused("the dev provider API key is for demo mode only; set PKR_PROVIDER_API_KEY")
            }
        }
    }

    /// The same for `pkr provider serve`.
    public func validateForProviderServing() throws {
        if !demoMode {
            if providerServer.apiKey == DevKeys.providerAPIKey {
                throw ConfigError.refused("the dev provider API key is for demo mode only; set PROVIDER_API_KEY")
            }
            if webhookPush && providerWebhookSecrets.contains(where: { $0.encoded == DevKeys.webhookSecret }) {
                throw ConfigError.refused("the dev webhook secret is for demo mode only; set PROVIDER_WEBHOOK_SECRETS")
            }
        }
    }
}

public enum LogFormat: String, Sendable {
    /// swift-log's readable lines.
    case text
    /// One JSON object a line: time, level, message and the metadata as fields.
    case json
}

/// A retention window such as `30d`, `12h`, `90m` or `3600s`: at least a minute, at most ten years.
public enum RetentionWindow {
    public static let expected = "a duration such as 30d, 12h, 90m or 3600s (at least 60s)"
    static let secondsMax: Int64 = 10 * 366 * 86_400

    public static func seconds(_ text: String) -> Int64? {
        guard let unit = text.last, let count = Int64(text.dropLast()), count > 0 else { return nil }
        let unitSeconds: Int64
        switch unit {
        case "s": unitSeconds = 1
        case "m": unitSeconds = 60
        case "h": unitSeconds = 3600
        case "d": unitSeconds = 86_400
        default: return nil
        }
        let (seconds, overflow) = count.multipliedReportingOverflow(by: unitSeconds)
        guard !overflow, seconds >= 60, seconds <= secondsMax else { return nil }
        return seconds
    }
}

public struct PostgresSettings: Sendable {
    public var database = "pkr_demo"
    public var user = "pkr_demo"
    public var password = "pkr_demo"
    public var host = "127.0.0.1"
    public var port = 5432

    public init() {}

    init(values env: [String: String]) throws {
        if let v = env["POSTGRES_DB"], !v.isEmpty { database = v }
        if let v = env["POSTGRES_USER"], !v.isEmpty { user = v }
        if let v = env["POSTGRES_PASSWORD"] { password = v }
        if let v = env["POSTGRES_HOST"], !v.isEmpty { host = v }
        if let v = env["POSTGRES_PORT"], !v.isEmpty {
            guard let p = Int(v), (1...65535).contains(p) else { throw ConfigError.invalid("POSTGRES_PORT", "a port number") }
            port = p
        }
    }
}

public enum ConfigError: Error, CustomStringConvertible {
    case invalid(String, String)
    case refused(String)

    public var description: String {
        switch self {
        case .invalid(let name, let expected): return "configuration: \(name) must be \(expected)"
        case .refused(let why): return "configuration refused: \(why)"
        }
    }
}

/// A `.env` file: `KEY=VALUE` lines; `#` comments, blank lines, an `export ` prefix and matching quotes are handled.
public enum DotEnv {
    public static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst("export ".count)).trimmingCharacters(in: .whitespaces) }
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            } else if let hash = value.range(of: " #") {
                value = value[..<hash.lowerBound].trimmingCharacters(in: .whitespaces)
            }
            if !key.isEmpty { out[key] = value }
        }
        return out
    }
}

/// An IPv4 or IPv6 CIDR block for the webhook receiver's allowlist.
public struct CIDR: Sendable {
    let network: [UInt8]
    let prefixBits: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let address = CIDR.parseAddress(String(first)) else { return nil }
        let bits = parts.count == 2 ? Int(parts[1]) : address.count * 8
        guard let bits, bits >= 0, bits <= address.count * 8 else { return nil }
        network = address
        prefixBits = bits
    }

    public func contains(_ addressText: String) -> Bool {
        guard let address = CIDR.parseAddress(addressText), address.count == network.count else { return false }
        var remaining = prefixBits
        for index in 0..<address.count where remaining > 0 {
            let take = min(8, remaining)
            let mask: UInt8 = take == 8 ? 0xff : ~(0xff >> UInt8(take))
            if address[index] & mask != network[index] & mask { return false }
            remaining -= take
        }
        return true
    }

    static func parseAddress(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
