import Foundation

/// A progress display: a bar with rate and ETA redrawn in place on a terminal, plain
/// lines at every 10 % when stderr is not a terminal (logs stay readable).
final class Progress {
    let label: String
    let total: Int
    let start = Date()
    let isTerminal = isatty(STDERR_FILENO) == 1
    var lastDecile = -1

    init(_ label: String, total: Int) {
        self.label = label
        self.total = max(total, 1)
    }

    func update(_ done: Int) {
        // What was printed before this line is shown before it (stdout is buffered
        // when it is a file or a pipe; stderr is not).
        fflush(nil)
        let fraction = min(1, Double(done) / Double(total))
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        if isTerminal {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
            let line = String(format: "\r%@ [%@] %3.0f%% %d/%d %.0f/s ETA %.0fs", label, bar, fraction * 100, done, total, rate, eta)
            FileHandle.standardError.write(Data(line.utf8))
        } else {
            let decile = Int(fraction * 10)
            guard decile > lastDecile else { return }
            lastDecile = decile
            FileHandle.standardError.write(Data(String(format: "%@: %.0f%% (%d/%d, %.0f/s)\n", label, fraction * 100, done, total, rate).utf8))
        }
    }

    func finish() {
        update(total)
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
