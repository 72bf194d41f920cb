/// Exact money: PKR amounts in paisa (2 decimals) and token amounts in units (6 decimals).
/// Nothing here touches floating point; text is parsed digit by digit into `Int64`.
public enum Money {
    public static let tokenDecimals = 6
    public static let unitsPerPKR: Int64 = 1_000_000
    public static let unitsPerPaisa: Int64 = 10_000
    public static let paisaPerPKR: Int64 = 100
    /// Longest amount text accepted; anything longer cannot fit an `Int64` of paisa anyway.
    public static let amountTextBytesMax = 32

    /// Parses a positive PKR amount with at most two decimals ("1000", "1000.5", "1000.00") into paisa.
    public static func parsePaisa(_ text: String) throws(MoneyError) -> Int64 {
        let paisa = try parsePaisaDigits(text)
        guard paisa > 0 else { throw .notPositive }
        // Every paisa amount must also be representable in token units.
        guard paisa <= Int64.max / unitsPerPaisa else { throw .outOfRange }
        return paisa
    }

    /// Parses a balance: like `parsePaisa`, but zero is allowed and a sum of balances may exceed what one amount
    /// in token units can hold.
    public static func parseBalancePaisa(_ text: String) throws(MoneyError) -> Int64 {
        try parsePaisaDigits(text)
    }

    private static func parsePaisaDigits(_ text: String) throws(MoneyError) -> Int64 {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= amountTextBytesMax else {
            throw bytes.isEmpty ? .notANumber : .outOfRange
        }
        if bytes.first == UInt8(ascii: "-") { throw .notPositive }
        var whole: Int64 = 0
        var fraction: Int64 = 0
        var fractionDigits = 0
        var seenDot = false
        var wholeDigits = 0
        for byte in bytes {
            if byte == UInt8(ascii: ".") {
                guard !seenDot else { throw .notANumber }
                seenDot = true
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { throw .notANumber }
            let digit = Int64(byte - UInt8(ascii: "0"))
            if seenDot {
                fractionDigits += 1
                guard fractionDigits <= 2 else { throw .tooManyDecimals }
                fraction = fraction * 10 + digit
            } else {
                wholeDigits += 1
                let (shifted, o1) = whole.multipliedReportingOverflow(by: 10)
                let (added, o2) = shifted.addingReportingOverflow(digit)
                guard !o1, !o2 else { throw .outOfRange }
                whole = added
            }
        }
        // "." alone, "5." and ".5" are not amounts a person writes; refuse rather than guess.
        guard wholeDigits > 0, !(seenDot && fractionDigits == 0) else { throw .notANumber }
        if fractionDigits == 1 { fraction *= 10 }
        let (wholePaisa, o3) = whole.multipliedReportingOverflow(by: paisaPerPKR)
        let (paisa, o4) = wholePaisa.addingReportingOverflow(fraction)
        guard !o3, !o4 else { throw .outOfRange }
        return paisa
    }

    /// Parses a positive integer count of token units ("200000000").
    public static func parseUnits(_ text: String) throws(MoneyError) -> Int64 {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { throw .notANumber }
        guard bytes.count <= amountTextBytesMax else { throw .outOfRange }
        if bytes.first == UInt8(ascii: "-") { throw .notPositive }
        var value: Int64 = 0
        for byte in bytes {
            if byte == UInt8(ascii: ".") { throw .notAnInteger }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { throw .notANumber }
            let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
            let (added, o2) = shifted.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            guard !o1, !o2 else { throw .outOfRange }
            value = added
        }
        guard value > 0 else { throw .notPositive }
        return value
    }

    /// Checks an integer unit count received as a JSON number.
    public static func checkUnits(_ value: Int64) throws(MoneyError) -> Int64 {
        guard value > 0 else { throw .notPositive }
        return value
    }

    public static func paisaToUnits(_ paisa: Int64) throws(MoneyError) -> Int64 {
        let (units, overflow) = paisa.multipliedReportingOverflow(by: unitsPerPaisa)
        guard !overflow else { throw .outOfRange }
        return units
    }

    /// Converts units to paisa, refusing any remainder: money is never rounded away.
    public static func unitsToPaisa(_ units: Int64) throws(MoneyError) -> Int64 {
        guard units % unitsPerPaisa == 0 else { throw .notWholePaisa }
        return units / unitsPerPaisa
    }

    /// Formats paisa as "1000.00".
    public static func formatPaisa(_ paisa: Int64) -> String {
        let sign = paisa < 0 ? "-" : ""
        let magnitude = paisa.magnitude
        let whole = magnitude / UInt64(paisaPerPKR)
        let cents = magnitude % UInt64(paisaPerPKR)
        return "\(sign)\(whole).\(cents < 10 ? "0" : "")\(cents)"
    }
}

public enum MoneyError: Error, Equatable, Sendable {
    case notANumber
    case notAnInteger
    case tooManyDecimals
    case notPositive
    case outOfRange
    case notWholePaisa

    public var detail: String {
        switch self {
        case .notANumber: return "not a decimal number"
        case .notAnInteger: return "must be a whole number of units"
        case .tooManyDecimals: return "at most 2 decimal places are allowed"
        case .notPositive: return "must be greater than zero"
        case .outOfRange: return "too large"
        case .notWholePaisa: return "must be a whole number of paisa (a multiple of 10000 units)"
        }
    }
}
