import Logging
import PKRApplication

/// Writes exactly as swift-log's `StreamLogHandler` does, to standard error, but renders metadata only when a
/// message is written. `StreamLogHandler` renders it each time it is set, and the HTTP server sets a request id
/// on every request's logger: at the usual levels nothing is written per request, so that rendering was about
/// 2% of the server's CPU under load, spent on text nobody read.
public struct DeferredStreamLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var writer = StreamLogHandler.standardError(label: label, metadataProvider: metadataProvider)
        writer.logLevel = logLevel
        writer.metadata = metadata
        writer.log(event: event)
    }
}
