import Foundation

/// `baton check`, keepalived's track script: passes only on the node whose monitor, in its last
/// iteration, held the leader lock and saw a writable primary — so that keepalived moves the virtual IP
/// off every other node. It reads the monitor's state file and nothing else, so it answers in
/// milliseconds; a state older than three loop intervals (a dead or hung monitor) fails.
public enum CheckState {
    public static func path(stateDirectory: String) -> String { stateDirectory + "/monitor.state" }

    public enum Verdict: Equatable {
        case primary
        case notPrimary(String)
    }

    /// Judges the state file's text at monotonic time `now` (nanoseconds).
    public static func verdict(_ text: String?, now: UInt64) -> Verdict {
        guard let text else { return .notPrimary("the monitor has written no state (is `baton monitor` running?)") }
        let parts = text.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard parts.count == 3, let written = UInt64(parts[1]), let loop = UInt64(parts[2]) else {
            return .notPrimary("the monitor's state file is malformed")
        }
        let age = now >= written ? now - written : 0
        guard age <= max(loop, 100_000_000) * 3 else { return .notPrimary("the monitor's state is \(age / 1_000_000) ms old") }
        return parts[0] == "primary" ? .primary : .notPrimary("this node does not hold the leader lock with a writable primary")
    }
}
