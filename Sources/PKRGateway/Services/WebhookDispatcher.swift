import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PKRApplication
import PKRCore
import ServiceLifecycle
import Synchronization
import WalletStub

/// One signed attempt of a delivery, as it goes over the wire.
struct SignedWebhook: Sendable {
    var messageID: String
    var timestampSeconds: Int64
    var signature: String
    var body: [UInt8]
}

/// What came back from one attempt: the receiver's status, or why there was none.
struct WebhookAttemptResult: Sendable {
    var httpStatus: Int?
    var failure: String?
}

/// How a signed delivery reaches the receiver: HTTP in production; the simulation puts its own network here.
protocol WebhookTransport: Sendable {
    func send(_ webhook: SignedWebhook) async -> WebhookAttemptResult
    func shutdown() async throws
}

/// Delivers over HTTP with its own client, so that its timeouts and pool belong to the dispatcher alone. The client
/// is made on the first delivery: a transport built but never run owns nothing that needs shutting down.
final class HTTPWebhookTransport: WebhookTransport {
    static let responseBytesMax = 64 * 1024

    private let client = Mutex<HTTPClient?>(nil)
    let timeoutMillis: Int64
    let target: @Sendable () -> String

    init(timeoutMillis: Int64, target: @escaping @Sendable () -> String) {
        self.timeoutMillis = timeoutMillis
        self.target = target
    }

    private var httpClient: HTTPClient {
        client.withLock { client in
            if let client { return client }
            let made = WebhookHTTPClient.make(timeoutMillis: timeoutMillis)
            client = made
            return made
        }
    }

    func send(_ webhook: SignedWebhook) async -> WebhookAttemptResult {
        var request = HTTPClientRequest(url: target())
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "user-agent", value: "pkr-wallet-stub/1")
        request.headers.add(name: "webhook-id", value: webhook.messageID)
        request.headers.add(name: "webhook-timestamp", value: String(webhook.timestampSeconds))
        request.headers.add(name: "webhook-signature", value: webhook.signature)
        request.body = .bytes(ByteBuffer(bytes: webhook.body))
        do {
            let response = try await httpClient.execute(request, timeout: .milliseconds(timeoutMillis))
            _ = try? await response.body.collect(upTo: Self.responseBytesMax)
            return WebhookAttemptResult(httpStatus: Int(response.status.code), failure: nil)
        } catch {
            return WebhookAttemptResult(httpStatus: nil, failure: String(describing: error).prefix(300).description)
        }
    }

    func shutdown() async throws {
        let made = client.withLock { client in
            defer { client = nil }
            return client
        }
        try await made?.shutdown()
    }
}

/// The wallet stub's sender: drains the outbox, signs every attempt afresh (same `webhook-id`, new timestamp),
/// retries on the configured schedule with jitter, and parks a delivery as dead after the last attempt.
final class WebhookDispatcher: Service, Sendable {
    static let batchSizeMax = 32
    static let idleWaitMillis: Int64 = 1000
    static let pausedWaitMillis: Int64 = 50
    static let gatherMillis: Int64 = 2

    private let outbox: any OutboxStore
    private let signal: WakeSignal
    private let secret: WebhookSecret
    private let scheduleMillis: [Int64]
    private let clock: any GatewayClock
    private let transport: any WebhookTransport
    private let jitter: @Sendable (Int64) -> Int64
    /// A test control of the provider's: while true nothing is sent, and deliveries wait.
    private let paused: @Sendable () -> Bool
    private let logger: Logger

    init(
        outbox: any OutboxStore, signal: WakeSignal, secret: WebhookSecret, scheduleMillis: [Int64],
        clock: any GatewayClock, transport: any WebhookTransport,
        jitter: @escaping @Sendable (Int64) -> Int64 = WebhookDispatcher.jittered,
        paused: @escaping @Sendable () -> Bool = { false }, logger: Logger
    ) {
        self.paused = paused
        self.outbox = outbox
        self.signal = signal
        self.secret = secret
        self.scheduleMillis = scheduleMillis
        self.clock = clock
        self.transport = transport
        self.jitter = jitter
        self.logger = logger
    }

    func run() async throws {
        await dispatchUntilShutdown()
        // The transport is this service's own; it goes when the service stops.
        try await transport.shutdown()
    }

    private func dispatchUntilShutdown() async {
        let stopping = Atomic<Bool>(false)
        await withGracefulShutdownHandler {
            while !stopping.load(ordering: .relaxed) && !Task.isCancelled {
                do {
                    if paused() {
                        await signal.wait(timeoutMillis: Self.pausedWaitMillis)
                        continue
                    }
                    let due = try await outbox.claimDue(nowMicros: clock.nowMicros(), limit: Self.batchSizeMax)
                    if due.isEmpty {
                        await signal.wait(timeoutMillis: try await idleWait())
                        // Then a moment for the deliveries written just after the one that woke it: a claim, a send
                        // round and a record for each alone cost more than the wait, and a webhook is not a reply.
                        try? await Task.sleep(for: .milliseconds(Self.gatherMillis))
                        continue
                    }
                    // A batch is finished before shutdown is honoured, so no claimed delivery is abandoned mid-send.
                    // Its attempts are recorded together, in one transaction.
                    let attempts = await withTaskGroup(of: OutboxAttempt.self) { group in
                        for delivery in due { group.addTask { await self.attempt(delivery) } }
                        return await group.reduce(into: []) { $0.append($1) }
                    }
                    await record(attempts)
                } catch {
                    logger.error("webhook dispatcher pass failed", metadata: ["error": "\(error)"])
                    await signal.wait(timeoutMillis: Self.idleWaitMillis)
                }
            }
        } onGracefulShutdown: {
            stopping.store(true, ordering: .relaxed)
            self.signal.signal()
        }
    }

    private func idleWait() async throws -> Int64 {
        guard let next = try await outbox.nextDueMicros() else { return Self.idleWaitMillis }
        return min(Self.idleWaitMillis, max(1, (next - clock.nowMicros()) / 1000 + 1))
    }

    /// One attempt of one claimed delivery, and what happens next.
    func attempt(_ delivery: OutboxDelivery) async -> OutboxAttempt {
        let started = clock.nowMicros()
        let timestamp = started / Timestamp.microsPerSecond
        let result = await transport.send(
            SignedWebhook(
                messageID: delivery.messageID, timestampSeconds: timestamp,
                signature: WebhookSigner.signature(
                    secret: secret, id: delivery.messageID, timestampSeconds: timestamp,
                    body: delivery.payload),
                body: delivery.payload))
        let finished = clock.nowMicros()
        let delivered = result.httpStatus.map { (200..<300).contains($0) } ?? false
        let outcome: AttemptOutcome
        if delivered {
            outcome = .delivered
        } else if delivery.roundAttempts < scheduleMillis.count {
            outcome = .retry(atMicros: finished + jitter(scheduleMillis[delivery.roundAttempts]) * 1000)
        } else {
            outcome = .dead
        }
        if case .dead = outcome {
            logger.warning(
                "webhook delivery is dead after its last attempt; an operator can redeliver it",
                metadata: [
                    "delivery_id": "\(delivery.id)", "message_id": "\(delivery.messageID)", "provider_tx_id": "\(delivery.providerTxID)",
                    "attempts": "\(delivery.roundAttempts + 1)", "status": "\(result.httpStatus.map(String.init) ?? "none")",
                ])
        } else if !delivered {
            logger.notice(
                "webhook delivery attempt failed",
                metadata: [
                    "message_id": "\(delivery.messageID)", "provider_tx_id": "\(delivery.providerTxID)",
                    "attempt": "\(delivery.roundAttempts + 1)", "status": "\(result.httpStatus.map(String.init) ?? "none")",
                    "next": "\(outcome)",
                ])
        }
        return OutboxAttempt(
            delivery: delivery, httpStatus: result.httpStatus,
            error: result.failure ?? (delivered ? nil : "HTTP \(result.httpStatus ?? 0)"),
            durationMicros: finished - started, outcome: outcome, finishedAtMicros: finished)
    }

    /// Records attempts in the outbox; unrecorded, their deliveries are sent again after their lease.
    func record(_ attempts: [OutboxAttempt]) async {
        do {
            try await outbox.recordAttempts(attempts)
        } catch {
            logger.error(
                "could not record webhook attempts; they will be retried after their lease",
                metadata: ["count": "\(attempts.count)", "error": "\(error)"])
        }
    }

    /// ±20% jitter so that retries from many deliveries do not arrive in lockstep.
    static func jittered(_ millis: Int64) -> Int64 {
        guard millis > 0 else { return 0 }
        return millis * Int64.random(in: 80...120) / 100
    }
}

/// An HTTP client for webhook deliveries: a refused connection fails the attempt at once (the retry schedule,
/// not the connection pool, decides when to try again) and redirects are not followed.
public enum WebhookHTTPClient {
    public static func make(timeoutMillis: Int64) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .milliseconds(min(timeoutMillis, 5000)), read: .milliseconds(timeoutMillis))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}
