/// SplitMix64: a tiny, well-known generator whose whole state is one number, so a seed replays the
/// same sequence on every machine and Swift version (the standard library's generator is not seedable).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The faults a chaos run injects.
public enum FaultKind: String, Sendable, CaseIterable, Codable {
    case killPostmaster = "kill-postmaster"
    case killBackend = "kill-backend"
    case killMonitor = "kill-monitor"
    case killWatchdog = "kill-watchdog"
    case killAgent = "kill-pgbouncer-agent"
    case killPgBouncer = "kill-pgbouncer"
    case killKeepalived = "kill-keepalived"
    /// Every process of the node killed, restarted after the duration.
    case nodeDeath = "node-death"
    /// The monitor and its watchdog stopped (SIGSTOP) while PostgreSQL runs, then continued.
    case freezeMonitor = "freeze-monitor"
    /// Every process of the node stopped (a paused VM), then continued.
    case freezeNode = "freeze-node"
    /// The node's link down, then up.
    case partition = "partition"
    /// Two nodes cannot reach each other; both reach Consul.
    case pairPartition = "pair-partition"
    /// The node cannot reach Consul; it reaches the other nodes.
    case consulCut = "consul-cut"
    case consulStop = "consul-stop"
    /// Consul answers late (a delaying proxy in front of it).
    case consulSlow = "consul-slow"
    /// The node's VRRP adverts dropped.
    case vrrpPartition = "vrrp-partition"
    /// The synchronous standby's replication link drops again and again.
    case syncLinkFlap = "sync-link-flap"
    /// `baton switchover` to a replica at a random moment.
    case switchover = "switchover"
    /// Two faults at once.
    case overlap = "overlap"
    /// The Consul server answers every call `500 No cluster leader` (a leader election).
    case consulElection = "consul-election"
    /// The Consul server holds every call until the fault ends.
    case consulHang = "consul-hang"
    /// The sessions of the target's Consul agent are invalidated (a restarted agent): its locks go free.
    case agentRestart = "agent-restart"
    /// A configuration change mid-run (issue 23, finding 2): `baton config set fence_timeout=6s`, then —
    /// with the leader's monitor and watchdog frozen — `fence_timeout=2s`, held, then thawed and set
    /// back to 3s.
    case configChange = "config-change"
    /// Every standby's WAL receiver stopped (SIGSTOP) while the writers write, then the primary's
    /// postmaster killed as they continue (issue 23, finding 1).
    case laggingCrash = "lagging-crash"
    /// Consul's store saved, the run goes on for the duration, then the store is restored from that
    /// snapshot: keys, sessions and indexes roll back (issue 23, finding 9).
    case consulRestore = "consul-restore"

    /// Consul's own trouble, never the database's: a failover during a fault of these kinds alone is an
    /// unnecessary one (a node cut from Consul is one too: the members vouch for it in failsafe mode).
    public var isConsulTrouble: Bool {
        switch self {
        case .consulElection, .consulHang, .agentRestart, .consulSlow, .consulStop, .consulCut: return true
        default: return false
        }
    }

    /// Which node a fault of this kind is aimed at, when it is aimed at one.
    public var aimed: Bool {
        switch self {
        case .consulStop, .consulSlow, .switchover, .overlap, .syncLinkFlap, .consulElection, .consulHang, .configChange, .laggingCrash, .consulRestore: return false
        default: return true
        }
    }

    /// How long the fault lasts before it is healed: the range of seconds to draw from.
    public var durations: ClosedRange<Double> {
        switch self {
        case .killPostmaster, .killBackend, .killWatchdog, .killPgBouncer, .killKeepalived, .switchover: return 0...0
        case .killMonitor, .killAgent: return 0.5...10
        case .nodeDeath: return 2...15
        case .freezeMonitor, .freezeNode: return 1...10
        case .partition, .pairPartition, .consulCut, .vrrpPartition: return 2...15
        case .consulStop: return 1...30
        case .consulSlow: return 5...15
        case .consulElection: return 1...15
        case .consulHang: return 1...10
        case .agentRestart: return 0...0
        case .configChange: return 2...10
        case .laggingCrash: return 2...6
        case .consulRestore: return 1...20
        case .syncLinkFlap: return 2...8
        case .overlap: return 0...0
        }
    }
}

/// Whom a fault is aimed at, resolved when it is injected (the cluster moves between faults).
public enum TargetRole: String, Sendable, CaseIterable, Codable {
    case primary, replica, synchronousStandby = "synchronous-standby", random
}

/// One fault of the schedule, fully drawn from the seed.
public struct PlannedFault: Sendable, Equatable {
    public var kind: FaultKind
    public var target: TargetRole
    /// Seconds the fault lasts (0: a single act).
    public var duration: Double
    /// For a slow Consul: the delay of each answer, in seconds.
    public var delay: Double
    /// Which node number a `random` target or the second node of a pair becomes (1-based, modulo the
    /// nodes that qualify), drawn up front so that the schedule is the same on every run of the seed.
    public var pick: Int
    /// The faults an `overlap` combines.
    public var parts: [PlannedFault]

    public init(kind: FaultKind, target: TargetRole, duration: Double, delay: Double = 0, pick: Int = 0, parts: [PlannedFault] = []) {
        self.kind = kind
        self.target = target
        self.duration = duration
        self.delay = delay
        self.pick = pick
        self.parts = parts
    }

    public var description: String {
        if kind == .overlap { return "overlap(" + parts.map(\.description).joined(separator: " + ") + ")" }
        var text = kind.rawValue
        if kind.aimed { text += "(\(target.rawValue))" }
        if duration > 0 { text += " \((duration * 10).rounded() / 10)s" }
        if kind == .consulSlow { text += " delay \((delay * 10).rounded() / 10)s" }
        return text
    }
}

/// The schedule of a chaos run: the same seed gives the same faults, targets and durations.
public enum ChaosSchedule {
    /// - Parameter only: the kinds to draw from (all when nil): to replay one interplay of faults
    ///   (`--only freeze-node,consul-cut`). An overlap draws its two parts from the same kinds.
    public static func make(seed: UInt64, count: Int, synchronous: Bool, only: Set<FaultKind>? = nil) -> [PlannedFault] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { _ in draw(&generator, synchronous: synchronous, allowOverlap: true, only: only) }
    }

    /// Why a set of kinds cannot make a schedule (nil when it can).
    public static func problem(only: Set<FaultKind>, synchronous: Bool) -> String? {
        let usable = only.subtracting(synchronous ? [] : [.syncLinkFlap])
        if usable.isEmpty { return "no kind left to draw from" + (synchronous ? "" : " (sync-link-flap needs --sync on)") }
        if usable == [.overlap] { return "overlap needs at least one other kind to overlap" }
        return nil
    }

    static func draw(_ g: inout SplitMix64, synchronous: Bool, allowOverlap: Bool, only: Set<FaultKind>? = nil) -> PlannedFault {
        var kinds = FaultKind.allCases.filter { (allowOverlap || $0 != .overlap) && only?.contains($0) != false }
        if !synchronous { kinds.removeAll { $0 == .syncLinkFlap } }
        let kind = kinds[Int(g.next() % UInt64(kinds.count))]
        var roles = TargetRole.allCases
        if !synchronous { roles.removeAll { $0 == .synchronousStandby } }
        let target = roles[Int(g.next() % UInt64(roles.count))]
        let range = kind.durations
        let duration = range.lowerBound + (range.upperBound - range.lowerBound) * Double(g.next() % 1000) / 999
        let delay = 0.5 + 2.5 * Double(g.next() % 1000) / 999
        let pick = Int(g.next() % 64)
        var parts: [PlannedFault] = []
        if kind == .overlap {
            parts = [draw(&g, synchronous: synchronous, allowOverlap: false, only: only), draw(&g, synchronous: synchronous, allowOverlap: false, only: only)]
        }
        return PlannedFault(kind: kind, target: target, duration: (duration * 10).rounded() / 10, delay: (delay * 10).rounded() / 10, pick: pick, parts: parts)
    }
}
