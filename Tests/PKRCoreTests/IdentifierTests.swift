import Testing

@testable import PKRCore

@Suite struct IdentifierTests {
    @Test func timeOrderedUUIDIsAVersion7UUID() {
        let id = Identifiers.timeOrderedUUID(unixMillis: 1_764_000_000_123)
        let parts = id.split(separator: "-").map(String.init)
        #expect(parts.map(\.count) == [8, 4, 4, 4, 12])
        #expect(id.allSatisfy { "0123456789abcdef-".contains($0) })
        #expect(parts[2].first == "7")
        #expect("89ab".contains(parts[3].first!))
        // The first 48 bits are the milliseconds, big-endian.
        #expect(Int64(parts[0] + parts[1], radix: 16) == 1_764_000_000_123)
    }

    @Test func timeOrderedUUIDsSortByMillisecond() {
        var previous = Identifiers.timeOrderedUUID(unixMillis: 1_000)
        for millis in stride(from: Int64(1_001), to: 1_500, by: 7) {
            let next = Identifiers.timeOrderedUUID(unixMillis: millis)
            #expect(previous < next)
            previous = next
        }
        #expect(Identifiers.timeOrderedUUID(unixMillis: 5) != Identifiers.timeOrderedUUID(unixMillis: 5))
    }

    @Test func identifierBytesAreNeverHandedOutTwice() {
        // 1,000 draws of 32 bytes cross the 4 KiB pool's refill several times.
        let draws = (0..<1_000).map { _ in Crypto.randomIdentifierBytes(32) }
        #expect(draws.allSatisfy { $0.count == 32 })
        #expect(Set(draws).count == draws.count)
        #expect(Set(draws.flatMap { $0 }).count > 200, "the bytes look random, not a repeated pattern")
        #expect(Set((0..<200).map { _ in Identifiers.chainTxHash(unixMillis: 5) }).count == 200)
    }

    @Test func chainTxHashesAreEthereumShapedAndSortByMillisecond() {
        let hash = Identifiers.chainTxHash(unixMillis: 1_764_000_000_123)
        #expect(hash.count == 66 && hash.hasPrefix("0x"))
        #expect(hash.dropFirst(2).allSatisfy { "0123456789abcdef".contains($0) })
        #expect(Int64(hash.dropFirst(2).prefix(12), radix: 16) == 1_764_000_000_123)
        var previous = Identifiers.chainTxHash(unixMillis: 1_000)
        for millis in stride(from: Int64(1_001), to: 1_500, by: 7) {
            let next = Identifiers.chainTxHash(unixMillis: millis)
            #expect(previous < next)
            previous = next
        }
        #expect(Identifiers.chainTxHash(unixMillis: -1).hasPrefix("0x000000000000"))
    }

    @Test func providerTxIDsSortByMillisecond() {
        let id = Identifiers.providerTxID(unixMillis: 1_764_000_000_123)
        #expect(id.count == 35 && id.hasPrefix("TX-"))
        #expect(WebhookEvent.isIdentifier(id, bytesMax: WebhookEvent.providerTxIDBytesMax))
        #expect(Int64(id.dropFirst(3).prefix(12), radix: 16) == 1_764_000_000_123)
        #expect(Identifiers.providerTxID(unixMillis: 1_000) < Identifiers.providerTxID(unixMillis: 1_001))
        #expect(Set((0..<200).map { _ in Identifiers.providerTxID(unixMillis: 5) }).count == 200)
    }

    @Test func timeOrderedUUIDClampsAClockOutOfRange() {
        #expect(Identifiers.timeOrderedUUID(unixMillis: -1).hasPrefix("00000000-0000-7"))
        #expect(Identifiers.timeOrderedUUID(unixMillis: .max).hasPrefix("ffffffff-ffff-7"))
    }
}
