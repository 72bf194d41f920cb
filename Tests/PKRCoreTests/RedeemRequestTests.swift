import Testing

@testable import PKRCore

@Suite struct RedeemRequestTests {
    private func parse(_ text: String) throws(GatewayError) -> RedeemRequest { try RedeemRequest.parse(Array(text.utf8)) }

    @Test func amountsAsStringsAndIntegers() throws {
        #expect(try parse(#"{"amount_units":"200000000","memo":"out"}"#) == RedeemRequest(amountUnits: .success(200_000_000), memo: "out"))
        #expect(try parse(#"{"amount_units":200000000}"#) == RedeemRequest(amountUnits: .success(200_000_000), memo: nil))
        #expect(try parse(#"{"memo":null,"amount_units":10000,"extra":[1,{"a":2}]}"#).amountUnits == .success(10_000))
        #expect(try parse(#"{"amount_units":9223372036854775807}"#).amountUnits == .success(Int64.max))
    }

    @Test func amountsThatAreNotPositiveIntegersAreRefusedByReason() throws {
        let cases: [(String, MoneyError)] = [
            (#"1.5"#, .notAnInteger), (#"2.0"#, .notAnInteger), (#"1e3"#, .notAnInteger), (#"1E+2"#, .notAnInteger),
            (#"-10000"#, .notPositive), (#"0"#, .notPositive), (#"-0"#, .notPositive),
            (#"9223372036854775808"#, .outOfRange), (#"99999999999999999999"#, .outOfRange),
            (#"-99999999999999999999"#, .outOfRange),
            (#""1.5""#, .notAnInteger), (#""-10000""#, .notPositive), (#""abc""#, .notANumber), (#""""#, .notANumber),
        ]
        for (amount, reason) in cases {
            #expect(try parse(#"{"amount_units":\#(amount)}"#).amountUnits == .failure(reason), "\(amount)")
        }
    }

    @Test func shapesAndTypesAreRefusedWithStableCodes() {
        let cases: [(String, String)] = [
            ("", "invalid_json"), ("[1,2]", "invalid_json"), (#""x""#, "invalid_json"), (#"{"amount_units":"10000""#, "invalid_json"),
            (#"{"amount_units":"10000","amount_units":"20000"}"#, "invalid_json"), (#"{"amount_units":"10000",}"#, "invalid_json"),
            (#"{"memo":"x"}"#, "missing_field"), (#"{"amount_units":null}"#, "missing_field"),
            (#"{"amount_units":true}"#, "invalid_field"), (#"{"amount_units":[10000]}"#, "invalid_field"),
            (#"{"amount_units":{"v":1}}"#, "invalid_field"), (#"{"amount_units":"10000","memo":5}"#, "invalid_field"),
        ]
        for (body, code) in cases {
            #expect(throws: GatewayError.self, "\(body)") { try parse(body) }
            do { _ = try parse(body) } catch { #expect(error.code == code, "\(body) → \(error)") }
        }
    }

    @Test func everyTypeIsCheckedBeforeAnyValue() {
        // The amount's value is wrong and the memo's type is wrong: the type is named.
        do {
            _ = try parse(#"{"amount_units":"abc","memo":5}"#)
            Issue.record("a memo of the wrong type was accepted")
        } catch {
            #expect(error == .invalidField("memo", "expected a string"))
        }
    }
}
