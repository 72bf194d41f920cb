import Dispatch
import Foundation

/// Double-entry posting rules and the ledger's hash chain. Pure: stores call these and persist the results.
public enum LedgerSide: String, Sendable, Codable {
    case debit
    case credit
}

public enum LedgerAccount: String, Sendable, Codable {
    case issuerToken = "issuer_token"
    case userToken = "user_token"
}

public enum ChainJobType: String, Sendable, Codable {
    case mint
    case burn
}

/// An operation on the (simulated) chain. A redeem moves the customer's tokens to the issuer's redemption address
/// (`hold`); they are burnt from there once the payout is paid, or moved back (`release`) if it fails.
public enum ChainOperation: String, Sendable, Codable {
    case mint
    case burn
    case hold
    case release

    /// The issuer's address that holds redeemed tokens until their payout ends.
    public static let redemptionAddress = "0x00000000000000000000000000000000000000fe"

    /// The balance changes, in the order they are applied: the customer's address before the redemption address,
    /// the one order every writer takes them in.
    public func moves(address: String, amountUnits: Int64) -> [(address: String, deltaUnits: Int64)] {
        precondition(amountUnits > 0, "chain operations move a positive amount")
        switch self {
        case .mint: return [(address, amountUnits)]
        case .burn: return [(address, -amountUnits)]
        case .hold: return [(address, -amountUnits), (Self.redemptionAddress, amountUnits)]
        case .release: return [(address, amountUnits), (Self.redemptionAddress, -amountUnits)]
        }
    }
}

public struct LedgerPosting: Sendable, Equatable {
    public var side: LedgerSide
    public var account: LedgerAccount
    public var amountUnits: Int64
}

public enum PostingRules {
    /// A mint credits the issuer's token position and debits the user's, as the seed records it.
    /// A burn is its mirror image. Both sides always carry the same amount.
    public static func postings(for job: ChainJobType, amountUnits: Int64) -> [LedgerPosting] {
        precondition(amountUnits > 0, "ledger amounts are positive")
        switch job {
        case .mint:
            return [
                LedgerPosting(side: .credit, account: .issuerToken, amountUnits: amountUnits),
                LedgerPosting(side: .debit, account: .userToken, amountUnits: amountUnits),
            ]
        case .burn:
            return [
                LedgerPosting(side: .credit, account: .userToken, amountUnits: amountUnits),
                LedgerPosting(side: .debit, account: .issuerToken, amountUnits: amountUnits),
            ]
        }
    }
}

/// The fields of one ledger entry that the hash covers.
public struct LedgerEntry: Sendable, Equatable {
    public var id: Int64
    public var userID: String?
    public var side: LedgerSide
    public var account: LedgerAccount
    public var amountUnits: Int64
    public var refType: ChainJobType
    public var refID: String
    public var createdAt: String
    public var prevHash: String
    public var entryHash: String

    public init(
        id: Int64, userID: String?, side: LedgerSide, account: LedgerAccount, amountUnits: Int64,
        refType: ChainJobType, refID: String, createdAt: String, prevHash: String, entryHash: String
    ) {
        self.id = id
        self.userID = userID
        self.side = side
        self.account = account
        self.amountUnits = amountUnits
        self.refType = refType
        self.refID = refID
        self.createdAt = createdAt
        self.prevHash = prevHash
        self.entryHash = entryHash
    }

    /// Builds the next entry of the chain, computing its hash.
    public static func next(
        after head: LedgerHead, userID: String?, posting: LedgerPosting, refType: ChainJobType,
        refID: String, createdAt: String
    ) -> LedgerEntry {
        var entry = LedgerEntry(
            id: head.lastID + 1, userID: userID, side: posting.side, account: posting.account,
            amountUnits: posting.amountUnits, refType: refType, refID: refID,
            createdAt: createdAt, prevHash: head.lastHash, entryHash: "")
        entry.entryHash = entry.computedHash()
        return entry
    }

    /// SHA-256 over a canonical, versioned rendering of the entry and its predecessor's hash. Every field is
    /// length-prefixed and an absent user is distinct from an empty one, so no two entries render alike.
    public func computedHash() -> String {
        // Rendered straight into one byte buffer, lengths and numbers as decimal digits without a String each:
        // verifying a million entries is mostly this function, and every append runs it on the writer.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(128 + refID.utf8.count + (userID?.utf8.count ?? 0) + createdAt.utf8.count + prevHash.utf8.count)
        bytes.append(contentsOf: "pkr-ledger-v2".utf8)
        func digitCount(_ value: UInt64) -> Int {
            var count = 1
            var rest = value
            while rest >= 10 {
                rest /= 10
                count += 1
            }
            return count
        }
        func decimal(_ value: UInt64) {
            // Digits come out last first: into a buffer on the stack, then appended in order.
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
                var rest = value
                var first = digits.count
                repeat {
                    first -= 1
                    digits[first] = UInt8(ascii: "0") + UInt8(rest % 10)
                    rest /= 10
                } while rest > 0
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[first...]))
            }
        }
        func field(_ value: String?) {
            bytes.append(UInt8(ascii: "|"))
            guard var value else {
                bytes.append(UInt8(ascii: "~"))
                return
            }
            value.withUTF8 { utf8 in
                decimal(UInt64(utf8.count))
                bytes.append(UInt8(ascii: ":"))
                bytes.append(contentsOf: utf8)
            }
        }
        func field(_ value: Int64) {
            // Ids and amounts are positive; anything else (only a tampered row) renders as its String would.
            guard value >= 0 else { return field(String(value)) }
            bytes.append(UInt8(ascii: "|"))
            decimal(UInt64(digitCount(UInt64(value))))
            bytes.append(UInt8(ascii: ":"))
            decimal(UInt64(value))
        }
        field(id)
        field(userID)
        field(side.rawValue)
        field(account.rawValue)
        field(amountUnits)
        field(refType.rawValue)
        field(refID)
        field(createdAt)
        field(prevHash)
        return Crypto.hex(Crypto.sha256(bytes))
    }
}

/// The last entry's id and hash; the genesis head has id 0 and an all-zero hash.
public struct LedgerHead: Sendable, Equatable {
    public static let genesisHash = String(repeating: "0", count: 64)
    public static let genesis = LedgerHead(lastID: 0, lastHash: genesisHash)

    public var lastID: Int64
    public var lastHash: String

    public init(lastID: Int64, lastHash: String) {
        self.lastID = lastID
        self.lastHash = lastHash
    }

    public init(_ entry: LedgerEntry) {
        self.init(lastID: entry.id, lastHash: entry.entryHash)
    }
}

/// The first place where the stored chain stops being what was written.
public enum LedgerBreak: Sendable, Equatable, CustomStringConvertible {
    case missingEntry(expectedID: Int64, foundID: Int64)
    case hashMismatch(id: Int64)
    case prevHashMismatch(id: Int64)
    case headMismatch(headID: Int64, lastID: Int64)
    case unbalanced(debitUnits: Int64, creditUnits: Int64)
    /// The stored checkpoint of verified entries disagrees with a recount from the first entry.
    case checkpointMismatch(id: Int64)

    public var description: String {
        switch self {
        case .missingEntry(let expected, let found):
            return "entry \(expected) is missing (next stored entry is \(found))"
        case .hashMismatch(let id): return "entry \(id) was altered: its stored hash does not match its fields"
        case .prevHashMismatch(let id): return "entry \(id) does not link to the entry before it"
        case .headMismatch(let headID, let lastID):
            return "the chain head records entry \(headID) but the last stored entry is \(lastID) (entries removed or added)"
        case .unbalanced(let debits, let credits): return "ledger debits \(debits) != credits \(credits)"
        case .checkpointMismatch(let id):
            return
                "the verification checkpoint at entry \(id) disagrees with a recount from the first entry (checkpoint or earlier entries altered)"
        }
    }
}

/// A verified prefix of the chain and its running sums: a verification resumes after it instead of rereading the
/// whole history. It is only as trustworthy as the table that stores it, so a full verification (from genesis)
/// recounts the prefix and confirms the stored checkpoint against it.
public struct LedgerCheckpoint: Sendable, Equatable {
    public static let genesis = LedgerCheckpoint(head: .genesis, entries: 0, debitUnits: 0, creditUnits: 0, userNetUnits: 0)

    public var head: LedgerHead
    public var entries: Int64
    public var debitUnits: Int64
    public var creditUnits: Int64
    /// The customers' token position: `user_token` debits minus credits.
    public var userNetUnits: Int64

    public init(head: LedgerHead, entries: Int64, debitUnits: Int64, creditUnits: Int64, userNetUnits: Int64) {
        self.head = head
        self.entries = entries
        self.debitUnits = debitUnits
        self.creditUnits = creditUnits
        self.userNetUnits = userNetUnits
    }
}

/// Streams entries in id order and stops at the first break. Also sums both sides and the customers' position.
public struct LedgerChainVerifier: Sendable {
    /// Entries a store decodes before handing them over, to be hashed together on every core.
    public static let batchSize = 8192

    public private(set) var head = LedgerHead.genesis
    public private(set) var entriesChecked: Int64 = 0
    public private(set) var debitUnits: Int64 = 0
    public private(set) var creditUnits: Int64 = 0
    public private(set) var userNetUnits: Int64 = 0
    public private(set) var firstBreak: LedgerBreak?
    /// A stored checkpoint this verification must reproduce when it reaches the checkpoint's entry.
    private var confirming: LedgerCheckpoint?

    public init() {}

    /// Resumes after `checkpoint`; with `confirming`, also recounts a stored checkpoint on the way.
    public init(resumingFrom checkpoint: LedgerCheckpoint, confirming: LedgerCheckpoint? = nil) {
        head = checkpoint.head
        entriesChecked = checkpoint.entries
        debitUnits = checkpoint.debitUnits
        creditUnits = checkpoint.creditUnits
        userNetUnits = checkpoint.userNetUnits
        self.confirming = confirming.flatMap { $0.head.lastID > checkpoint.head.lastID ? $0 : nil }
    }

    /// Where this verification stands, to be stored once it ended without a break.
    public var checkpoint: LedgerCheckpoint {
        LedgerCheckpoint(
            head: head, entries: entriesChecked, debitUnits: debitUnits, creditUnits: creditUnits, userNetUnits: userNetUnits)
    }

    /// Returns false once a break is found; callers can stop reading.
    public mutating func check(_ entry: LedgerEntry) -> Bool {
        check(entry, hashMatches: entry.computedHash() == entry.entryHash)
    }

    /// Checks entries in order, hashing them on every core first: the hashes are independent of each other,
    /// only the links between entries need the order.
    public mutating func check(_ entries: [LedgerEntry]) -> Bool {
        guard firstBreak == nil else { return false }
        return check(entries, hashesMatch: Self.hashesMatch(entries))
    }

    /// Checks entries in order, given whether each one's stored hash matched its computed one.
    mutating func check(_ entries: [LedgerEntry], hashesMatch: [Bool]) -> Bool {
        precondition(entries.count == hashesMatch.count, "one hash result per entry")
        guard firstBreak == nil else { return false }
        for (entry, matches) in zip(entries, hashesMatch) {
            guard check(entry, hashMatches: matches) else { return false }
        }
        return true
    }

    static func hashesMatch(
        _ entries: [LedgerEntry],
        workers: Int = min(max(1, ProcessInfo.processInfo.activeProcessorCount), 8)
    ) -> [Bool] {
        guard workers > 1, entries.count >= 256 else { return entries.map { $0.computedHash() == $0.entryHash } }
        var matches = [Bool](repeating: false, count: entries.count)
        let chunk = (entries.count + workers - 1) / workers
        matches.withUnsafeMutableBufferPointer { output in
            nonisolated(unsafe) let output = output
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                // Each worker writes only its own slice of the output.
                for index in (worker * chunk)..<min(entries.count, (worker + 1) * chunk) {
                    output[index] = entries[index].computedHash() == entries[index].entryHash
                }
            }
        }
        return matches
    }

    private mutating func check(_ entry: LedgerEntry, hashMatches: Bool) -> Bool {
        guard firstBreak == nil else { return false }
        if entry.id != head.lastID + 1 {
            firstBreak = .missingEntry(expectedID: head.lastID + 1, foundID: entry.id)
        } else if entry.prevHash != head.lastHash {
            firstBreak = .prevHashMismatch(id: entry.id)
        } else if !hashMatches {
            firstBreak = .hashMismatch(id: entry.id)
        }
        guard firstBreak == nil else { return false }
        // A sum past Int64 cannot come from real entries; report it rather than trap.
        let (debits, o1) = debitUnits.addingReportingOverflow(entry.side == .debit ? entry.amountUnits : 0)
        let (credits, o2) = creditUnits.addingReportingOverflow(entry.side == .credit ? entry.amountUnits : 0)
        let userChangeUnits = entry.account == .userToken ? (entry.side == .debit ? entry.amountUnits : -entry.amountUnits) : 0
        let (userNet, o3) = userNetUnits.addingReportingOverflow(userChangeUnits)
        guard !o1, !o2, !o3, entry.amountUnits > 0 else {
            firstBreak = .hashMismatch(id: entry.id)
            return false
        }
        debitUnits = debits
        creditUnits = credits
        userNetUnits = userNet
        head = LedgerHead(entry)
        entriesChecked += 1
        if let confirming, confirming.head.lastID == head.lastID {
            self.confirming = nil
            guard confirming == checkpoint else {
                firstBreak = .checkpointMismatch(id: head.lastID)
                return false
            }
        }
        return true
    }

    /// Call after the last entry with the stored head, which catches truncation of the chain's tail.
    public mutating func finish(storedHead: LedgerHead) {
        guard firstBreak == nil else { return }
        if storedHead != head {
            firstBreak = .headMismatch(headID: storedHead.lastID, lastID: head.lastID)
        } else if let confirming {
            // The checkpoint names an entry past the chain's end.
            firstBreak = .checkpointMismatch(id: confirming.head.lastID)
        } else if debitUnits != creditUnits {
            firstBreak = .unbalanced(debitUnits: debitUnits, creditUnits: creditUnits)
        }
    }
}

/// Overlaps reading with hashing for a caller that reads on a thread of its own (not the cooperative pool): `add`
/// hands a batch to other threads and returns at once, so the caller decodes the next batch while this one is
/// hashed. Links are still checked strictly in order. Verifying a long ledger is about half decoding and half
/// hashing, so the two overlap on a second core. Only the thread that made it may use it.
public final class PipelinedLedgerVerifier {
    /// One batch being hashed; `done` orders the hashing thread's writes before the reads that follow its wait.
    private final class Hashing: @unchecked Sendable {
        let entries: [LedgerEntry]
        var hashesMatch: [Bool] = []
        let done = DispatchSemaphore(value: 0)

        init(_ entries: [LedgerEntry]) { self.entries = entries }
    }

    /// A serial queue of its own gets a thread even when the global pool is busy, so a wait on it always ends.
    private static let hashingQueue = DispatchQueue(label: "pkr.ledger-verify.hashing")

    private var verifier: LedgerChainVerifier
    private var inFlight: Hashing?

    public init(_ verifier: LedgerChainVerifier = LedgerChainVerifier()) {
        self.verifier = verifier
    }

    /// Starts hashing `entries` after checking the batch before it. Returns false once a break is found.
    public func add(_ entries: [LedgerEntry]) -> Bool {
        settle()
        guard verifier.firstBreak == nil else { return false }
        let hashing = Hashing(entries)
        Self.hashingQueue.async {
            hashing.hashesMatch = LedgerChainVerifier.hashesMatch(hashing.entries)
            hashing.done.signal()
        }
        inFlight = hashing
        return true
    }

    /// Checks the last batch, then the stored head against the chain's end.
    public func finish(storedHead: LedgerHead) -> LedgerChainVerifier {
        settle()
        verifier.finish(storedHead: storedHead)
        return verifier
    }

    private func settle() {
        guard let hashing = inFlight else { return }
        inFlight = nil
        hashing.done.wait()
        _ = verifier.check(hashing.entries, hashesMatch: hashing.hashesMatch)
    }
}
