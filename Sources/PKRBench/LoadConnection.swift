import NIOCore
import NIOHTTP1
import NIOPosix
import PKRApplication
import PKRCore
import PKRGateway

/// One keep-alive connection of the load generator: it sends its share of the requests one after another, each
/// as soon as the previous answer has ended, and records each answer's success and latency. It runs entirely on
/// its channel's event loop, so a request costs the load generator one write and one parse, and the server gets
/// the CPU that a general-purpose client's pooling and task hops would take on this two-core machine.
final class LoadConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    struct Outcome: Sendable {
        var ok: Bool
        var latencyMicros: Int64
    }

    private let requests: [Benchmark.Request]
    private let host: String
    private let done: EventLoopPromise<[Outcome]>
    private let clock = SystemClock()
    private var outcomes: [Outcome] = []
    private var next = 0
    private var begunMicros: Int64 = 0
    private var status: UInt = 0
    private var finished = false

    private init(requests: [Benchmark.Request], host: String, done: EventLoopPromise<[Outcome]>) {
        self.requests = requests
        self.host = host
        self.done = done
        outcomes.reserveCapacity(requests.count)
    }

    /// Opens one connection to `127.0.0.1:port` and sends `requests` over it; the future ends with one outcome per
    /// request, in order. A connection that fails or drops counts its unanswered requests as failures.
    static func run(port: Int, requests: [Benchmark.Request], group: any EventLoopGroup) -> EventLoopFuture<[Outcome]> {
        let loop = group.next()
        let done = loop.makePromise(of: [Outcome].self)
        guard !requests.isEmpty else {
            done.succeed([])
            return done.futureResult
        }
        loop.execute {
            // The handler belongs to its event loop: it is made there and only touched there.
            let handler = NIOLoopBound(LoadConnection(requests: requests, host: "127.0.0.1:\(port)", done: done), eventLoop: loop)
            ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(handler.value)
                    }
                }
                .connect(host: "127.0.0.1", port: port)
                .whenFailure { _ in handler.value.finish() }
        }
        return done.futureResult
    }

    func channelActive(context: ChannelHandlerContext) {
        send(context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status.code
        case .body:
            break
        case .end:
            outcomes.append(Outcome(ok: (200..<300).contains(status), latencyMicros: clock.nowMicros() - begunMicros))
            if next < requests.count {
                send(context: context)
            } else {
                finish()
                context.close(promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish()
        context.close(promise: nil)
    }

    private func send(context: ChannelHandlerContext) {
        let request = requests[next]
        next += 1
        var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path)
        head.headers.add(name: "host", value: host)
        for (name, value) in request.headers { head.headers.add(name: name, value: value) }
        head.headers.add(name: "content-length", value: String(request.body?.count ?? 0))
        status = 0
        begunMicros = clock.nowMicros()
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = request.body, !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// Ends the run once. If the connection ended early, the request in flight and every unsent one count as
    /// failures.
    private func finish() {
        guard !finished else { return }
        finished = true
        let elapsedMicros = begunMicros > 0 ? clock.nowMicros() - begunMicros : 0
        while outcomes.count < requests.count { outcomes.append(Outcome(ok: false, latencyMicros: elapsedMicros)) }
        done.succeed(outcomes)
    }
}
