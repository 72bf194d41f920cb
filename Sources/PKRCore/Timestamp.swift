/// Time as integer microseconds since the Unix epoch, and its RFC 3339 text form.
/// Stored timestamps use one fixed-width UTC form so that text order equals time order.
public enum Timestamp {
    public static let microsPerSecond: Int64 = 1_000_000

    /// A non-negative duration in microseconds as milliseconds with three decimals ("12.345"), without floating point.
    public static func millisText(micros: Int64) -> String {
        precondition(micros >= 0, "a duration is not negative")
        return "\(micros / 1000)." + String(String(micros % 1000 + 1000).dropFirst())
    }

    /// "2026-11-26T12:00:00.123456Z"
    public static func format(micros: Int64) -> String {
        let seconds = floorDiv(micros, microsPerSecond)
        let fraction = micros - seconds * microsPerSecond
        let days = floorDiv(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = civil(fromDays: days)
        guard (0...9999).contains(year) else {
            return pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T"
                + pad(secondOfDay / 3600, 2) + ":" + pad(secondOfDay % 3600 / 60, 2) + ":" + pad(secondOfDay % 60, 2)
                + "." + pad(fraction, 6) + "Z"
        }
        // Four-digit years, every one a store writes, go straight into one buffer: a mint formats several
        // timestamps, and the concatenation above allocated a string per part.
        return String(unsafeUninitializedCapacity: 27) { bytes in
            func put(_ value: Int64, digits: Int, at offset: Int) {
                var value = value
                for index in stride(from: offset + digits - 1, through: offset, by: -1) {
                    bytes[index] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
            }
            put(year, digits: 4, at: 0)
            bytes[4] = UInt8(ascii: "-")
            put(month, digits: 2, at: 5)
            bytes[7] = UInt8(ascii: "-")
            put(day, digits: 2, at: 8)
            bytes[10] = UInt8(ascii: "T")
            put(secondOfDay / 3600, digits: 2, at: 11)
            bytes[13] = UInt8(ascii: ":")
            put(secondOfDay % 3600 / 60, digits: 2, at: 14)
            bytes[16] = UInt8(ascii: ":")
            put(secondOfDay % 60, digits: 2, at: 17)
            bytes[19] = UInt8(ascii: ".")
            put(fraction, digits: 6, at: 20)
            bytes[26] = UInt8(ascii: "Z")
            return 27
        }
    }

    /// Parses RFC 3339 ("2025-01-01T00:00:00Z", "2025-01-01T05:00:00.5+05:00"); nil when malformed.
    public static func parse(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        guard b.count >= 20, b.count <= 40 else { return nil }
        func num(_ from: Int, _ count: Int) -> Int64? {
            guard from + count <= b.count else { return nil }
            var value: Int64 = 0
            for i in from..<(from + count) {
                guard b[i] >= 48, b[i] <= 57 else { return nil }
                value = value * 10 + Int64(b[i] - 48)
            }
            return value
        }
        guard let year = num(0, 4), b[4] == UInt8(ascii: "-"), let month = num(5, 2), b[7] == UInt8(ascii: "-"),
            let day = num(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
            let hour = num(11, 2), b[13] == UInt8(ascii: ":"), let minute = num(14, 2),
            b[16] == UInt8(ascii: ":"), let second = num(17, 2)
        else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year),
            hour <= 23, minute <= 59, second <= 60
        else { return nil }
        var index = 19
        var fractionMicros: Int64 = 0
        if index < b.count, b[index] == UInt8(ascii: ".") {
            index += 1
            var digits = 0
            while index < b.count, b[index] >= 48, b[index] <= 57 {
                if digits < 6 { fractionMicros = fractionMicros * 10 + Int64(b[index] - 48) }
                digits += 1
                index += 1
            }
            guard digits > 0, digits <= 9 else { return nil }
            for _ in digits..<max(digits, 6) { fractionMicros *= 10 }
        }
        guard index < b.count else { return nil }
        var offsetSeconds: Int64 = 0
        switch b[index] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard index + 1 == b.count else { return nil }
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard index + 6 == b.count, let oh = num(index + 1, 2), b[index + 3] == UInt8(ascii: ":"),
                let om = num(index + 4, 2), oh <= 23, om <= 59
            else { return nil }
            offsetSeconds = (oh * 3600 + om * 60) * (b[index] == UInt8(ascii: "+") ? 1 : -1)
        default:
            return nil
        }
        let days = days(fromCivil: year, month, day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + min(second, 59) - offsetSeconds
        let micros = seconds * microsPerSecond + fractionMicros
        // An offset can carry a year-0000 or year-9999 local time out of the four-digit years RFC 3339 can write.
        guard micros >= earliestMicros, micros < endMicros else { return nil }
        return micros
    }

    /// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z: the instants a four-digit UTC year can name.
    public static let earliestMicros = days(fromCivil: 0, 1, 1) * 86_400 * microsPerSecond
    public static let endMicros = days(fromCivil: 10_000, 1, 1) * 86_400 * microsPerSecond

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's days-from-civil and civil-from-days algorithms.
    private static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }
}
