import Testing

@testable import PKRCore

/// Runs `body` and returns the typed error it throws, or nil when it succeeds.
private func moneyError(_ body: () throws(MoneyError) -> Int64) -> MoneyError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

@Suite struct ParsePaisaTests {
    @Test(
        arguments: [
            ("1000.00", 100_000), ("1000", 100_000), ("1000.5", 100_050), ("0.01", 1),
            ("0.10", 10), ("007.07", 707), ("9223372036854.77", 922_337_203_685_477),
        ] as [(String, Int64)])
    func parsesValidAmounts(text: String, paisa: Int64) throws {
        #expect(try Money.parsePaisa(text) == paisa)
    }

    @Test(arguments: ["", "abc", "1.2.3", "1e3", " 1", "1 ", "1.", ".5", ".", "+1", "1,000.00", "１", "1.-5"])
    func rejectsNonNumbers(text: String) {
        #expect(moneyError { () throws(MoneyError) in try Money.parsePaisa(text) } == .notANumber)
    }

    @Test(arguments: ["1.234", "0.001", "1.000"])
    func rejectsMoreThanTwoDecimals(text: String) {
        #expect(moneyError { () throws(MoneyError) in try Money.parsePaisa(text) } == .tooManyDecimals)
    }

    @Test(arguments: ["-1", "0", "0.00", "0.0", "000", "-0.01"])
    func rejectsZeroAndNegatives(text: String) {
        #expect(moneyError { () throws(MoneyError) in try Money.parsePaisa(text) } == .notPositive)
    }

    @Test(arguments: [
        "92233720368547758.08",
        "123456789012345678901234567890",
        "9223372036854775807",
        "92233720368547758.07",
        // One paisa above Int64.max / 10_000: representable in paisa, not in token units.
        "9223372036854.78",
        String(repeating: "9", count: 33),
    ])
    func rejectsAmountsOutOfRange(text: String) {
        #expect(moneyError { () throws(MoneyError) in try Money.parsePaisa(text) } == .outOfRange)
    }

    @Test func largestAcceptedAmountConvertsToUnits() throws {
        let paisa = try Money.parsePaisa("9223372036854.77")
        #expect(paisa == Int64.max / Money.unitsPerPaisa)
        #expect(try Money.paisaToUnits(paisa) == paisa * Money.unitsPerPaisa)
    }
}

@Suite struct UnitsTests {
    @Test func parsesWholeUnits() throws {
        #expect(try Money.parseUnits("200000000") == 200_000_000)
        #expect(try Money.parseUnits("9223372036854775807") == Int64.max)
    }

    @Test(
        arguments: [
            ("1.5", .notAnInteger), ("-5", .notPositive), ("0", .notPositive), ("12a", .notANumber),
            ("", .notANumber), ("12345678901234567890", .outOfRange), ("9223372036854775808", .outOfRange),
        ] as [(String, MoneyError)])
    func rejectsInvalidUnits(text: String, error: MoneyError) {
        #expect(moneyError { () throws(MoneyError) in try Money.parseUnits(text) } == error)
    }

    @Test func checkUnitsRequiresPositive() throws {
        #expect(try Money.checkUnits(1) == 1)
        #expect(moneyError { () throws(MoneyError) in try Money.checkUnits(0) } == .notPositive)
        #expect(moneyError { () throws(MoneyError) in try Money.checkUnits(-7) } == .notPositive)
    }

    @Test func unitsToPaisaRefusesRemainders() throws {
        #expect(try Money.unitsToPaisa(200_000_000) == 20_000)
        #expect(try Money.unitsToPaisa(10_000) == 1)
        #expect(moneyError { () throws(MoneyError) in try Money.unitsToPaisa(123) } == .notWholePaisa)
        #expect(moneyError { () throws(MoneyError) in try Money.unitsToPaisa(10_001) } == .notWholePaisa)
    }

    @Test func paisaToUnitsDetectsOverflow() throws {
        #expect(try Money.paisaToUnits(20_000) == 200_000_000)
        let limit = Int64.max / Money.unitsPerPaisa
        #expect(try Money.paisaToUnits(limit) == limit * 10_000)
        #expect(moneyError { () throws(MoneyError) in try Money.paisaToUnits(limit + 1) } == .outOfRange)
        #expect(moneyError { () throws(MoneyError) in try Money.paisaToUnits(Int64.max) } == .outOfRange)
    }
}

@Suite struct FormatPaisaTests {
    @Test(
        arguments: [
            (80_000, "800.00"), (5, "0.05"), (100_050, "1000.50"), (0, "0.00"), (10, "0.10"), (-1_234, "-12.34"),
            (Int64.max, "92233720368547758.07"), (Int64.min, "-92233720368547758.08"),
        ] as [(Int64, String)])
    func formats(paisa: Int64, text: String) {
        #expect(Money.formatPaisa(paisa) == text)
    }

    @Test func parseInvertsFormat() throws {
        var rng = SystemRandomNumberGenerator()
        let samples = (0..<5_000).map { _ in Int64.random(in: 1...1_000_000_000_000, using: &rng) }
        for paisa in samples + [1, 9, 10, 99, 100, 101, 1_000_000_000_000] {
            let text = Money.formatPaisa(paisa)
            #expect(try Money.parsePaisa(text) == paisa, "formatted as \(text)")
        }
    }
}
