/// What the monitor tells its watchdog, one datagram each: `<sequence> <verb> [argument]`. The watchdog
/// (`Sources/BatonWatchdog/main.c`, C) parses these and formats the replies; this is the monitor's side.
public enum WatchdogCommand: Sendable, Equatable {
    /// This node leads: stop PostgreSQL unless another renewal comes before `deadline`
    /// (CLOCK_MONOTONIC nanoseconds, which every process on the machine shares).
    case lead(deadline: UInt64)
    /// This node does not lead (or has been fenced): nothing to guard.
    case standDown
    /// Stop PostgreSQL now.
    case fenceNow
    /// Are you there? (The answer says whether it is armed.)
    case ping
    /// Exit, unless armed: the monitor stops cleanly.
    case quit
    /// Which postmaster would you fence? (The answer carries its PID; 0: none runs.) An earlier
    /// watchdog does not answer it.
    case whichPostmaster
}

/// One request with the sequence number its answer carries.
public struct WatchdogRequest: Sendable, Equatable {
    public var sequence: UInt64
    public var command: WatchdogCommand

    public init(sequence: UInt64, command: WatchdogCommand) {
        self.sequence = sequence
        self.command = command
    }

    public var text: String {
        switch command {
        case .lead(let deadline): return "\(sequence) L \(deadline)"
        case .standDown: return "\(sequence) N"
        case .fenceNow: return "\(sequence) F"
        case .ping: return "\(sequence) P"
        case .quit: return "\(sequence) Q"
        case .whichPostmaster: return "\(sequence) W"
        }
    }
}

/// The watchdog's answer to one request.
public struct WatchdogReply: Sendable, Equatable {
    public enum State: String, Sendable {
        /// Guarding a deadline.
        case armed
        /// Nothing to guard.
        case idle
        /// It cannot guard as asked (a required kernel watchdog is unusable): the monitor must not lead.
        case refused
    }
    public var sequence: UInt64
    public var state: State
    /// In the answer to ``WatchdogCommand/whichPostmaster``: the postmaster's PID, 0 when none runs.
    public var postmaster: Int32?

    public init(sequence: UInt64, state: State, postmaster: Int32? = nil) {
        self.sequence = sequence
        self.state = state
        self.postmaster = postmaster
    }

    public init?(text: String) {
        let words = text.split(separator: " ")
        guard words.count == 2 || words.count == 3, let sequence = UInt64(words[0]), let state = State(rawValue: String(words[1])) else { return nil }
        self.sequence = sequence
        self.state = state
        if words.count == 3 {
            guard let pid = Int32(words[2]), pid >= 0 else { return nil }
            postmaster = pid
        }
    }
}

/// The files a node's watchdog keeps in the monitor's state directory.
public enum WatchdogFiles {
    public static func socket(stateDirectory: String) -> String { stateDirectory + "/watchdog.sock" }
    public static func pid(stateDirectory: String) -> String { stateDirectory + "/watchdog.pid" }
    public static func lock(stateDirectory: String) -> String { stateDirectory + "/watchdog.lock" }
    public static func log(stateDirectory: String) -> String { stateDirectory + "/watchdog.log" }
}
