import Foundation
import Hummingbird
import NIOCore
import PKRApplication

/// The APIs' OpenAPI 3.1 descriptions (Sources/PKRHTTP/Resources/openapi.yaml for the gateway,
/// provider-openapi.yaml for the provider), served as they are in the repo.
enum OpenAPIRoute {
    /// Read once at start-up: a build without its resource bundle stops there rather than on the first request.
    static let document = load("openapi")
    static let providerDocument = load("provider-openapi")

    static func load(_ name: String) -> ByteBuffer {
        guard let url = Bundle.module.url(forResource: name, withExtension: "yaml"), let data = try? Data(contentsOf: url) else {
            preconditionFailure("\(name).yaml is missing from the PKRHTTP resource bundle")
        }
        return ByteBuffer(bytes: data)
    }

    static func register<Context: RequestContext>(on router: Router<Context>, document: ByteBuffer = document) {
        router.get("openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: ResponseBody(byteBuffer: document))
        }
    }
}
