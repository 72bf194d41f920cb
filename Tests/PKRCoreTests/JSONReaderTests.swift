import Foundation
import Testing

@testable import PKRCore

private func read(_ text: String) -> Result<JSONReader.Value, JSONReader.Failure> {
    Result { () throws(JSONReader.Failure) in try JSONReader.parse(Array(text.utf8)) }
}

private func accepts(_ bytes: [UInt8]) -> Bool {
    (try? JSONReader.parse(bytes)) != nil
}

/// Any JSON value, as Foundation's decoder reads it: the reference the reader is compared with.
private indirect enum FoundationJSON: Decodable, Equatable {
    case null, bool(Bool), number, string(String), array([FoundationJSON]), object([String: FoundationJSON])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let items = try? container.decode([FoundationJSON].self) {
            self = .array(items)
        } else if let members = try? container.decode([String: FoundationJSON].self) {
            self = .object(members)
        } else {
            _ = try container.decode(Decimal.self); self = .number
        }
    }

    init(_ value: JSONReader.Value) {
        switch value {
        case .null: self = .null
        case .bool(let flag): self = .bool(flag)
        case .number: self = .number
        case .string(let text): self = .string(text)
        case .array(let items): self = .array(items.map(FoundationJSON.init))
        case .object(let members):
            self = .object(Dictionary(members.map { ($0.key, FoundationJSON($0.value)) }, uniquingKeysWith: { first, _ in first }))
        }
    }
}

@Suite struct JSONReaderTests {
    @Test func readsEveryKindOfValue() throws {
        let value = try read(#" { "a" : [1, -0.5, 2e10, 3E-2, true, false, null], "b": {"c": "d"}, "e": "" } "#).get()
        #expect(
            value
                == .object([
                    .init(
                        key: "a",
                        value: .array([
                            .number("1"), .number("-0.5"), .number("2e10"), .number("3E-2"), .bool(true),
                            .bool(false), .null,
                        ])),
                    .init(key: "b", value: .object([.init(key: "c", value: .string("d"))])),
                    .init(key: "e", value: .string("")),
                ]))
        #expect(value["b"]?["c"] == .string("d"))
        #expect(value["missing"] == nil)
    }

    @Test func keepsNumbersAsSent() throws {
        // No floating point: the text is what a money field would be parsed from.
        #expect(try read("12345678901234567890.123456789").get() == .number("12345678901234567890.123456789"))
    }

    @Test(arguments: [
        (#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{c}\n\r\t"),
        (#""\u00e9\u20AC""#, "é€"),
        (#""\ud83d\ude00""#, "😀"),
        (#""plain ünïcødé ✓""#, "plain ünïcødé ✓"),
        (#""a\u0000b""#, "a\u{0}b"),
    ])
    func unescapesStrings(text: String, expected: String) throws {
        #expect(try read(text).get() == .string(expected))
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "[,1]", #"{"a":1,}"#, #"{"a" 1}"#, #"{a:1}"#, "{'a':1}", "01", "-", "1.", ".5", "1e",
        "1e+", "+1", "NaN", "Infinity", "tru", "nul", "True", #""unclosed"#, #""bad \x escape""#, #""\u12""#,
        #""\u12G4""#, #""\ud83d""#, #""\ude00""#, #""\ud83d\u0041""#, "\"tab\tinside\"", "\"line\nbreak\"",
        "1 2", "{} {}", #"{"a":1}x"#, #"{"a":1,"a":2}"#, "[1]]",
    ])
    func refusesWhatIsNotJSON(text: String) {
        guard case .failure = read(text) else {
            Issue.record("accepted \(text.debugDescription)")
            return
        }
    }

    @Test func refusesTextThatIsNotUTF8() {
        #expect(!accepts([0x22, 0xc3, 0x28, 0x22]))
        #expect(!accepts([0x22, 0xed, 0xa0, 0x80, 0x22]))  // An encoded surrogate.
        #expect(!accepts([0xff, 0xfe, 0x7b, 0x7d]))
        #expect(accepts([0x22, 0xc3, 0xa9, 0x22]))
    }

    @Test func limitsNesting() {
        let deepest = String(repeating: "[", count: JSONReader.depthMax) + String(repeating: "]", count: JSONReader.depthMax)
        #expect(accepts(Array(deepest.utf8)))
        let tooDeep = "[" + deepest + "]"
        guard case .failure(let failure) = read(tooDeep) else {
            Issue.record("accepted \(JSONReader.depthMax + 1) levels")
            return
        }
        #expect(failure.offset == JSONReader.depthMax)
    }

    @Test func namesWhereItStopped() {
        guard case .failure(let failure) = read(#"{"a": 1, "b": tru}"#) else {
            Issue.record("accepted a misspelt literal")
            return
        }
        #expect(failure.offset == 14)
    }

    /// Mutations of a webhook payload (bytes changed, dropped, added, or the rest cut), each read by the reader and
    /// by Foundation. Both must accept the same texts and read the same values from them, but for the reader's
    /// refusals that Foundation lacks: a repeated key, a trailing comma, and nesting too deep (which these mutations
    /// cannot reach).
    @Test func agreesWithFoundation() throws {
        let payload = Array(
            #"{"type": "wallet.credit", "provider_tx_id": "TX-1", "amount_pkr": "10.50", "n": [1, -2.5, 0, true, null], "memo": "\u00e9 \"q\" ✓", "metadata": {"reference": "job-9"}}"#
                .utf8)
        let alphabet = Array(#"{}[],:"\ue0.-+12 tfnalrsuE"#.utf8) + [0x0a, 0xc3, 0xa9, 0xff]
        var random = SeededGenerator(seed: 20261127)
        var accepted = 0
        for _ in 0..<20_000 {
            var bytes = payload
            for _ in 0...Int.random(in: 0...2, using: &random) {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: bytes[at] = alphabet.randomElement(using: &random)!
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(alphabet.randomElement(using: &random)!, at: at)
                default: bytes = Array(bytes.prefix(at))
                }
                if bytes.isEmpty { break }
            }
            let foundation = try? JSONDecoder().decode(FoundationJSON.self, from: Data(bytes))
            let reader: JSONReader.Value?
            do { reader = try JSONReader.parse(bytes) } catch {
                if error.reason.hasSuffix("appears twice") { continue }
                reader = nil
            }
            let text = String(decoding: bytes, as: UTF8.self)
            if reader == nil, foundation != nil {
                // Foundation also takes a comma before a closing bracket, which RFC 8259 does not allow.
                let strict = text.replacing(/,\s*([}\]])/) { String($0.output.1) }
                #expect(strict != text, "\(text.debugDescription)")
                #expect((try? JSONReader.parse(Array(strict.utf8))).map(FoundationJSON.init) == foundation, "\(text.debugDescription)")
                continue
            }
            #expect(reader.map(FoundationJSON.init) == foundation, "\(text.debugDescription)")
            if reader != nil { accepted += 1 }
        }
        // Enough of the mutations stay JSON for the agreement on values to mean something.
        #expect(accepted > 2_000)
    }
}

/// SplitMix64: the same mutations on every run.
private struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce5_e4b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
