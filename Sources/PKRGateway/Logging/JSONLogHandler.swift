import Foundation
import Logging
import PKRApplication
import PKRCore
import Synchronization

/// One JSON object a line on standard error: `time`, `level`, `message`, `label`, `source`, then the metadata as
/// fields (a field never overwrites those five). Like `DeferredStreamLogHandler`, it renders only what is written.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let clock: any GatewayClock
    private let write: @Sendable (String) -> Void

    public init(
        label: String, clock: any GatewayClock = SystemClock(), metadataProvider: Logger.MetadataProvider? = nil,
        write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError
    ) {
        self.label = label
        self.clock = clock
        self.metadataProvider = metadataProvider
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var fields: [(String, JSONValue)] = [
            ("time", .string(Timestamp.format(micros: clock.nowMicros()))), ("level", .string(event.level.rawValue)),
            ("message", .string(event.message.description)), ("label", .string(label)), ("source", .string(event.source)),
        ]
        let reserved: Set<String> = ["time", "level", "message", "label", "source"]
        for key in merged.keys.sorted() where !reserved.contains(key) {
            fields.append((key, Self.json(merged[key]!)))
        }
        write(JSONText.object(fields) + "\n")
    }

    static func json(_ value: Logger.MetadataValue) -> JSONValue {
        switch value {
        case .string(let text): return .string(text)
        case .stringConvertible(let convertible): return .string(convertible.description)
        case .array(let items): return .array(items.map(json))
        case .dictionary(let dictionary): return .object(dictionary.keys.sorted().map { ($0, json(dictionary[$0]!)) })
        }
    }

    private static let standardErrorLock = Mutex<Void>(())

    /// Whole lines, so that lines from concurrent requests never interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        standardErrorLock.withLock { _ in
            var bytes = Array(line.utf8)
            bytes.withUnsafeMutableBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = Foundation.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
        }
    }
}

/// The process's logger as configured: `LOG_FORMAT` picks the handler, `LOG_LEVEL` the level.
public func makeLogger(label: String = "pkr", format: LogFormat, level: Logger.Level) -> Logger {
    var logger: Logger
    switch format {
    case .text: logger = Logger(label: label, factory: { DeferredStreamLogHandler(label: $0) })
    case .json: logger = Logger(label: label, factory: { JSONLogHandler(label: $0) })
    }
    logger.logLevel = level
    return logger
}
