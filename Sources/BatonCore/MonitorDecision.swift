import ConsulAPI

/// What the monitor sees of its own PostgreSQL.
public enum LocalPostgres: Sendable, Equatable {
    /// Not answering (crashed, stopped, hung past the probe's timeout).
    case down(standbySignal: Bool)
    /// A writable primary.
    case primary(position: LSN, timeline: Int)
    /// In recovery; `upstream` is the host:port its primary_conninfo names, `streaming` whether its WAL
    /// receiver streams.
    case standby(position: LSN, timeline: Int, upstream: String?, streaming: Bool)

    public var isUp: Bool { if case .down = self { return false } else { return true } }
}

/// Who holds the `leader` key, as the monitor last read it.
public enum LeaderState: Sendable, Equatable {
    /// Consul could not be read.
    case unknown
    /// Nobody holds the lock, for `since` already (the monitor's own clock).
    case free(since: GoDuration)
    /// `node` holds it; `mine` when it is this monitor's session.
    case held(by: NodeName, mine: Bool)
}

/// What the registered primary's monitor last reported, as a standby sees it.
public enum PrimaryReport: Sendable, Equatable {
    /// No other node is registered as primary.
    case none
    /// It reports (recently) a writable primary: it will take or keep the lock.
    case live(NodeName)
    /// It reports (recently) that its PostgreSQL is down or no longer primary.
    case down(NodeName)
    /// Its report is missing or stale: its monitor may be starting, dead, or cut off.
    case unknown(NodeName)
}

/// Everything one monitor iteration decides from.
public struct MonitorObservation: Sendable, Equatable {
    public var node: NodeName
    public var config: ClusterConfig
    public var local: LocalPostgres
    /// How long the local PostgreSQL has been down (zero when up).
    public var localDownFor: GoDuration
    public var leader: LeaderState
    /// Time since this monitor's last successful heartbeat as the leader (a check-and-set write of the
    /// leader key, sent after the session was renewed).
    public var sinceLastHeartbeat: GoDuration
    /// When another node holds the lock: how long its heartbeat (the leader key's modify index) has not
    /// changed, on this monitor's clock. Zero otherwise.
    public var leaderSilentFor: GoDuration
    /// The leader's `host:port`, from its registration, when another node leads.
    public var leaderEndpoint: String?
    /// Replicas' reports (this node's own included), for ranking.
    public var candidates: [CandidateState]
    public var lastPrimaryPosition: LSN?
    public var synchronousStandby: NodeName?
    /// Automatic failover paused cluster-wide (maintenance).
    public var paused: Bool
    public var primaryReport: PrimaryReport
    /// How long the local standby's WAL receiver has not been streaming (zero while it streams).
    public var notStreamingFor: GoDuration
    /// Starts of the local standby that failed in a row (a diverged history refuses to start).
    public var failedStarts: Int
    /// `nodes/<this node>` says primary: this node was the primary when it last registered.
    public var registeredPrimary: Bool
    /// The node a pending `baton switchover` or `baton failover` hands the baton to.
    public var requestedLeader: NodeName?

    public init(
        node: NodeName, config: ClusterConfig, local: LocalPostgres, localDownFor: GoDuration, leader: LeaderState,
        sinceLastHeartbeat: GoDuration, leaderSilentFor: GoDuration = .zero, leaderEndpoint: String?, candidates: [CandidateState], lastPrimaryPosition: LSN?,
        synchronousStandby: NodeName?, paused: Bool, primaryReport: PrimaryReport = .none, notStreamingFor: GoDuration = .zero,
        failedStarts: Int = 0, registeredPrimary: Bool = false, requestedLeader: NodeName? = nil
    ) {
        self.requestedLeader = requestedLeader
        self.failedStarts = failedStarts
        self.registeredPrimary = registeredPrimary
        self.primaryReport = primaryReport
        self.notStreamingFor = notStreamingFor
        self.node = node
        self.config = config
        self.local = local
        self.localDownFor = localDownFor
        self.leader = leader
        self.sinceLastHeartbeat = sinceLastHeartbeat
        self.leaderSilentFor = leaderSilentFor
        self.leaderEndpoint = leaderEndpoint
        self.candidates = candidates
        self.lastPrimaryPosition = lastPrimaryPosition
        self.synchronousStandby = synchronousStandby
        self.paused = paused
    }

    /// A primary stops taking writes this long after its last successful heartbeat: before a replica may
    /// take over a silent leader, and before its session can lapse in Consul.
    public var fenceAfter: GoDuration { config.fenceAfter }
}

/// What the monitor does next. Each iteration yields one decision; the shell carries it out (or, with
/// `--observe`, only logs it).
public enum MonitorAction: Sendable, Equatable, CustomStringConvertible {
    /// Keep holding the lock: renew the session and publish status.
    case keepLeading
    /// A planned switchover: stop the local primary cleanly (its WAL reaches the standbys), then release
    /// the lock for `to`.
    case stepDown(to: NodeName)
    /// Take the free lock (a writable primary retaking it, or the best candidate).
    case acquireLeader(reason: String)
    /// The leader `from` has been silent past the point where its watchdog stopped its PostgreSQL: take
    /// the lock from it (check-and-set on the leader key at the silent index, so that a heartbeat that
    /// got through after all wins; then its session is destroyed and the lock acquired), and promote.
    case takeOver(from: NodeName, reason: String)
    /// This node holds the lock and runs a standby: promote it.
    case promote
    /// Give up the lock at once (the local PostgreSQL failed and cannot be recovered in time).
    case releaseLeader(reason: String)
    /// Stop the local PostgreSQL now: it is a writable primary without the lock, or cannot prove it holds it.
    case fence(reason: String)
    /// Point the local standby at the leader (rewrite primary_conninfo, reload).
    case follow(leader: NodeName, endpoint: String)
    /// Start the local standby.
    case startStandby
    /// The local data directory was a primary's and another node leads: rewind it (re-clone if that
    /// fails, the old directory moved aside) and start it as the leader's standby.
    case rejoin(leader: NodeName)
    /// Nothing to do; the reason is shown by `baton status`.
    case wait(reason: String)

    public var description: String {
        switch self {
        case .keepLeading: return "keep leading"
        case .stepDown(let to): return "step down for \(to) (switchover)"
        case .acquireLeader(let r): return "acquire the leader lock (\(r))"
        case .takeOver(let from, let r): return "take the leader lock over from \(from) (\(r))"
        case .promote: return "promote"
        case .releaseLeader(let r): return "release the leader lock (\(r))"
        case .fence(let r): return "fence: stop PostgreSQL (\(r))"
        case .follow(let l, let e): return "follow \(l) at \(e)"
        case .startStandby: return "start PostgreSQL as a standby"
        case .rejoin(let l): return "rejoin as a standby of \(l) (pg_rewind, or a fresh clone)"
        case .wait(let r): return "wait: \(r)"
        }
    }
}

/// The monitor's decisions as a pure function of what it observed (issue #4's invariants in code):
/// a node takes writes only while it holds the lock; a primary that cannot prove it holds the lock
/// stops; only the best eligible replica takes a free lock, and it promotes only while holding it.
public enum MonitorDecision {
    public static func next(_ o: MonitorObservation) -> MonitorAction {
        if o.paused { return pausedDecision(o) }
        switch o.local {
        case .primary:
            return primaryDecision(o)
        case .down(let standbySignal):
            return downDecision(o, standbySignal: standbySignal)
        case .standby(_, _, let upstream, _):
            return standbyDecision(o, upstream: upstream)
        }
    }

    /// Maintenance: nothing is promoted, followed, restarted or rewound, and a primary whose Consul is
    /// away is not fenced (no replica can take over while every monitor is paused). A writable primary
    /// that sees another node holding the lock is still fenced: that is never safe.
    static func pausedDecision(_ o: MonitorObservation) -> MonitorAction {
        if case .primary = o.local {
            switch o.leader {
            case .held(let holder, false): return .fence(reason: "\(holder) holds the leader lock")
            case .held(_, true): return .keepLeading
            default: break
            }
        }
        return .wait(reason: "automatic failover is paused (baton resume ends it)")
    }

    static func primaryDecision(_ o: MonitorObservation) -> MonitorAction {
        switch o.leader {
        case .held(let holder, let mine):
            if mine {
                if o.sinceLastHeartbeat >= o.fenceAfter { return .fence(reason: "no heartbeat reached Consul for \(o.sinceLastHeartbeat)") }
                if let target = o.requestedLeader, target != o.node { return .stepDown(to: target) }
                return .keepLeading
            }
            return .fence(reason: "\(holder) holds the leader lock")
        case .free:
            // A writable primary with a free lock (its first start, or a lapsed session): retake it. No
            // replica can have promoted, since promotion needs the lock.
            return .acquireLeader(reason: "this node runs the primary and the lock is free")
        case .unknown:
            if o.sinceLastHeartbeat >= o.fenceAfter {
                return .fence(reason: "Consul unreachable and no heartbeat for \(o.sinceLastHeartbeat)")
            }
            return .wait(reason: "Consul unreachable; fencing in \(GoDuration(nanoseconds: o.fenceAfter.nanoseconds - o.sinceLastHeartbeat.nanoseconds)) unless it answers")
        }
    }

    static func downDecision(_ o: MonitorObservation, standbySignal: Bool) -> MonitorAction {
        if case .held(_, true) = o.leader {
            if o.localDownFor >= o.config.primaryStartTimeout {
                return .releaseLeader(reason: "PostgreSQL is down (for \(o.localDownFor))")
            }
            return .wait(reason: "PostgreSQL is down; primary_start_timeout \(o.config.primaryStartTimeout) not reached")
        }
        if standbySignal {
            if o.failedStarts >= 2, case .held(let holder, false) = o.leader, o.leaderEndpoint != nil, o.primaryReport == .live(holder) {
                return .rejoin(leader: holder)
            }
            return .startStandby
        }
        // A primary data directory without the lock must never start writable (invariant 7): it is
        // rewound to follow the leader, or waits until there is one.
        if case .held(let holder, false) = o.leader, o.leaderEndpoint != nil, o.primaryReport == .live(holder) { return .rejoin(leader: holder) }
        // The registered primary restarting (a node or cluster restart): it may start writable again, but
        // only after it has taken the free lock, so that no replica can promote meanwhile.
        if case .free = o.leader, o.primaryReport == .none, o.registeredPrimary {
            return .acquireLeader(reason: "this node is the registered primary; it restarts PostgreSQL once it holds the lock")
        }
        return .wait(reason: "PostgreSQL is down and its data directory is a primary's; it rejoins once another node leads a live primary")
    }

    static func standbyDecision(_ o: MonitorObservation, upstream: String?) -> MonitorAction {
        switch o.leader {
        case .held(_, true):
            return .promote
        case .held(let holder, false) where holder == o.node:
            // A session of this node's (an earlier monitor's, or a takeover cut short) holds the lock while
            // the node runs a standby: nobody else can be writable, so finish taking it.
            return .takeOver(from: holder, reason: "an earlier session of this node holds the lock")
        case .held(let holder, false):
            if o.leaderSilentFor >= o.config.takeoverAfter {
                return silentLeaderDecision(o, holder: holder)
            }
            guard let endpoint = o.leaderEndpoint else { return .wait(reason: "the leader \(holder) is not registered") }
            if upstream != endpoint { return .follow(leader: holder, endpoint: endpoint) }
            // Pointed at the leader but not streaming for several loops: its history diverged from the
            // leader's (it was ahead on an old timeline), so it must be rewound.
            // Only while the leader reports itself a live primary: a leader that is down explains it.
            if o.notStreamingFor.nanoseconds >= o.config.loopWait.nanoseconds * 5, o.primaryReport == .live(holder) {
                return .rejoin(leader: holder)
            }
            return .wait(reason: "following \(holder)")
        case .unknown:
            return .wait(reason: "Consul unreachable")
        case .free(let since):
            if let target = o.requestedLeader {
                // A switchover or manual failover names the node: it alone takes the lock.
                if target == o.node { return .acquireLeader(reason: "named by a switchover or failover request") }
                return .wait(reason: "\(target) is taking over (switchover or failover request)")
            }
            if o.paused { return .wait(reason: "automatic failover is paused") }
            switch o.primaryReport {
            case .live(let primary):
                return .wait(reason: "\(primary) runs a writable primary and will take the lock")
            case .unknown(let primary) where since < o.config.ttl:
                // Its monitor may be starting, or dead while its watchdog fences it: give it one TTL.
                return .wait(reason: "no recent report from the primary \(primary); failover after \(o.config.ttl) without the lock")
            default:
                break
            }
            switch candidateTurn(o, waited: since) {
            case .act(let reason): return .acquireLeader(reason: reason)
            case .wait(let reason): return .wait(reason: reason)
            }
        }
    }

    /// The leader holds the lock but its heartbeat stopped long enough ago that its watchdog has stopped
    /// its PostgreSQL (a dead node, or one cut off from Consul): the best candidate takes over now
    /// rather than wait up to twice the TTL for Consul to drop the session.
    static func silentLeaderDecision(_ o: MonitorObservation, holder: NodeName) -> MonitorAction {
        if let target = o.requestedLeader {
            if target == o.node { return .takeOver(from: holder, reason: "no heartbeat from \(holder) for \(o.leaderSilentFor); named by a failover request") }
            return .wait(reason: "\(target) is taking over (switchover or failover request)")
        }
        let beyond = GoDuration(nanoseconds: o.leaderSilentFor.nanoseconds - o.config.takeoverAfter.nanoseconds)
        switch candidateTurn(o, waited: beyond) {
        case .act(let reason): return .takeOver(from: holder, reason: "no heartbeat from \(holder) for \(o.leaderSilentFor); \(reason)")
        case .wait(let reason): return .wait(reason: "\(holder) is silent for \(o.leaderSilentFor); \(reason)")
        }
    }

    enum Turn { case act(String), wait(String) }

    /// Whether this node is the candidate to take a lost leader's place, having waited `waited` already.
    static func candidateTurn(_ o: MonitorObservation, waited: GoDuration) -> Turn {
        let choice = FailoverCandidates.choose(
            o.candidates, synchronousMode: o.config.synchronousMode, synchronousStandby: o.synchronousStandby,
            lastPrimaryPosition: o.lastPrimaryPosition, maximumLag: o.config.maximumLagOnFailover)
        guard let wait = choice.waitBeforeAcquiring(o.node, grace: o.config.failoverGrace) else {
            if let reason = choice.ineligible[o.node] { return .wait("not eligible: \(reason)") }
            return .wait(choice.noCandidateReason ?? "not a candidate")
        }
        if waited >= wait { return .act(wait == .zero ? "best candidate" : "the better candidates did not act within \(wait)") }
        return .wait("\(choice.best.map(\.value) ?? "another node") is the better candidate")
    }
}
