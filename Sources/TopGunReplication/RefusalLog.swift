import Dispatch
import Logging
import Synchronization

/// Refused handshakes, logged at most once per reason every `interval`, with the count
/// of those not logged since: a flood of bad tokens or wrong secrets cannot flood the
/// log (every refusal is still counted in `Statistics.handshakesRefused`).
final class RefusalLog: Sendable {
    private struct Reason {
        var loggedAt: UInt64
        var suppressed: Int
    }
    private let reasons = Mutex<[String: Reason]>([:])
    private let logger: Logger
    private let intervalNanos: UInt64
    /// Distinct reasons remembered; past it, reasons are grouped by error code.
    static let maxReasons = 64

    init(logger: Logger, interval: Duration = .seconds(10)) {
        self.logger = logger
        let c = interval.components
        self.intervalNanos = UInt64(c.seconds) * 1_000_000_000 + UInt64(c.attoseconds / 1_000_000_000)
    }

    /// Logs `error` unless its reason was logged within the interval; then counts it.
    func record(_ error: any Error, now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        let text = "\(error)"
        let suppressed: Int? = reasons.withLock { reasons in
            var key = text
            if reasons[key] == nil, reasons.count >= Self.maxReasons {
                key = (error as? ReplicationError)?.code.rawValue ?? "other"
            }
            if var reason = reasons[key] {
                guard now &- reason.loggedAt >= intervalNanos else {
                    reason.suppressed += 1
                    reasons[key] = reason
                    return nil
                }
                reasons[key] = Reason(loggedAt: now, suppressed: 0)
                return reason.suppressed
            }
            reasons[key] = Reason(loggedAt: now, suppressed: 0)
            return 0
        }
        guard let suppressed else { return }
        var metadata: Logger.Metadata = ["reason": "\(text)"]
        if suppressed > 0 { metadata["refused_since_last_line"] = "\(suppressed)" }
        logger.warning("refused peer", metadata: metadata)
    }
}
