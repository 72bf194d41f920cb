/// The body of `POST /api/redeem`, read by the same strict JSON reader as a webhook: a key given twice, a trailing
/// comma or nesting past `JSONReader.depthMax` is refused rather than read one way here and another elsewhere.
/// Unknown fields are ignored.
public struct RedeemRequest: Equatable, Sendable {
    /// The amount, or why it is not one; the caller maps a failure to 422 with the field's name.
    public var amountUnits: Result<Int64, MoneyError>
    public var memo: String?
    /// The customer an operator redeems for (server to server); nil for the seed's current customer.
    public var userID: String?

    /// `amount_units` is a string of digits or a JSON integer. A number with a fraction or an exponent is not
    /// an integer amount, even when its value is whole: money is never read through a floating-point number.
    /// Every field's type is checked before any field's value, as a webhook's are.
    public static func parse(_ body: [UInt8]) throws(GatewayError) -> RedeemRequest {
        let root = try JSONBody.object(body)
        let amountUnits: Result<Int64, MoneyError>
        switch root["amount_units"] {
        case nil, .null?:
            throw .missingField("amount_units")
        case .string(let text)?:
            amountUnits = Result { () throws(MoneyError) in try Money.parseUnits(text) }
        case .number(let text)?:
            amountUnits = Result { () throws(MoneyError) in try Money.checkUnits(try integer(text)) }
        default:
            throw .invalidField("amount_units", "expected a string or an integer")
        }
        let userID = try JSONBody.text(root, "user_id")
        if let userID, !CustomerFields.isUserID(userID) { throw .invalidField("user_id", CustomerFields.userIDRule) }
        return RedeemRequest(amountUnits: amountUnits, memo: try JSONBody.text(root, "memo"), userID: userID)
    }

    /// A JSON number's text as an integer: digits with an optional minus sign, and nothing else.
    static func integer(_ text: String) throws(MoneyError) -> Int64 {
        let digits = text.utf8.first == UInt8(ascii: "-") ? text.utf8.dropFirst() : text.utf8[...]
        guard digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { throw .notAnInteger }
        guard let value = Int64(text) else { throw .outOfRange }
        return value
    }
}
