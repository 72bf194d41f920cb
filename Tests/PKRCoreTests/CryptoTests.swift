import Testing

@testable import PKRCore

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite struct CryptoTests {
    @Test func sha256KnownAnswers() {
        #expect(Crypto.sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Crypto.sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Crypto.sha256(bytes("abc")).count == Crypto.sha256Bytes)
    }

    @Test func hmacRFC4231Case2() {
        let mac = Crypto.hmacSHA256(key: bytes("Jefe"), message: bytes("what do ya want for nothing?"))
        #expect(Crypto.hex(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func hmacRFC4231Case6KeyLongerThanBlock() throws {
        let key = [UInt8](repeating: 0xaa, count: 131)
        let mac = Crypto.hmacSHA256(key: key, message: bytes("Test Using Larger Than Block-Size Key - Hash Key First"))
        #expect(Crypto.hex(mac) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    @Test func hmacWithEmptyKeyAndMessage() {
        // Empty buffers have no base address; the wrapper must still work.
        #expect(
            Crypto.hex(Crypto.hmacSHA256(key: [], message: []))
                == "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
    }

    @Test func constantTimeEqual() {
        #expect(Crypto.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(Crypto.constantTimeEqual([], []))
        #expect(!Crypto.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!Crypto.constantTimeEqual([0, 2, 3], [1, 2, 3]))
        #expect(!Crypto.constantTimeEqual([1, 2, 3], [1, 2]))
        #expect(!Crypto.constantTimeEqual([], [0]))
    }

    @Test func hexRoundTrip() throws {
        let all = (0...255).map(UInt8.init)
        let text = Crypto.hex(all)
        #expect(text.hasPrefix("000102"))
        #expect(text.hasSuffix("fdfeff"))
        #expect(Crypto.unhex(text) == all)
        #expect(Crypto.unhex(text.uppercased()) == all)
        #expect(Crypto.unhex("") == [])
        #expect(Crypto.unhex("DeadBEEF") == [0xde, 0xad, 0xbe, 0xef])
        for _ in 0..<100 {
            let random = Crypto.randomBytes(Int.random(in: 0...64))
            #expect(Crypto.unhex(Crypto.hex(random)) == random)
        }
    }

    @Test(arguments: ["abc", "0", "0g", "zz", "0x00", " 00", "00 ", "é0"])
    func unhexRejects(text: String) {
        #expect(Crypto.unhex(text) == nil)
    }

    @Test func randomBytesHaveRequestedLength() {
        #expect(Crypto.randomBytes(0).isEmpty)
        #expect(Crypto.randomBytes(32).count == 32)
        #expect(Crypto.randomBytes(32) != Crypto.randomBytes(32))
    }
}
