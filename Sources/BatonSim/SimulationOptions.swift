import BatonCore

/// What one simulated run looks like (the seed draws everything else).
public struct SimulationOptions: Sendable {
    public var nodes = 3
    public var synchronousMode: SynchronousMode = .off
    /// The cluster's failsafe_mode; nil: Baton's shipped default.
    public var failsafeMode: Bool?
    /// Faults start within this time (after a quiet first 5 s).
    public var faultPhase: Duration = .seconds(60)
    /// Then no new fault for this long: the cluster must have a primary at its end.
    public var quietPhase: Duration = .seconds(45)
    public var faults = 4
    /// The kinds of fault the seed draws from.
    public var kinds: [FaultKind] = FaultKind.allCases
    /// A rule broken on purpose, to show the simulator catches it.
    public var mutant: Mutant?
    /// These faults instead of drawn ones (a scenario a test spells out; the seed still draws the
    /// rest: timings of the loops, targets that are not the leader).
    public var script: [Fault]?
    /// Each node runs a pgbouncer and its agent (off: the seeds found before the agents joined replay
    /// as they were found).
    public var bouncers = true
    /// Before taking over a silent leader, a candidate asks that leader's PostgreSQL whether it still
    /// takes writes (`MonitorLoop.askSilentLeader`). Off, the takeover's timing is proven alone: the
    /// question is a second line, whose answer a slow or unreachable machine does not give in time.
    public var askSilentLeader = true

    public init() {}
}

/// A rule of Baton's broken on purpose: the simulator must catch each within the CI seed budget (its
/// power is checked on every run).
public enum Mutant: String, Sendable, CaseIterable {
    /// Decide as if no synchronous standby were recorded and synchronous mode were off.
    case ignoreSyncRecord = "ignore-sync-record"
    /// Take a silent leader's lock over as soon as it is silent for the margin alone, before its
    /// watchdog's deadline.
    case takeOverBeforeDeadline = "take-over-before-deadline"
    /// A heartbeat whose check-and-set did not get through (the key moved on, or Consul did not answer)
    /// moves the watchdog's deadline on anyway, and one that finds the key another's does not fence.
    case renewAfterLostCAS = "renew-after-lost-cas"
    /// The watchdog fences two seconds after its deadline.
    case lateWatchdog = "late-watchdog"
    /// The leader does not publish its fencing promise: every node times a takeover by its own
    /// configuration (the rule before invariant 12).
    case noFencingPromise = "no-fencing-promise"
    /// A member grants a failsafe request for its own fence period, not the leader's (the rule before
    /// the simulator found that a raised fence_timeout outlives such a promise).
    case failsafeOwnPeriod = "failsafe-own-period"
    /// A member times a takeover by the latest promise it made the leader in a member round, whatever
    /// key index that promise named (the rule without the index: a promise from before the leader's
    /// last write, which armed a longer fence, ends too soon).
    case promiseBeforeTheWrite = "promise-before-the-write"
    /// A leader asks for failsafe grants although its PostgreSQL is down (the rule before finding 5):
    /// the members it holds off cannot take over while it is cut from Consul.
    case failsafeForADeadPrimary = "failsafe-for-a-dead-primary"
    /// Candidates are ranked on the others' reports alone, never on what their node APIs answer now
    /// (the rule before finding 12). Measured (`lessAdvancedPromotions`), not an invariant.
    case rankOnReports = "rank-on-reports"
    /// The primary stops relying on its synchronous standby at the first loop that finds it not
    /// streaming (the rule before finding 14): a flap leaves nobody eligible for a while.
    case dropFlappingStandby = "drop-flapping-standby"
    /// The monitors decide as if automatic failover were never paused.
    case ignorePause = "ignore-pause"
    /// A stepping-down primary takes the switchover target to have received its shutdown checkpoint
    /// whatever it received (the check before the handover skipped).
    case handOverUnreceived = "hand-over-unreceived"
    /// A pgbouncer agent resumes its clients on the switchover's target as soon as the old primary let
    /// the lock go, before the target leads and is promoted.
    case resumeBeforeLeads = "resume-before-leads"
    /// A candidate takes over a silent leader without asking that leader's PostgreSQL whether it still
    /// takes writes (the rule before `guardians-killed`: a leader whose monitor and watchdog were killed
    /// together runs a writable primary nobody fences).
    case takeOverUnasked = "take-over-unasked"
}
