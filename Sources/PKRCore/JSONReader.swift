/// A strict reader of JSON (RFC 8259) for small request bodies, such as a webhook's payload.
///
/// It replaces Foundation's `JSONDecoder` on the webhook path, where that decoder's generic machinery cost more
/// CPU than verifying the signature. It is stricter than that decoder in two ways a money system wants: an object
/// with a key given twice is refused (two readers could otherwise disagree on which one counts), and nesting is
/// limited to `depthMax`. Numbers are kept as the text that was sent, never converted through floating point.
public enum JSONReader {
    public static let depthMax = 32

    public indirect enum Value: Equatable, Sendable {
        case null
        case bool(Bool)
        /// The number's text as sent, checked against the grammar.
        case number(String)
        case string(String)
        case array([Value])
        case object([Member])

        /// The value of `key` if this is an object that has it.
        public subscript(key: String) -> Value? {
            guard case .object(let members) = self else { return nil }
            return members.first(where: { $0.key == key })?.value
        }
    }

    public struct Member: Equatable, Sendable {
        public var key: String
        public var value: Value
    }

    /// Why the text is not JSON, and the byte offset where the reader stopped.
    public struct Failure: Error, Equatable, Sendable {
        public var reason: String
        public var offset: Int
    }

    public static func parse(_ bytes: [UInt8]) throws(Failure) -> Value {
        let result: Result<Value, Failure> = bytes.withUnsafeBufferPointer { buffer in
            var reader = Reader(bytes: buffer)
            return Result { () throws(Failure) in try reader.document() }
        }
        return try result.get()
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) {
            self.bytes = bytes
        }

        mutating func document() throws(Failure) -> Value {
            skipWhitespace()
            let value = try value(depth: 0)
            skipWhitespace()
            guard index == bytes.count else { throw failure("text after the end of the value") }
            return value
        }

        private var next: UInt8? { index < bytes.count ? bytes[index] : nil }

        private func failure(_ reason: String) -> Failure { Failure(reason: reason, offset: index) }

        private mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0a, 0x0d: index += 1
                default: return
                }
            }
        }

        private mutating func value(depth: Int) throws(Failure) -> Value {
            guard let byte = next else { throw failure("the text ends where a value should be") }
            switch byte {
            case UInt8(ascii: "{"): return try object(depth: depth + 1)
            case UInt8(ascii: "["): return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw failure("an unexpected character where a value should be")
            }
        }

        private mutating func object(depth: Int) throws(Failure) -> Value {
            var members: [Member] = []
            if try open(depth: depth, closing: UInt8(ascii: "}")) { return .object(members) }
            repeat {
                skipWhitespace()
                guard next == UInt8(ascii: "\"") else { throw failure("expected a key in double quotes") }
                let keyOffset = index
                let key = try string()
                skipWhitespace()
                guard next == UInt8(ascii: ":") else { throw failure("expected ':' after a key") }
                index += 1
                skipWhitespace()
                let value = try value(depth: depth)
                guard !members.contains(where: { $0.key == key }) else {
                    throw Failure(reason: "the key \"\(key.prefix(64))\" appears twice", offset: keyOffset)
                }
                members.append(Member(key: key, value: value))
            } while try !closes(UInt8(ascii: "}"), after: "a member")
            return .object(members)
        }

        private mutating func array(depth: Int) throws(Failure) -> Value {
            var items: [Value] = []
            if try open(depth: depth, closing: UInt8(ascii: "]")) { return .array(items) }
            repeat {
                skipWhitespace()
                items.append(try value(depth: depth))
            } while try !closes(UInt8(ascii: "]"), after: "an item")
            return .array(items)
        }

        /// Steps past an opening bracket once the depth allows it; true if the container closes at once.
        private mutating func open(depth: Int, closing: UInt8) throws(Failure) -> Bool {
            guard depth <= JSONReader.depthMax else { throw failure("nested more than \(JSONReader.depthMax) deep") }
            index += 1
            skipWhitespace()
            guard next == closing else { return false }
            index += 1
            return true
        }

        /// After a member or item: steps past the comma (false) or the closing bracket (true).
        private mutating func closes(_ closing: UInt8, after what: String) throws(Failure) -> Bool {
            skipWhitespace()
            switch next {
            case UInt8(ascii: ","): index += 1; return false
            case closing: index += 1; return true
            default: throw failure("expected ',' or '\(Character(Unicode.Scalar(closing)))' after \(what)")
            }
        }

        private mutating func literal(_ word: StaticString) throws(Failure) {
            let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
            guard bytes.count - index >= expected.count,
                expected.elementsEqual(UnsafeBufferPointer(rebasing: bytes[index..<index + expected.count]))
            else {
                throw failure("an unexpected word where a value should be")
            }
            index += expected.count
        }

        private static func isDigit(_ byte: UInt8?) -> Bool {
            guard let byte else { return false }
            return byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
        }

        private mutating func skipDigits() {
            while Self.isDigit(next) { index += 1 }
        }

        private mutating func number() throws(Failure) -> String {
            let start = index
            if next == UInt8(ascii: "-") { index += 1 }
            guard Self.isDigit(next) else { throw failure("a number without digits") }
            // A leading zero stands alone: "01" is not a number.
            if next == UInt8(ascii: "0") { index += 1 } else { skipDigits() }
            if next == UInt8(ascii: ".") {
                index += 1
                guard Self.isDigit(next) else { throw failure("a number without digits after its point") }
                skipDigits()
            }
            if next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
                index += 1
                if next == UInt8(ascii: "+") || next == UInt8(ascii: "-") { index += 1 }
                guard Self.isDigit(next) else { throw failure("a number without digits in its exponent") }
                skipDigits()
            }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        }

        private mutating func string() throws(Failure) -> String {
            index += 1
            let start = index
            // Most strings have no escapes: they are checked for UTF-8 and copied once.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let text = try utf8(UnsafeBufferPointer(rebasing: bytes[start..<index]))
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                guard byte >= 0x20 else { throw failure("a control character inside a string") }
                index += 1
            }
            var unescaped = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
            while index < bytes.count {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    return try unescaped.withUnsafeBufferPointer { buffer throws(Failure) in try utf8(buffer) }
                case UInt8(ascii: "\\"):
                    index += 1
                    try escape(into: &unescaped)
                default:
                    guard byte >= 0x20 else { throw failure("a control character inside a string") }
                    unescaped.append(byte)
                    index += 1
                }
            }
            throw failure("a string that is not closed")
        }

        private func utf8(_ buffer: UnsafeBufferPointer<UInt8>) throws(Failure) -> String {
            guard let text = String(validating: buffer, as: UTF8.self) else { throw failure("a string that is not UTF-8") }
            return text
        }

        private mutating func escape(into out: inout [UInt8]) throws(Failure) {
            guard let byte = next else { throw failure("a string that is not closed") }
            index += 1
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(byte)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try hexQuad()
                if (0xd800...0xdbff).contains(code) {
                    // A character beyond the first plane is a pair of escapes: high surrogate, then low.
                    guard next == UInt8(ascii: "\\") else { throw failure("a high surrogate without its low surrogate") }
                    index += 1
                    guard next == UInt8(ascii: "u") else { throw failure("a high surrogate without its low surrogate") }
                    index += 1
                    let low = try hexQuad()
                    guard (0xdc00...0xdfff).contains(low) else { throw failure("a high surrogate without its low surrogate") }
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                } else if (0xdc00...0xdfff).contains(code) {
                    throw failure("a low surrogate without its high surrogate")
                }
                guard let scalar = Unicode.Scalar(code) else { throw failure("an escape that is not a character") }
                out.append(contentsOf: UTF8.encode(scalar)!)
            default:
                throw failure("an unknown escape in a string")
            }
        }

        private mutating func hexQuad() throws(Failure) -> UInt32 {
            guard bytes.count - index >= 4 else { throw failure("a \\u escape without four hex digits") }
            var code: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw failure("a \\u escape without four hex digits")
                }
                code = code << 4 | UInt32(digit)
                index += 1
            }
            return code
        }
    }
}
