import Hummingbird
import NIOCore
import PKRApplication

public struct AppRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }

    /// Bodies are read explicitly with their own limits; this caps anything decoded implicitly.
    public var maxUploadSize: Int { 64 * 1024 }

    var sourceIP: String? { remoteAddress?.ipAddress }
}
