import Foundation
import Hummingbird
import NIOCore

/// The operator console (Sources/PKRHTTP/Resources/console): static files, read once at start-up. The page calls
/// the operator endpoints like any client, so it adds no authority of its own: outside demo mode it asks for the
/// operator token and sends it as a bearer token.
enum ConsoleRoute {
    struct File: Sendable {
        var contentType: String
        var bytes: ByteBuffer
    }

    static let files: [String: File] = {
        let types = ["html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"]
        var files: [String: File] = [:]
        for name in ["index.html", "console.js", "console.css"] {
            let parts = name.split(separator: ".")
            guard
                let url = Bundle.module.url(forResource: String(parts[0]), withExtension: String(parts[1]), subdirectory: "console"),
                let data = try? Data(contentsOf: url)
            else {
                preconditionFailure("console/\(name) is missing from the PKRHTTP resource bundle")
            }
            files[name] = File(contentType: types[String(parts[1])]!, bytes: ByteBuffer(bytes: data))
        }
        return files
    }()

    static func register(on router: Router<AppRequestContext>) {
        let files = Self.files
        @Sendable func serve(_ name: String) -> Response {
            let file = files[name]!
            return Response(
                status: .ok,
                headers: [
                    .contentType: file.contentType, .cacheControl: "no-store",
                    // The page loads only its own files and talks only to this origin.
                    .contentSecurityPolicy:
                        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
                    .xContentTypeOptions: "nosniff",
                ],
                body: ResponseBody(byteBuffer: file.bytes))
        }
        router.get("console") { _, _ in serve("index.html") }
        router.get("console/console.js") { _, _ in serve("console.js") }
        router.get("console/console.css") { _, _ in serve("console.css") }
    }
}
