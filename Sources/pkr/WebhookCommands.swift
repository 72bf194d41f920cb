import ArgumentParser
import Foundation
import PKRApplication
import PKRCore
import PKRGateway

struct WebhookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook", abstract: "Play the wallet provider: sign, send and verify webhooks.",
        subcommands: [Send.self, Sign.self, VerifyRequest.self])

    struct EventOptions: ParsableArguments {
        @Option(help: "A file holding the exact body to send (otherwise the body is built from the event options).")
        var bodyFile: String?
        @Option(help: "provider_tx_id (default: a new random TX- id).")
        var providerTxId: String?
        @Option(help: "Wallet account.")
        var account = "WALLET-001"
        @Option(help: "credit or debit.")
        var direction = "credit"
        @Option(help: "Amount in PKR, at most 2 decimals.")
        var amountPkr = "1000.00"
        @Option(help: "settled, pending or failed.")
        var status = "settled"
        @Option(help: "Memo.")
        var memo = "sent by pkr webhook"
        @Option(help: "The signing secret (whsec_...). Default: the first of PKR_WEBHOOK_SECRETS or the dev secret.")
        var secret: String?
        @Option(help: "A file whose first non-comment line is the signing secret.")
        var secretFile: String?

        func body() throws -> [UInt8] {
            if let bodyFile {
                guard let data = FileManager.default.contents(atPath: bodyFile) else { throw ValidationError("cannot read \(bodyFile)") }
                return Array(data)
            }
            guard let direction = TransactionDirection(rawValue: direction) else { throw ValidationError("--direction: credit or debit") }
            guard let status = TransactionStatus(rawValue: status) else { throw ValidationError("--status: settled, pending or failed") }
            let paisa: Int64
            do { paisa = try Money.parsePaisa(amountPkr) } catch { throw ValidationError("--amount-pkr: \(error.detail)") }
            let now = SystemClock().nowMicros()
            return WebhookEvent.encode(
                ProviderTransaction(
                    providerTxID: providerTxId ?? Identifiers.providerTxID(unixMillis: now / 1000), account: account,
                    direction: direction, amountPaisa: paisa, status: status, occurredAtMicros: now, memo: memo))
        }

        func signingSecret() throws -> WebhookSecret {
            var encoded = secret
            if let secretFile {
                guard let text = try? String(contentsOfFile: secretFile, encoding: .utf8) else {
                    throw ValidationError("cannot read \(secretFile)")
                }
                encoded = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                    .first { !$0.isEmpty && !$0.hasPrefix("#") }
            }
            if let encoded {
                do { return try WebhookSecret(encoded: encoded) } catch { throw ValidationError("secret: \(error)") }
            }
            return try loadConfig().webhookSecrets[0]
        }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign and POST one webhook, retrying 5xx and network errors.")

        @OptionGroup var event: EventOptions
        @Option(help: "Receiver URL.")
        var url = "http://127.0.0.1:8000/api/webhooks/wallet"
        @Option(help: "Retries after the first attempt (0 to 20).")
        var retries = 3
        @Option(help: "webhook-id to use (default: a new msg_ id). Reuse one to simulate a redelivery.")
        var id: String?

        func run() async throws {
            guard (0...20).contains(retries) else { throw ValidationError("--retries must be 0 to 20") }
            let body = try event.body()
            let result = try await WebhookSender.send(
                body: body, secret: try event.signingSecret(), url: url, retries: retries,
                id: id, nowSeconds: { SystemClock().nowMicros() / Timestamp.microsPerSecond })
            print("HTTP \(result.status.map(String.init) ?? "no response") after \(result.attempts) attempt(s)")
            print(result.responseBody)
            if !(result.status.map { (200..<300).contains($0) } ?? false) { throw ExitCode(1) }
        }
    }

    struct Sign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the signature headers and a ready curl command.")

        @OptionGroup var event: EventOptions
        @Option(help: "Receiver URL for the printed curl command.")
        var url = "http://127.0.0.1:8000/api/webhooks/wallet"
        @Option(help: "Where to write the body for curl's --data-binary.")
        var out = "webhook-body.json"
        @Option(help: "Unix seconds to sign with (default: now).")
        var timestamp: Int64?

        func run() throws {
            let body = try event.body()
            let signed = WebhookSender.sign(
                body: body, secret: try event.signingSecret(),
                timestampSeconds: timestamp ?? SystemClock().nowMicros() / Timestamp.microsPerSecond)
            if event.bodyFile == nil {
                guard FileManager.default.createFile(atPath: out, contents: Data(body)) else {
                    throw ValidationError("cannot write \(out)")
                }
            }
            for (name, value) in signed.headers { print("\(name): \(value)") }
            print("")
            print(WebhookSender.curlCommand(signed, url: url, bodyFile: event.bodyFile ?? out))
        }
    }

    struct VerifyRequest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify", abstract: "Check a captured delivery's signature; exit 1 if it is rejected.")

        @Option(help: "The body file exactly as received.")
        var bodyFile: String
        @Option(help: "webhook-id header.") var id: String?
        @Option(help: "webhook-timestamp header.") var timestamp: String?
        @Option(help: "webhook-signature header.") var signature: String?
        @Option(help: "X-Signature header (legacy mode).") var legacySignature: String?
        @Option(help: "Verify as of this Unix time instead of now.") var now: Int64?

        func run() throws {
            guard let data = FileManager.default.contents(atPath: bodyFile) else { throw ValidationError("cannot read \(bodyFile)") }
            let config = try loadConfig()
            let verifier = WebhookVerifier(
                secrets: config.webhookSecrets, toleranceSeconds: config.webhookToleranceSeconds,
                legacyKey: config.legacyWebhookKey)
            let headers = WebhookHeaders(id: id, timestamp: timestamp, signature: signature, legacySignature: legacySignature)
            switch verifier.verify(headers, body: Array(data), nowSeconds: now ?? SystemClock().nowMicros() / Timestamp.microsPerSecond) {
            case .success(let scheme): print("valid (\(scheme.rawValue))")
            case .failure(let reason):
                print("rejected: \(reason.rawValue)")
                throw ExitCode(1)
            }
        }
    }
}
