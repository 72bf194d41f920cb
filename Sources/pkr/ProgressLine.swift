import Foundation
import Synchronization

/// Progress of a long command on standard error: one line redrawn in place on a terminal, a plain line every few
/// seconds otherwise (logs, CI). The command prints its one-line summary itself when it ends.
final class ProgressLine: Sendable {
    private struct State {
        var lastDrawnNanos: UInt64 = 0
        var drewInPlace = false
    }

    private let task: String
    private let isTerminal: Bool
    private let intervalNanos: UInt64
    private let startedNanos = DispatchTime.now().uptimeNanoseconds
    private let state = Mutex(State())

    init(_ task: String) {
        self.task = task
        isTerminal = isatty(STDERR_FILENO) == 1
        intervalNanos = isTerminal ? 100_000_000 : 5_000_000_000
    }

    /// Shows `status` (for example "40,000 entries") unless a line was shown very recently.
    func update(_ status: @autoclosure () -> String) {
        let now = DispatchTime.now().uptimeNanoseconds
        let line: String? = state.withLock { state in
            guard now - state.lastDrawnNanos >= intervalNanos else { return nil }
            state.lastDrawnNanos = now
            state.drewInPlace = isTerminal
            return "\(task): \(status()) (\(elapsedText(now)))"
        }
        guard let line else { return }
        write(isTerminal ? "\r\u{1b}[K" + line : line + "\n")
    }

    /// Clears the redrawn line, so that the summary starts on a clean one.
    func finish() {
        if state.withLock({ $0.drewInPlace }) { write("\r\u{1b}[K") }
    }

    private func elapsedText(_ now: UInt64) -> String {
        let tenths = (now - startedNanos) / 100_000_000
        return "\(tenths / 10).\(tenths % 10) s"
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// 1234567 as "1,234,567", the same in every locale.
    static func count(_ value: Int) -> String {
        let digits = Array(String(value.magnitude))
        var out = value < 0 ? "-" : ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(digit)
        }
        return out
    }
}
