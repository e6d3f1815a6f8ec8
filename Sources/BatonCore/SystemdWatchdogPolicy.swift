/// When the monitor tells systemd it is alive (`WATCHDOG=1` under the unit's `WatchdogSec`): while its
/// loop keeps completing, or while a program it waits for (pg_basebackup, pg_rewind, pg_ctl) still
/// runs — a clone of a large database is slow, not wedged. A loop that has made no progress for
/// ``stallLimit`` with no program running is wedged: the pings stop, and systemd restarts the monitor
/// one `WatchdogSec` later (a leader's PostgreSQL is fenced by baton-watchdog as ever, since nobody
/// renews its deadline).
public struct SystemdWatchdogPolicy: Sendable, Equatable {
    /// systemd's `WATCHDOG_USEC`: the longest it waits between two pings.
    public let interval: Duration

    public init(interval: Duration) { self.interval = interval }

    /// How often to ping: three times per interval, so one late ping is no restart.
    public var pingEvery: Duration { max(interval / 3, .milliseconds(100)) }

    /// How long the loop may go without completing before it counts as wedged: twice the interval,
    /// and at least a minute (a loop waits for slow Consul calls and SQL with their own timeouts).
    public var stallLimit: Duration { max(interval * 2, .seconds(60)) }

    /// Whether to ping now. Times are CLOCK_MONOTONIC nanoseconds; `loopRanAt` is 0 until the first
    /// loop completes, when the time the monitor started counts instead.
    public func alive(now: UInt64, loopRanAt: UInt64, startedAt: UInt64, programsRunning: Int) -> Bool {
        if programsRunning > 0 { return true }
        let progress = max(loopRanAt, startedAt)
        let limit = UInt64(stallLimit.components.seconds) * 1_000_000_000 + UInt64(stallLimit.components.attoseconds / 1_000_000_000)
        return now <= progress || now - progress < limit
    }
}
