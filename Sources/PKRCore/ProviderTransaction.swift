import Foundation

public enum TransactionDirection: String, Sendable, Codable, Equatable {
    case credit
    case debit
}

public enum TransactionStatus: String, Sendable, Codable, Equatable {
    case settled
    case pending
    case failed
}

/// One movement of PKR on a provider wallet, as the provider reports it (by webhook or by listing).
public struct ProviderTransaction: Sendable, Equatable {
    public var providerTxID: String
    public var account: String
    public var direction: TransactionDirection
    public var amountPaisa: Int64
    public var status: TransactionStatus
    public var occurredAtMicros: Int64
    public var memo: String
    /// For payouts: the gateway's burn job that asked for it.
    public var reference: String?

    public init(
        providerTxID: String, account: String, direction: TransactionDirection, amountPaisa: Int64,
        status: TransactionStatus, occurredAtMicros: Int64, memo: String, reference: String? = nil
    ) {
        precondition(amountPaisa > 0, "a provider transaction moves a positive amount")
        self.providerTxID = providerTxID
        self.account = account
        self.direction = direction
        self.amountPaisa = amountPaisa
        self.status = status
        self.occurredAtMicros = occurredAtMicros
        self.memo = memo
        self.reference = reference
    }

    /// The fields that identify the money moved; a redelivery that changes any of them is a conflict.
    public func differingFields(from other: ProviderTransaction) -> [String] {
        var fields: [String] = []
        if amountPaisa != other.amountPaisa { fields.append("amount_pkr") }
        if account != other.account { fields.append("account") }
        if direction != other.direction { fields.append("direction") }
        return fields
    }
}

/// The webhook payload: parsing (receiver) and encoding (sender) of one event.
public enum WebhookEvent {
    public static let providerTxIDBytesMax = 128
    public static let accountBytesMax = 64
    public static let memoCharactersMax = 500

    private struct Payload: Codable {
        var type: String?
        var provider_tx_id: String?
        var account: String?
        var direction: String?
        var amount_pkr: String?
        var status: String?
        var occurred_at: String?
        var memo: String?
        var metadata: Metadata?
    }

    private struct Metadata: Codable {
        var reference: String?
    }

    public static func encode(_ tx: ProviderTransaction) -> [UInt8] {
        let payload = Payload(
            type: "wallet.\(tx.direction.rawValue)", provider_tx_id: tx.providerTxID, account: tx.account,
            direction: tx.direction.rawValue, amount_pkr: Money.formatPaisa(tx.amountPaisa), status: tx.status.rawValue,
            occurred_at: Timestamp.format(micros: tx.occurredAtMicros), memo: tx.memo,
            metadata: Metadata(reference: tx.reference))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain strings into JSON cannot fail.
        return Array(try! encoder.encode(payload))
    }

    /// Parses and validates a payload: 400-class errors for shape, 422 for the amount.
    public static func parse(_ body: [UInt8]) throws(GatewayError) -> ProviderTransaction {
        let root = try JSONBody.object(body)
        // Every field's type is checked before any field's value, so a wrongly typed field is named first.
        var metadata = root["metadata"]
        switch metadata {
        case nil, .null?: metadata = nil
        case .object?: break
        default: throw .invalidField("metadata", "expected an object")
        }
        let payload = Payload(
            type: try JSONBody.text(root, "type"), provider_tx_id: try JSONBody.text(root, "provider_tx_id"),
            account: try JSONBody.text(root, "account"), direction: try JSONBody.text(root, "direction"),
            amount_pkr: try JSONBody.text(root, "amount_pkr"), status: try JSONBody.text(root, "status"),
            occurred_at: try JSONBody.text(root, "occurred_at"), memo: try JSONBody.text(root, "memo"),
            metadata: try metadata.map { value throws(GatewayError) in
                Metadata(reference: try JSONBody.text(value, "reference", path: "metadata.reference"))
            })
        guard let providerTxID = payload.provider_tx_id else { throw .missingField("provider_tx_id") }
        guard isIdentifier(providerTxID, bytesMax: providerTxIDBytesMax) else {
            throw .invalidField("provider_tx_id", "1 to \(providerTxIDBytesMax) characters of A-Z a-z 0-9 _ . : -")
        }
        guard let account = payload.account else { throw .missingField("account") }
        guard isIdentifier(account, bytesMax: accountBytesMax) else {
            throw .invalidField("account", "1 to \(accountBytesMax) characters of A-Z a-z 0-9 _ . : -")
        }
        guard let directionText = payload.direction else { throw .missingField("direction") }
        guard let direction = TransactionDirection(rawValue: directionText) else {
            throw .invalidField("direction", "must be 'credit' or 'debit'")
        }
        if let type = payload.type, type != "wallet.\(direction.rawValue)" {
            throw .invalidField("type", "must be 'wallet.\(direction.rawValue)' for a \(direction.rawValue)")
        }
        guard let amountText = payload.amount_pkr else { throw .missingField("amount_pkr") }
        let amountPaisa: Int64
        do { amountPaisa = try Money.parsePaisa(amountText) } catch { throw .invalidAmount(field: "amount_pkr", error) }
        guard let statusText = payload.status else { throw .missingField("status") }
        guard let status = TransactionStatus(rawValue: statusText) else {
            throw .invalidField("status", "must be 'settled', 'pending' or 'failed'")
        }
        guard let occurredText = payload.occurred_at else { throw .missingField("occurred_at") }
        guard let occurredAtMicros = Timestamp.parse(occurredText) else {
            throw .invalidField("occurred_at", "must be an RFC 3339 timestamp")
        }
        let memo = payload.memo ?? ""
        guard isValidMemo(memo) else { throw .invalidField("memo", memoRule) }
        if let reference = payload.metadata?.reference, !isIdentifier(reference, bytesMax: providerTxIDBytesMax) {
            throw .invalidField("metadata.reference", "1 to \(providerTxIDBytesMax) characters of A-Z a-z 0-9 _ . : -")
        }
        return ProviderTransaction(
            providerTxID: providerTxID, account: account, direction: direction,
            amountPaisa: amountPaisa, status: status, occurredAtMicros: occurredAtMicros,
            memo: memo, reference: payload.metadata?.reference)
    }

    public static let memoBytesMax = 2000
    public static let memoRule =
        "at most \(memoCharactersMax) Unicode code points (\(memoBytesMax) bytes of UTF-8), no control characters but tab and line breaks"

    /// Free text that every store keeps byte for byte: bounded in code points and bytes (one character can be
    /// many bytes), and without control characters other than tab and line breaks (PostgreSQL refuses NUL in
    /// text; terminals misread the rest).
    public static func isValidMemo(_ memo: String) -> Bool {
        memo.utf8.count <= memoBytesMax && memo.unicodeScalars.count <= memoCharactersMax
            && memo.unicodeScalars.allSatisfy { scalar in
                switch scalar.value {
                case 0x09, 0x0a, 0x0d: return true
                case 0x00...0x1f, 0x7f...0x9f: return false
                default: return true
                }
            }
    }

    public static func isIdentifier(_ text: String, bytesMax: Int) -> Bool {
        let bytes = text.utf8
        guard !bytes.isEmpty, bytes.count <= bytesMax else { return false }
        return bytes.allSatisfy { b in
            (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
                || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") || b == UInt8(ascii: ".") || b == UInt8(ascii: ":")
        }
    }
}

/// Reads request bodies as JSON, and turns what is wrong with them into the typed errors clients see.
public enum JSONBody {
    public static let emptyDetail = "the body is empty; send a JSON object"

    /// Reads `body` with the strict `JSONReader` and requires an object at the top.
    public static func object(_ body: [UInt8]) throws(GatewayError) -> JSONReader.Value {
        guard !body.isEmpty else { throw .invalidJSON(emptyDetail) }
        let root: JSONReader.Value
        do {
            root = try JSONReader.parse(body)
        } catch {
            throw .invalidJSON("malformed JSON: \(error.reason) (byte \(error.offset))")
        }
        guard case .object = root else { throw .invalidJSON("expected a JSON object") }
        return root
    }

    /// A string field: absent and `null` are both nil; any other type is refused.
    public static func text(_ object: JSONReader.Value, _ key: String, path: String? = nil) throws(GatewayError) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        default: throw .invalidField(path ?? key, "expected a string")
        }
    }

    public static func gatewayError(_ error: DecodingError) -> GatewayError {
        func path(_ context: DecodingError.Context, _ key: CodingKey? = nil) -> String {
            let keys = context.codingPath + (key.map { [$0] } ?? [])
            return keys.map(\.stringValue).joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            return .missingField(path(context, key))
        case .valueNotFound(_, let context):
            if context.codingPath.isEmpty { return .invalidJSON("expected a JSON object") }
            return .missingField(path(context))
        case .typeMismatch(let type, let context):
            if context.codingPath.isEmpty { return .invalidJSON("expected a JSON object") }
            return .invalidField(path(context), "expected \(type == String.self ? "a string" : "\(type)")")
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return .invalidJSON("malformed JSON") }
            return .invalidField(path(context), context.debugDescription)
        @unknown default:
            return .invalidJSON("malformed JSON")
        }
    }
}
