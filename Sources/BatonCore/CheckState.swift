/// The monitor's state file, read by `baton check` (keepalived's track script): whether this node holds
/// the leader lock with a writable primary, and until when that holds — the lease deadline, the moment
/// its watchdog fences PostgreSQL unless another heartbeat reaches Consul first (CLOCK_MONOTONIC
/// nanoseconds, this machine's own clock). The check fails once the deadline passed, whatever the
/// file says, so two nodes never pass it at once: a replica takes over only after the old leader's
/// deadline (by fence_timeout plus a margin), and it leads only from then on.
///
/// The file also says when the monitor last wrote it (every loop): a monitor that died or hangs makes
/// its node fail the check as well — and in which boot of the machine (the kernel's boot ID), since the
/// monotonic clock starts again at every boot: a file a crashed leader left behind never passes.
public struct CheckState: Sendable, Equatable {
    public var leading: Bool
    /// The lease deadline (0 when not leading).
    public var deadline: UInt64
    /// When the monitor wrote the file.
    public var written: UInt64
    /// The monitor's loop interval, in nanoseconds: it rewrites the file at least this often.
    public var loopWait: UInt64
    /// The machine's boot ID when the file was written (`/proc/sys/kernel/random/boot_id`); nil in a
    /// file written before boot IDs were, judged by the clock alone.
    public var boot: String?

    public init(leading: Bool, deadline: UInt64, written: UInt64, loopWait: UInt64, boot: String? = nil) {
        self.leading = leading
        self.deadline = leading ? deadline : 0
        self.written = written
        self.loopWait = loopWait
        self.boot = boot
    }

    public static func path(stateDirectory: String) -> String { stateDirectory + "/monitor.state" }

    public var text: String {
        "\(leading ? "primary" : "not-primary") \(deadline) \(written) \(loopWait)\(boot.map { " " + $0 } ?? "")\n"
    }

    public init?(text: String) {
        let parts = text.split(separator: " ").map { $0.filter { !$0.isWhitespace } }
        guard parts.count == 4 || parts.count == 5, ["primary", "not-primary"].contains(parts[0]), let deadline = UInt64(parts[1]),
            let written = UInt64(parts[2]), let loop = UInt64(parts[3]), parts.count == 4 || !parts[4].isEmpty
        else { return nil }
        self.init(leading: parts[0] == "primary", deadline: deadline, written: written, loopWait: loop, boot: parts.count == 5 ? parts[4] : nil)
    }

    public enum Verdict: Equatable, Sendable {
        case primary
        case notPrimary(String)
    }

    /// Judges the state file's text at monotonic time `now` (nanoseconds) in the boot `boot` of the
    /// machine (nil when unknown).
    public static func verdict(_ text: String?, now: UInt64, boot: String?) -> Verdict {
        guard let text else { return .notPrimary("the monitor has written no state (is `baton monitor` running?)") }
        guard let state = CheckState(text: text) else { return .notPrimary("the monitor's state file is malformed") }
        if let stale = state.staleness(now: now, boot: boot) { return .notPrimary(stale) }
        guard state.leading else { return .notPrimary("this node does not hold the leader lock with a writable primary") }
        guard now < state.deadline else {
            return .notPrimary("the lease ran out \((now - state.deadline) / 1_000_000) ms ago (no heartbeat reached Consul)")
        }
        return .primary
    }

    /// keepalived's track script beside its tracked file (`baton check --beside-track-file`): nil — pass —
    /// on every node whose monitor is alive, unless a tracked file says this node leads (0), in which
    /// case only with the full verdict: the monitor's state saying it leads with a lease that has not run
    /// out. The tracked file (watched with inotify) then moves the VIP the moment a node starts or stops
    /// leading (or becomes vacant, ``VRRPStanding``); the script, run once a second, only catches a
    /// monitor that died or hangs while the file still says what it last knew. Both gates together are
    /// as strict as ``verdict(_:now:boot:)`` alone for a node that leads. `trackFiles`: the tracked
    /// file's content and that of the one an earlier keepalived.conf tracks (nil when missing).
    public static func besideTrackFile(_ text: String?, trackFiles: [String?], now: UInt64, boot: String?) -> String? {
        guard let text else { return "the monitor has written no state (is `baton monitor` running?)" }
        guard let state = CheckState(text: text) else { return "the monitor's state file is malformed" }
        if let stale = state.staleness(now: now, boot: boot) { return stale }
        guard trackFiles.contains(where: VRRPStanding.saysLeading) else { return nil }
        if case .notPrimary(let why) = verdict(text, now: now, boot: boot) { return "the tracked file says this node leads, but \(why)" }
        return nil
    }

    /// Why the monitor counts as dead or hung (its file is older than three loops), or nil. A file
    /// written later than now by this machine's monotonic clock was written before the machine last
    /// started (the clock never runs back within one boot): a leader that crashed must not pass the
    /// check again when keepalived starts before its monitor.
    public func staleness(now: UInt64, boot current: String?) -> String? {
        if let boot, let current, boot != current { return "the monitor's state is from the machine's previous boot" }
        guard now >= written else { return "the monitor's state is from the machine's previous boot" }
        let age = now - written
        return age > max(loopWait, 100_000_000) * 3 ? "the monitor's state is \(age / 1_000_000) ms old" : nil
    }
}
