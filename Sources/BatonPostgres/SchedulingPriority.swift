import CBatonFence
import CBatonSpawn
import Foundation

/// The monitor's scheduling priority: its leader renews the lease every loop and the watchdog fences
/// PostgreSQL `fence_timeout` after the last renewal, so under load the monitor must get the CPU before
/// the database it guards does.
public enum SchedulingPriority {
    /// The nice value the monitor and its watchdog run at.
    public static let daemonNice = Int32(BATON_DAEMON_NICE)

    /// Raises every thread of this process to ``daemonNice``; whatever it starts (``CommandRunner``:
    /// PostgreSQL, pg_rewind, pgBackRest) runs at the default priority all the same.
    /// - Throws: ``PostgresError`` when it may not (not root, no CAP_SYS_NICE).
    public static func raise() throws(PostgresError) {
        let rc = baton_raise_priority(daemonNice)
        guard rc == 0 else { throw PostgresError("cannot raise the scheduling priority to nice \(daemonNice): \(String(cString: strerror(-rc)))") }
    }
}
