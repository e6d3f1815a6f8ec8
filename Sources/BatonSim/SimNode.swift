import BatonCore
import ConsulAPI

/// One simulated machine: its PostgreSQL, and the memory of the Baton processes on it — the monitor's
/// (``MonitorState``, the configuration it last read), the lease's (session, heartbeat) and the
/// watchdog's deadline. One simulation owns it. What a machine's death wipes is the monitor's and lease's; the session file
/// and the data directory stay.
final class SimNode {
    let index: Int
    let name: NodeName
    var db: SimDatabase
    var alive = true
    /// Bumped at each start of the node: events of an earlier life are dropped.
    var generation = 0
    /// The monitor process (loop and lease) is stopped until then (SIGSTOP).
    var monitorFrozenTill: Duration = .zero
    /// The whole machine is stopped until then: PostgreSQL, monitor, watchdog.
    var nodeFrozenTill: Duration = .zero
    var cutFromConsul = false
    /// The monitor and the watchdog were killed together (`guardians-killed`), and no watchdog has
    /// guarded this node's PostgreSQL since.
    var guardiansKilled = false

    // The monitor.
    var memory = MonitorState()
    /// The configuration the monitor last read (and told its lease).
    var config: ClusterConfig {
        get { lease.config }
        set { lease.config = newValue }
    }
    var lastAction = ""
    /// A planned switchover this node's monitor is carrying out (its loop waits meanwhile).
    var steppingDown: Simulation.SteppingDown?
    var statusWritten: (status: MemberStatus, at: Duration)?
    /// What this node's API answers from (`MonitorLoop.publishView`): the failsafe grants it makes.
    var view: NodeView

    // The lease.
    var session: String?
    /// The session ID saved on disk (a restarted monitor adopts it while Consul knows it).
    var sessionFile: String?
    var sessionConfirmed: Duration?
    /// The TTL the session was made with (nil: adopted, not known).
    var sessionTTL: GoDuration?
    /// The lease's rules and memory: leading, the last beat, the deadline, failsafe.
    var lease: LeaseState

    // The pgbouncer (its clients' servers on the first primary at the start) and its agent.
    var bouncer = Simulation.Bouncer(target: 0)
    var bouncerMemory = BouncerAgentMemory()
    var bouncerReported: (status: BouncerStatus, at: Duration)?
    /// The leader key's holder the agent last fully decided from, and when.
    var bouncerDecided: (leader: [UInt8], at: Duration)?

    // The watchdog.
    var watchdogDeadline: Duration?
    var watchdogGeneration = 0

    init(index: Int, name: NodeName, standby: Bool) {
        self.index = index
        self.name = name
        self.db = SimDatabase(standby: standby)
        self.view = NodeView(node: name)
        self.lease = LeaseState(node: name)
    }

    func frozen(_ now: Duration) -> Bool { nodeFrozenTill > now }

    /// A writable primary that no watchdog has guarded since its monitor and watchdog were killed: a
    /// restarted monitor guards it again once it leads (its watchdog armed) or stops it.
    var unguardedPrimary: Bool { guardiansKilled && watchdogDeadline == nil && db.running && !db.standbySignal }

    /// When the monitor process runs again, if it is stopped now.
    func monitorFrozenUntil(_ now: Duration) -> Duration? {
        let until = max(monitorFrozenTill, nodeFrozenTill)
        return until > now ? until : nil
    }

    func nodeFrozenUntil(_ now: Duration) -> Duration? { nodeFrozenTill > now ? nodeFrozenTill : nil }

    /// The machine starts again after its death: PostgreSQL is down (nothing starts it but the monitor),
    /// the monitor and lease start afresh, the watchdog is not armed.
    func restart() {
        alive = true
        guardiansKilled = false
        restartMonitor()
        // pgbouncer starts again on the target its file names, taking clients; its agent afresh.
        bouncer.paused = false
        bouncerMemory = BouncerAgentMemory()
        bouncerReported = nil
        bouncerDecided = nil
        db.receiverFrozen = false
    }

    /// The monitor process starts afresh (its memory and lease; the session file stays), the watchdog
    /// not armed; events of its earlier life are dropped.
    func restartMonitor() {
        generation += 1
        memory = MonitorState()
        lease = LeaseState(node: name)
        lastAction = ""
        steppingDown = nil
        statusWritten = nil
        view = NodeView(node: name)
        session = nil
        sessionConfirmed = nil
        sessionTTL = nil
        watchdogDeadline = nil
        watchdogGeneration += 1
    }
}
