import CLibCrypto
import Synchronization

/// Thin wrappers over OpenSSL's libcrypto: the only crypto the project uses.
public enum Crypto {
    public static let sha256Bytes = 32

    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var outLength: UInt32 = 0
        let result = key.withUnsafeBufferPointer { keyBuffer in
            message.withUnsafeBufferPointer { messageBuffer in
                out.withUnsafeMutableBufferPointer { outBuffer in
                    HMAC(
                        EVP_sha256(), keyBuffer.baseAddress, Int32(keyBuffer.count),
                        messageBuffer.baseAddress, messageBuffer.count, outBuffer.baseAddress, &outLength)
                }
            }
        }
        precondition(result != nil && outLength == UInt32(sha256Bytes), "HMAC-SHA256 failed in libcrypto")
        return Array(out.prefix(sha256Bytes))
    }

    public static func sha256(_ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: sha256Bytes)
        let result = message.withUnsafeBufferPointer { messageBuffer in
            out.withUnsafeMutableBufferPointer { outBuffer in
                pkr_sha256(messageBuffer.baseAddress, messageBuffer.count, outBuffer.baseAddress)
            }
        }
        precondition(result == 1, "SHA-256 failed in libcrypto")
        return out
    }

    public static func sha256Hex(_ text: String) -> String {
        hex(sha256(Array(text.utf8)))
    }

    /// Compares two byte strings in time that depends only on their length.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { ab in
            b.withUnsafeBytes { bb in CRYPTO_memcmp(ab.baseAddress, bb.baseAddress, ab.count) == 0 }
        }
    }

    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let result = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        precondition(result == 1, "RAND_bytes failed in libcrypto")
        return out
    }

    /// Random bytes for public identifiers (job ids, transaction hashes, message ids), drawn from libcrypto's
    /// generator 4 KiB at a time: a `RAND_bytes` call per identifier was 3% of the writer's time, and the writer
    /// makes two identifiers per mint. Each byte is handed out once. Secrets and tokens use `randomBytes`.
    public static func randomIdentifierBytes(_ count: Int) -> [UInt8] {
        precondition(count > 0 && count <= IdentifierRandomPool.bytesMax, "identifier size out of range")
        return identifierRandomPool.withLock { pool in pool.take(count) }
    }

    private static let identifierRandomPool = Mutex(IdentifierRandomPool())

    private struct IdentifierRandomPool: ~Copyable {
        static let bytesMax = 4096
        var buffer = [UInt8](repeating: 0, count: bytesMax)
        var used = bytesMax

        mutating func take(_ count: Int) -> [UInt8] {
            if used + count > buffer.count {
                let result = buffer.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32($0.count)) }
                precondition(result == 1, "RAND_bytes failed in libcrypto")
                used = 0
            }
            defer { used += count }
            return Array(buffer[used..<used + count])
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    public static func hex(_ bytes: [UInt8]) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            for (index, byte) in bytes.enumerated() {
                out[2 * index] = hexDigits[Int(byte >> 4)]
                out[2 * index + 1] = hexDigits[Int(byte & 0x0f)]
            }
            return bytes.count * 2
        }
    }

    /// Decodes lowercase or uppercase hex; nil for anything else.
    public static func unhex(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = nibble(chars[index]), let low = nibble(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
