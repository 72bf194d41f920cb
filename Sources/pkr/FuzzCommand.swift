import ArgumentParser
import Foundation
import PKRApplication
import PKRFuzz
import PKRGateway

struct Fuzz: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Feed seeded hostile inputs to the webhook verifier, the payload parser and the money parser, "
            + "checking their properties on every input. Exit 1 on the first violation, with how to replay it.")

    @Option(help: "Seed; every input is derived from the seed, the target and its iteration number.")
    var seed: UInt64 = 20261126
    @Option(help: "Inputs per target.")
    var iterations = 1_000_000
    @Option(help: "Targets, comma-separated: verifier, parser, money.")
    var targets = "verifier,parser,money"
    @Option(help: "Run only this iteration (to replay a failure).")
    var only: Int?

    func run() throws {
        guard iterations > 0 else { throw ValidationError("--iterations must be positive") }
        if let only, only < 0 { throw ValidationError("--only must be an iteration number, 0 or more") }
        let fuzzer = Fuzzer(seed: seed)
        for name in targets.split(separator: ",").map(String.init) {
            guard let target = Fuzzer.Target(rawValue: name) else { throw ValidationError("unknown target \(name)") }
            print("fuzz \(target.rawValue): seed \(seed), \(only.map { "iteration \($0)" } ?? "\(iterations) inputs")")
            let started = ContinuousClock.now
            do {
                let report = try fuzzer.run(target, iterations: iterations, only: only)
                let seconds = (ContinuousClock.now - started).components
                let elapsed = Double(seconds.seconds) + Double(seconds.attoseconds) / 1e18
                let outcomes = report.outcomes.sorted { $0.value > $1.value }.prefix(8).map { "\($0.key) \($0.value)" }
                print("  \(report.inputs) inputs in \(String(format: "%.1f", elapsed)) s, \(report.accepted) accepted, no violation")
                print("  outcomes: \(outcomes.joined(separator: ", "))")
            } catch {
                print("  VIOLATION \(error)")
                print("  replay: pkr fuzz --seed \(seed) --targets \(target.rawValue) --only \(error.iteration)")
                throw ExitCode.failure
            }
        }
    }
}
