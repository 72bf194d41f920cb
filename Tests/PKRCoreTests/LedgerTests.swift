import Testing

@testable import PKRCore

/// Appends the postings of each job in order, as a store would, and returns the entries.
private func buildChain(_ jobs: [(ChainJobType, Int64)]) -> [LedgerEntry] {
    var head = LedgerHead.genesis
    var entries: [LedgerEntry] = []
    for (index, (job, units)) in jobs.enumerated() {
        for posting in PostingRules.postings(for: job, amountUnits: units) {
            let entry = LedgerEntry.next(
                after: head, userID: "user-\(index % 3)", posting: posting, refType: job,
                refID: "job-\(index + 1)", createdAt: Timestamp.format(micros: Int64(index) * 1_000))
            entries.append(entry)
            head = LedgerHead(entry)
        }
    }
    return entries
}

/// Five jobs, ten entries: mints first, then burns.
private let sampleJobs: [(ChainJobType, Int64)] = [
    (.mint, 200_000_000), (.mint, 10_000), (.mint, 5_550_000), (.burn, 100_000_000), (.burn, 10_000),
]

private func verify(_ entries: [LedgerEntry], storedHead: LedgerHead) -> LedgerChainVerifier {
    var verifier = LedgerChainVerifier()
    for entry in entries where !verifier.check(entry) { break }
    verifier.finish(storedHead: storedHead)
    return verifier
}

private func storedHead(of entries: [LedgerEntry]) -> LedgerHead {
    entries.last.map(LedgerHead.init) ?? .genesis
}

@Suite struct PostingRulesTests {
    @Test func mintCreditsIssuerAndDebitsUser() {
        #expect(
            PostingRules.postings(for: .mint, amountUnits: 42) == [
                LedgerPosting(side: .credit, account: .issuerToken, amountUnits: 42),
                LedgerPosting(side: .debit, account: .userToken, amountUnits: 42),
            ])
    }

    @Test func burnCreditsUserAndDebitsIssuer() {
        #expect(
            PostingRules.postings(for: .burn, amountUnits: 7) == [
                LedgerPosting(side: .credit, account: .userToken, amountUnits: 7),
                LedgerPosting(side: .debit, account: .issuerToken, amountUnits: 7),
            ])
    }
}

@Suite struct LedgerChainTests {
    @Test func absentAndEmptyUserHashDifferently() {
        let posting = LedgerPosting(side: .credit, account: .issuerToken, amountUnits: 5)
        let absent = LedgerEntry.next(after: .genesis, userID: nil, posting: posting, refType: .mint, refID: "j", createdAt: "t")
        let empty = LedgerEntry.next(after: .genesis, userID: "", posting: posting, refType: .mint, refID: "j", createdAt: "t")
        #expect(absent.entryHash != empty.entryHash)
        let shifted = LedgerEntry.next(after: .genesis, userID: nil, posting: posting, refType: .mint, refID: "j\u{1f}t", createdAt: "")
        #expect(shifted.entryHash != absent.entryHash, "a separator inside a field cannot shift it into the next")
    }

    @Test func hashFormatIsPinned() {
        // Computed with Python's hashlib; a change here would invalidate every stored ledger.
        let posting = LedgerPosting(side: .credit, account: .issuerToken, amountUnits: 200_000_000)
        let entry = LedgerEntry.next(
            after: .genesis, userID: "user-1", posting: posting, refType: .mint,
            refID: "job-1", createdAt: "2025-01-01T00:00:00.000000Z")
        #expect(entry.id == 1)
        #expect(entry.prevHash == LedgerHead.genesisHash)
        #expect(entry.entryHash == "d16168eda83674e3463332ba82dfbc4e0c589936289fa6c1c3548eed7e925d02")
        #expect(entry.computedHash() == entry.entryHash)
    }

    /// The rendering as the format defines it, through Strings: the fast path must hash exactly this.
    private static func referenceHash(_ entry: LedgerEntry) -> String {
        func field(_ value: String?) -> String { value.map { "|\($0.utf8.count):\($0)" } ?? "|~" }
        let text =
            "pkr-ledger-v2" + field(String(entry.id)) + field(entry.userID) + field(entry.side.rawValue)
            + field(entry.account.rawValue) + field(String(entry.amountUnits)) + field(entry.refType.rawValue)
            + field(entry.refID) + field(entry.createdAt) + field(entry.prevHash)
        return Crypto.sha256Hex(text)
    }

    @Test(arguments: [Int64(0), 1, 9, 10, 99, 100, 12_345, 1_000_000_000, Int64.max, -1, Int64.min])
    func hashRendersNumbersAndTextAsTheFormatSays(number: Int64) {
        for userID in [nil, "", "user-ß-€-🙂"] as [String?] {
            let entry = LedgerEntry(
                id: number, userID: userID, side: .debit, account: .userToken, amountUnits: number,
                refType: .burn, refID: "ref|with:separators~\u{1f}", createdAt: "2026-11-27T03:00:00.000000Z",
                prevHash: LedgerHead.genesisHash, entryHash: "")
            #expect(entry.computedHash() == Self.referenceHash(entry), "id and amount \(number), user \(String(describing: userID))")
        }
    }

    @Test func intactChainVerifies() {
        let entries = buildChain(sampleJobs)
        #expect(entries.count == 10)
        #expect(entries.map(\.id) == Array(1...10))
        for (previous, entry) in zip(entries, entries.dropFirst()) {
            #expect(entry.prevHash == previous.entryHash)
        }
        let verifier = verify(entries, storedHead: storedHead(of: entries))
        #expect(verifier.firstBreak == nil)
        #expect(verifier.entriesChecked == 10)
        #expect(verifier.head == storedHead(of: entries))
        #expect(verifier.debitUnits == verifier.creditUnits)
        #expect(verifier.debitUnits == sampleJobs.map(\.1).reduce(0, +))
    }

    @Test func emptyChainVerifiesAgainstGenesis() {
        let verifier = verify([], storedHead: .genesis)
        #expect(verifier.firstBreak == nil)
        #expect(verifier.entriesChecked == 0)
    }

    @Test(arguments: [1, 6, 10])
    func alteredAmountIsAHashMismatch(at id: Int) {
        var entries = buildChain(sampleJobs)
        entries[id - 1].amountUnits += 1
        let verifier = verify(entries, storedHead: storedHead(of: entries))
        #expect(verifier.firstBreak == .hashMismatch(id: Int64(id)))
        #expect(verifier.entriesChecked == Int64(id - 1))
    }

    @Test func alteredFieldsAreHashMismatches() {
        let original = buildChain(sampleJobs)
        let edits: [(inout LedgerEntry) -> Void] = [
            { $0.userID = "someone-else" }, { $0.userID = nil }, { $0.side = .credit }, { $0.account = .issuerToken },
            { $0.refType = .burn }, { $0.refID = "job-99" }, { $0.createdAt = "2030-01-01T00:00:00.000000Z" },
        ]
        for edit in edits {
            var entries = original
            edit(&entries[3])
            #expect(verify(entries, storedHead: storedHead(of: entries)).firstBreak == .hashMismatch(id: 4))
        }
    }

    @Test func batchesHashedInParallelFindTheSameBreaks() {
        let jobs = (0..<1500).map { index -> (ChainJobType, Int64) in (index % 4 == 3 ? .burn : .mint, Int64(index + 1) * 10_000) }
        let original = buildChain(jobs)
        func batched(_ entries: [LedgerEntry]) -> LedgerChainVerifier {
            var verifier = LedgerChainVerifier()
            for start in stride(from: 0, to: entries.count, by: 700)
            where !verifier.check(Array(entries[start..<min(entries.count, start + 700)])) {
                break
            }
            verifier.finish(storedHead: storedHead(of: entries))
            return verifier
        }
        // The parallel path, whatever this machine's core count, agrees with hashing one entry at a time.
        var mixed = original
        mixed[3].amountUnits += 1
        mixed[1200].refID = "job-x"
        #expect(LedgerChainVerifier.hashesMatch(mixed, workers: 4) == mixed.map { $0.computedHash() == $0.entryHash })
        #expect(LedgerChainVerifier.hashesMatch(mixed, workers: 4).filter { !$0 }.count == 2)
        let intact = batched(original)
        #expect(intact.firstBreak == nil)
        #expect(intact.entriesChecked == Int64(original.count))
        #expect(intact.head == verify(original, storedHead: storedHead(of: original)).head)
        for tampered in [0, 1, 699, 700, 1777, original.count - 1] {
            var entries = original
            entries[tampered].amountUnits += 1
            #expect(batched(entries).firstBreak == .hashMismatch(id: Int64(tampered + 1)))
            #expect(batched(entries).firstBreak == verify(entries, storedHead: storedHead(of: entries)).firstBreak)
        }
    }

    @Test func brokenLinkIsAPrevHashMismatch() {
        var entries = buildChain(sampleJobs)
        entries[4].prevHash = String(repeating: "f", count: 64)
        entries[4].entryHash = entries[4].computedHash()  // rehashed, so only the link is wrong
        #expect(verify(entries, storedHead: storedHead(of: entries)).firstBreak == .prevHashMismatch(id: 5))
    }

    @Test func rewrittenEntryBreaksItsSuccessor() {
        var entries = buildChain(sampleJobs)
        entries[2].amountUnits = 1
        entries[2].entryHash = entries[2].computedHash()
        #expect(verify(entries, storedHead: storedHead(of: entries)).firstBreak == .prevHashMismatch(id: 4))
    }

    @Test func removedMiddleEntryIsMissing() {
        var entries = buildChain(sampleJobs)
        entries.remove(at: 4)
        let verifier = verify(entries, storedHead: storedHead(of: entries))
        #expect(verifier.firstBreak == .missingEntry(expectedID: 5, foundID: 6))
        #expect(verifier.entriesChecked == 4)
    }

    @Test func reorderedEntriesAreDetected() {
        var entries = buildChain(sampleJobs)
        entries.swapAt(6, 7)
        #expect(
            verify(entries, storedHead: storedHead(of: entries)).firstBreak
                == .missingEntry(expectedID: 7, foundID: 8))
    }

    @Test func droppedTailIsAHeadMismatch() {
        let entries = buildChain(sampleJobs)
        let head = storedHead(of: entries)
        let verifier = verify(Array(entries.dropLast()), storedHead: head)
        #expect(verifier.firstBreak == .headMismatch(headID: 10, lastID: 9))
        #expect(verifier.entriesChecked == 9)
    }

    @Test func staleHeadIsAHeadMismatch() {
        let entries = buildChain(sampleJobs)
        let verifier = verify(entries, storedHead: LedgerHead(entries[7]))
        #expect(verifier.firstBreak == .headMismatch(headID: 8, lastID: 10))
    }

    @Test func oneSidedChainIsUnbalanced() {
        let posting = LedgerPosting(side: .debit, account: .userToken, amountUnits: 500)
        let entry = LedgerEntry.next(
            after: .genesis, userID: nil, posting: posting, refType: .mint,
            refID: "job-1", createdAt: Timestamp.format(micros: 0))
        #expect(verify([entry], storedHead: LedgerHead(entry)).firstBreak == .unbalanced(debitUnits: 500, creditUnits: 0))
    }

    /// The pipelined verifier agrees with the one-by-one checks, whichever batch a break falls in.
    @Test func pipelinedBatchesFindWhatSingleChecksFind() {
        let jobs = (0..<300).map { index -> (ChainJobType, Int64) in (index % 4 == 3 ? .burn : .mint, 10_000) }
        let clean = buildChain(jobs)
        func pipelined(_ entries: [LedgerEntry], batch: Int) -> LedgerChainVerifier {
            let pipeline = PipelinedLedgerVerifier()
            for start in stride(from: 0, to: entries.count, by: batch)
            where !pipeline.add(Array(entries[start..<min(entries.count, start + batch)])) { break }
            return pipeline.finish(storedHead: storedHead(of: clean))
        }
        for batch in [1, 7, 256, 1_000] {
            let verified = pipelined(clean, batch: batch)
            #expect(verified.firstBreak == nil && verified.entriesChecked == Int64(clean.count))
            #expect(verified.debitUnits == verified.creditUnits)
        }
        for tampered in [0, 299, 300, 599] {
            var entries = clean
            entries[tampered].createdAt = "altered"
            for batch in [7, 256] {
                let expected = verify(entries, storedHead: storedHead(of: clean)).firstBreak
                #expect(expected == .hashMismatch(id: Int64(tampered + 1)))
                #expect(pipelined(entries, batch: batch).firstBreak == expected)
            }
        }
    }

    @Test func verifierStopsAtFirstBreak() {
        var entries = buildChain(sampleJobs)
        entries[1].amountUnits += 1
        entries[5].prevHash = LedgerHead.genesisHash
        var verifier = LedgerChainVerifier()
        let accepted = entries.prefix(3).map { verifier.check($0) }
        #expect(accepted == [true, false, false])
        verifier.finish(storedHead: storedHead(of: entries))
        #expect(verifier.firstBreak == .hashMismatch(id: 2))
    }
}
