import Testing

@testable import PKRCore

private let jan2025Micros: Int64 = 1_735_689_600 * 1_000_000

@Suite struct TimestampTests {
    @Test func offsetsCannotLeaveTheFourDigitYears() {
        #expect(Timestamp.parse("0000-01-01T00:00:00+01:00") == nil)
        #expect(Timestamp.parse("9999-12-31T23:59:59-01:00") == nil)
        let first = try! #require(Timestamp.parse("0000-01-01T00:00:00Z"))
        let last = try! #require(Timestamp.parse("9999-12-31T23:59:59.999999Z"))
        #expect(Timestamp.format(micros: first) == "0000-01-01T00:00:00.000000Z")
        #expect(Timestamp.format(micros: last) == "9999-12-31T23:59:59.999999Z")
        #expect(Timestamp.parse("9999-12-31T23:59:59+01:00").map { Timestamp.format(micros: $0) } == "9999-12-31T22:59:59.000000Z")
    }

    @Test func formatsEpochAndFractions() {
        #expect(Timestamp.format(micros: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(Timestamp.format(micros: jan2025Micros + 123_456) == "2025-01-01T00:00:00.123456Z")
        #expect(Timestamp.format(micros: 951_782_400 * 1_000_000) == "2000-02-29T00:00:00.000000Z")
        #expect(Timestamp.format(micros: -1) == "1969-12-31T23:59:59.999999Z")
    }

    @Test(arguments: [
        "2025-01-01T00:00:00Z", "2025-01-01T00:00:00z", "2025-01-01t00:00:00Z", "2025-01-01 00:00:00Z",
        "2025-01-01T00:00:00.000000Z", "2025-01-01T05:00:00+05:00", "2024-12-31T19:00:00-05:00",
        "2025-01-01T05:30:00+05:30", "2025-01-01T00:00:00+00:00", "2025-01-01T00:00:00-00:00",
    ])
    func parsesTheSameInstant(text: String) {
        #expect(Timestamp.parse(text) == jan2025Micros)
    }

    @Test(
        arguments: [
            ("2025-01-01T00:00:00.5Z", 500_000), ("2025-01-01T00:00:00.123456Z", 123_456),
            ("2025-01-01T00:00:00.1234567Z", 123_456), ("2025-01-01T00:00:00.000001Z", 1),
            ("2025-01-01T00:00:00.999999999Z", 999_999), ("2025-01-01T05:00:00.25+05:00", 250_000),
        ] as [(String, Int64)])
    func parsesFractionalSeconds(text: String, fractionMicros: Int64) {
        #expect(Timestamp.parse(text) == jan2025Micros + fractionMicros)
    }

    @Test func parsesLeapDayAndYearEnd() {
        let leapDayNoon: Int64 = 1_709_208_000 * 1_000_000
        #expect(Timestamp.parse("2024-02-29T12:00:00Z") == leapDayNoon)
        #expect(Timestamp.parse("2024-12-31T23:59:59Z") == jan2025Micros - 1_000_000)
    }

    @Test(arguments: [
        "2025-13-01T00:00:00Z", "2025-00-01T00:00:00Z", "2025-02-30T00:00:00Z", "2025-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-01-00T00:00:00Z", "2025-01-01T24:00:00Z",
        "2025-01-01T00:60:00Z", "2025-01-01T00:00:61Z", "2025-01-01T00:00:00", "2025-01-01T00:00:00.123",
        "2025-01-01T00:00:00+0500", "2025-01-01T00:00:00+24:00", "2025-01-01T00:00:00+05:60",
        "2025-01-01T00:00:00.Z", "2025-01-01T00:00:00.1234567890Z", "2025-01-01T00:00:00ZZ",
        "2025-01-01X00:00:00Z", "2025/01/01T00:00:00Z", "25-01-01T00:00:00Z", "2025-1-1T00:00:00Z",
        "not a timestamp at all", "", "2025-01-01", "1735689600", " 2025-01-01T00:00:00Z",
        "2025-01-01T00:00:00Z ", "2025-01-01T00:00:00 Z",
    ])
    func rejectsMalformedText(text: String) {
        #expect(Timestamp.parse(text) == nil)
    }

    @Test func roundTripsRandomInstants() {
        let start: Int64 = 0
        let end: Int64 = 4_102_444_800 * 1_000_000  // 2100-01-01
        var rng = SystemRandomNumberGenerator()
        let samples = (0..<5_000).map { _ in Int64.random(in: start..<end, using: &rng) }
        for micros in samples + [start, end - 1] {
            let text = Timestamp.format(micros: micros)
            #expect(text.utf8.count == 27, "fixed width: \(text)")
            #expect(Timestamp.parse(text) == micros, "\(text)")
        }
    }

    @Test func textOrderMatchesTimeOrder() {
        var rng = SystemRandomNumberGenerator()
        let micros = (0..<500).map { _ in Int64.random(in: 0..<4_102_444_800_000_000, using: &rng) }.sorted()
        let texts = micros.map { Timestamp.format(micros: $0) }
        #expect(texts == texts.sorted())
    }
}
