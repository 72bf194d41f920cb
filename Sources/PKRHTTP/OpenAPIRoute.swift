import Foundation
import Hummingbird
import NIOCore
import PKRApplication

/// The API's OpenAPI 3.1 description (Sources/PKRHTTP/Resources/openapi.yaml), served as it is in the repo.
enum OpenAPIRoute {
    /// Read once at start-up: a build without its resource bundle stops there rather than on the first request.
    static let document: ByteBuffer = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"),
            let data = try? Data(contentsOf: url)
        else {
            preconditionFailure("openapi.yaml is missing from the PKRHTTP resource bundle")
        }
        return ByteBuffer(bytes: data)
    }()

    static func register(on router: Router<AppRequestContext>) {
        let document = Self.document
        router.get("openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: ResponseBody(byteBuffer: document))
        }
    }
}
