import ConsulAPI

/// What the monitor sees of its own PostgreSQL.
public enum LocalPostgres: Sendable, Equatable {
    /// No process of the data directory runs (checked in /proc, not guessed from a failed probe).
    case down(standbySignal: Bool)
    /// Processes of the data directory run but the server does not answer: crash recovery after a
    /// backend died, starting up, shutting down, an I/O stall, a probe that timed out. `postmaster` is
    /// false when only processes a dead postmaster left behind are running.
    case unresponsive(standbySignal: Bool, postmaster: Bool)
    /// A writable primary.
    case primary(position: LSN, timeline: Int)
    /// In recovery; `upstream` is the host:port its primary_conninfo names, `streaming` whether its WAL
    /// receiver streams.
    case standby(position: LSN, timeline: Int, upstream: String?, streaming: Bool)

    public var isUp: Bool {
        switch self {
        case .primary, .standby: return true
        case .down, .unresponsive: return false
        }
    }

    public var isWritablePrimary: Bool {
        if case .primary = self { return true }
        return false
    }
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
    /// It keeps reporting a writable primary: it will take or keep the lock.
    case live(NodeName)
    /// It keeps reporting that processes of its PostgreSQL run but do not answer (starting, recovering):
    /// it may become writable any moment, so its monitor takes the lock or fences it first.
    case starting(NodeName)
    /// It keeps reporting, and its PostgreSQL is down or no longer primary.
    case down(NodeName)
    /// Its reports stopped (on this monitor's clock): its monitor may be starting, dead, or cut off.
    case unknown(NodeName)
}

/// The other node this monitor last saw holding the lock, once the lock is free.
public struct PreviousLeader: Sendable, Equatable {
    public var name: NodeName
    /// How long ago this monitor last saw it hold the lock (its own clock).
    public var goneFor: GoDuration
    /// The fencing promise it had made then (``LeaderFlags``).
    public var promise: GoDuration?
    /// Its monitor says, in a report that keeps coming, that no process of its PostgreSQL is left.
    public var reportedDown: Bool

    public init(name: NodeName, goneFor: GoDuration, promise: GoDuration?, reportedDown: Bool) {
        self.name = name
        self.goneFor = goneFor
        self.promise = promise
        self.reportedDown = reportedDown
    }
}

/// Everything one monitor iteration decides from.
public struct MonitorObservation: Sendable, Equatable {
    public var node: NodeName
    public var config: ClusterConfig
    public var local: LocalPostgres
    /// How long the local PostgreSQL has been unresponsive (zero otherwise).
    public var localUnresponsiveFor: GoDuration
    public var leader: LeaderState
    /// While this node leads: time since the last heartbeat that reached Consul was sent.
    public var sinceLastHeartbeat: GoDuration
    /// When another node holds the lock: how long its heartbeat (the leader key's modify index) has not
    /// changed, on this monitor's clock. Zero otherwise.
    public var leaderSilentFor: GoDuration
    /// The other node last seen holding the lock, while the lock is free (nil when this monitor saw none
    /// since it started).
    public var previousLeader: PreviousLeader?
    /// The leader key as read came back with a restore of Consul from an older snapshot (this monitor
    /// saw Consul's index go backwards, and the key is no newer than the restore): it names whoever
    /// led then, not now.
    public var leaderKeyRestored: Bool
    /// The newest timeline any promotion claimed in Consul (``TimelineClaim``), when one did.
    public var claimedTimeline: Int?
    /// How long ago this monitor found Consul's history gone backwards (a restore from an older
    /// snapshot), if it did since it started.
    public var consulRestoredFor: GoDuration?
    /// The longest fence this monitor has known a leader to count on: the longest promise another
    /// leader's key carried, or `fence_timeout` it read (a restore can take both back).
    public var longestPromise: GoDuration?
    /// Another node whose API answered, just before this node would take the lock, that its PostgreSQL
    /// runs as a writable primary.
    public var peerRunsPrimary: NodeName?
    /// The fencing promise of the leader holding the lock (``LeaderFlags``), when another node leads and
    /// says.
    public var leaderPromise: GoDuration?
    /// How long the leader must be silent before this node may take over, when this node's latest
    /// promise to it (a member round) decides rather than the key's
    /// (``MonitorState/leaderSilence(holder:index:quiet:promise:grant:config:)``); nil: the key's promise decides.
    public var leaderTakeoverAfter: GoDuration?
    /// The leader's `host:port`, from its registration, when another node leads.
    public var leaderEndpoint: String?
    /// Replicas' reports (this node's own included), for ranking.
    public var candidates: [CandidateState]
    public var lastPrimaryPosition: LSN?
    /// What the `sync` key records.
    public var synchronous: SyncRecord?
    /// Automatic failover paused cluster-wide (maintenance).
    public var paused: Bool
    public var primaryReport: PrimaryReport
    /// How long the local standby's WAL receiver has not been streaming (zero while it streams).
    public var notStreamingFor: GoDuration
    /// Starts of the local standby that ended down without ever answering, in a row.
    public var failedStarts: Int
    /// `nodes/<this node>` says primary: this node was the primary when it last registered.
    public var registeredPrimary: Bool
    /// A switchover or manual failover request that stands (see ``TakeoverRequest/standing(age:leader:targetHealthy:targetEligible:)``).
    public var request: TakeoverRequest?
    /// A live watchdog guards this node: it may lead.
    public var guarded: Bool
    /// This node promised that leader, in a member round, not to take over (until the promise runs out).
    public var failsafeGrantedTo: NodeName?
    /// How long ago this monitor released the lock because its PostgreSQL was gone (nil: it has not,
    /// since it started or last led): the replicas get `failover_grace` to take over before this node
    /// may restart its primary in place.
    public var releasedFor: GoDuration?

    public init(
        node: NodeName, config: ClusterConfig, local: LocalPostgres, localUnresponsiveFor: GoDuration = .zero, leader: LeaderState,
        sinceLastHeartbeat: GoDuration = .zero, leaderSilentFor: GoDuration = .zero, leaderEndpoint: String?, candidates: [CandidateState],
        lastPrimaryPosition: LSN?, synchronous: SyncRecord?, paused: Bool, primaryReport: PrimaryReport = .none, notStreamingFor: GoDuration = .zero,
        failedStarts: Int = 0, registeredPrimary: Bool = false, request: TakeoverRequest? = nil, guarded: Bool = true,
        failsafeGrantedTo: NodeName? = nil, releasedFor: GoDuration? = nil, leaderPromise: GoDuration? = nil, leaderTakeoverAfter: GoDuration? = nil,
        claimedTimeline: Int? = nil,
        previousLeader: PreviousLeader? = nil, leaderKeyRestored: Bool = false, consulRestoredFor: GoDuration? = nil,
        longestPromise: GoDuration? = nil
    ) {
        self.consulRestoredFor = consulRestoredFor
        self.longestPromise = longestPromise
        self.leaderKeyRestored = leaderKeyRestored
        self.previousLeader = previousLeader
        self.leaderPromise = leaderPromise
        self.leaderTakeoverAfter = leaderTakeoverAfter
        self.claimedTimeline = claimedTimeline
        self.failsafeGrantedTo = failsafeGrantedTo
        self.releasedFor = releasedFor
        self.node = node
        self.config = config
        self.local = local
        self.localUnresponsiveFor = localUnresponsiveFor
        self.leader = leader
        self.sinceLastHeartbeat = sinceLastHeartbeat
        self.leaderSilentFor = leaderSilentFor
        self.leaderEndpoint = leaderEndpoint
        self.candidates = candidates
        self.lastPrimaryPosition = lastPrimaryPosition
        self.synchronous = synchronous
        self.paused = paused
        self.primaryReport = primaryReport
        self.notStreamingFor = notStreamingFor
        self.failedStarts = failedStarts
        self.registeredPrimary = registeredPrimary
        self.request = request
        self.guarded = guarded
    }

    /// A primary stops taking writes this long after its last successful heartbeat: before a replica may
    /// take over a silent leader, and before its session can lapse in Consul.
    public var fenceAfter: GoDuration { config.fenceAfter }

    /// How long the leader's heartbeat must have been silent before this node may take the lock from it:
    /// this node's `takeoverAfter`, or longer when the leader promised a longer fence (invariant 12).
    public var takeoverAfter: GoDuration {
        leaderTakeoverAfter ?? ClusterConfig.takeoverAfter(promise: leaderPromise, config: config)
    }

    /// Whether the leader holding the lock is beating (its heartbeats keep changing the key): it may be
    /// followed, and a data directory may be rewound or cloned from it. Two loops without a new beat, and
    /// the same slack a takeover allows (``ClusterConfig/fenceMargin``).
    public var leaderAlive: Bool {
        leaderSilentFor.nanoseconds < config.loopWait.nanoseconds * 2 + ClusterConfig.fenceMargin.nanoseconds
    }
}

/// What the monitor does next. Each iteration yields one decision; the shell carries it out (or, with
/// `--observe`, only logs it).
public enum MonitorAction: Sendable, Equatable, CustomStringConvertible {
    /// Keep holding the lock (the lease beats on its own) and do what the leader owes: registration,
    /// the other nodes' slots, the synchronous standby, stale requests.
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
    /// Give up the lock: no process of the local PostgreSQL is left, so nothing here can take a write.
    case releaseLeader(reason: String)
    /// Kill every process of the local PostgreSQL now (and check that none is left).
    case fence(reason: String)
    /// Point the local standby at the leader (rewrite primary_conninfo, reload).
    case follow(leader: NodeName, endpoint: String)
    /// Start the local standby.
    case startStandby
    /// The local data directory was a primary's, or diverged, and another node leads a live primary:
    /// rewind it (re-clone if that fails, the old directory moved aside) and start it as its standby.
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
        case .fence(let r): return "fence: kill PostgreSQL (\(r))"
        case .follow(let l, let e): return "follow \(l) at \(e)"
        case .startStandby: return "start PostgreSQL as a standby"
        case .rejoin(let l): return "rejoin as a standby of \(l) (pg_rewind, or a fresh clone)"
        case .wait(let r): return "wait: \(r)"
        }
    }

    /// Whether carrying it out takes the leader lock (a replica that may then promote).
    public var takesLock: Bool {
        switch self {
        case .acquireLeader, .takeOver: return true
        default: return false
        }
    }

    /// Whether it takes a lock nobody holds (not one taken over from a silent leader).
    public var acquiresFreeLock: Bool {
        if case .acquireLeader = self { return true }
        return false
    }

    /// Why, for the actions that carry a reason (logs' `reason`); nil for the others.
    public var reason: String? {
        switch self {
        case .acquireLeader(let r), .takeOver(_, let r), .releaseLeader(let r), .fence(let r), .wait(let r): return r
        case .stepDown(let to): return "switchover to \(to)"
        case .keepLeading, .promote, .follow, .startStandby, .rejoin: return nil
        }
    }

    /// A short name for counting decisions (metrics, logs).
    public var kind: String {
        switch self {
        case .keepLeading: return "keep_leading"
        case .stepDown: return "step_down"
        case .acquireLeader: return "acquire"
        case .takeOver: return "take_over"
        case .promote: return "promote"
        case .releaseLeader: return "release"
        case .fence: return "fence"
        case .follow: return "follow"
        case .startStandby: return "start_standby"
        case .rejoin: return "rejoin"
        case .wait: return "wait"
        }
    }
}

/// The monitor's decisions as a pure function of what it observed (the invariants of DESIGN.md in
/// code): a node takes writes only while it holds the lock; a primary that cannot prove it holds the
/// lock stops; the lock is released only once no process of the old primary is left; only the best
/// eligible replica takes a free lock, and it promotes only while holding it.
public enum MonitorDecision {
    public static func next(_ o: MonitorObservation) -> MonitorAction {
        let action = decide(o)
        guard action.takesLock else { return action }
        // A promise made in a member round holds: no lock is taken until it runs out — unless that
        // leader let the lock go itself, its PostgreSQL reported down (a lock is released only once no
        // process of it is left) or handed over by a switchover: it is writable no more.
        if let promised = o.failsafeGrantedTo, promised != o.node, !letGo(o, promised) {
            return .wait(reason: "promised \(promised) not to take over yet (a member round of failsafe mode)")
        }
        // Whatever Consul says (a restore may have forgotten a whole leader's tenure), a node that answers
        // it runs a writable primary is one: its monitor fences it if it does not hold the lock.
        if let primary = o.peerRunsPrimary, primary != o.node, !o.local.isWritablePrimary {
            return .wait(reason: "\(primary) answers that it runs a writable primary; not taking the lock while it does")
        }
        // Consul restored from an older snapshot forgot writes: a leader's last heartbeats, or a whole
        // leader's tenure (its takeover, its promotion), while that leader's watchdog still counts on
        // them. Whoever it was, its fence ran out one fence after the restore at the latest, and the
        // restore came before this monitor noticed it: nobody starts a new writable primary until then.
        // (A writable primary taking a lock it finds free adds no writable node.)
        if let restored = o.consulRestoredFor, !o.local.isWritablePrimary {
            let fence = ClusterConfig.takeoverAfter(promise: o.longestPromise, config: o.config)
            if restored < fence {
                return .wait(reason: "Consul was restored from an older snapshot \(restored) ago and may have forgotten a leader's last heartbeats; no lock is taken until its fence (\(fence)) has passed")
            }
        }
        return action
    }

    /// Whether `leader` let the free lock go itself: its report of its PostgreSQL down came during its
    /// tenure, or a switchover request says it handed the lock over.
    static func letGo(_ o: MonitorObservation, _ leader: NodeName) -> Bool {
        guard case .free = o.leader, let previous = o.previousLeader, previous.name == leader else { return false }
        return previous.reportedDown || (o.request.map { $0.handedOver && $0.from == leader } ?? false)
    }

    static func decide(_ o: MonitorObservation) -> MonitorAction {
        switch o.local {
        case .primary:
            return primaryDecision(o)
        case .unresponsive(let standbySignal, let postmaster):
            return unresponsiveDecision(o, standbySignal: standbySignal, postmaster: postmaster)
        case .down(let standbySignal):
            return downDecision(o, standbySignal: standbySignal)
        case .standby(_, _, let upstream, _):
            return standbyDecision(o, upstream: upstream)
        }
    }

    /// A writable primary. Pause changes nothing here: fencing applies in maintenance too, since a
    /// primary cut off from Consul cannot know whether pause still holds.
    static func primaryDecision(_ o: MonitorObservation) -> MonitorAction {
        switch o.leader {
        case .held(let holder, let mine):
            // An earlier session of this node's holds the lock (a monitor restarted without its session
            // file): nobody else can be writable, so take it with this session rather than fence.
            if !mine, holder == o.node, o.guarded { return .takeOver(from: holder, reason: "an earlier session of this node holds the lock") }
            guard mine else { return .fence(reason: "\(holder) holds the leader lock") }
            if o.sinceLastHeartbeat >= o.fenceAfter { return .fence(reason: "no heartbeat reached Consul for \(o.sinceLastHeartbeat)") }
            if let request = o.request, request.from == o.node, request.to != o.node { return .stepDown(to: request.to) }
            return .keepLeading
        case .free:
            // A writable primary with a free lock (its first start, or a lapsed session): retake it. No
            // replica can have promoted, since promotion needs the lock.
            guard o.guarded else { return .fence(reason: "the lock is free and no watchdog can guard this primary") }
            return .acquireLeader(reason: "this node runs the primary and the lock is free")
        case .unknown:
            if o.sinceLastHeartbeat >= o.fenceAfter {
                return .fence(reason: "Consul unreachable and no heartbeat for \(o.sinceLastHeartbeat)")
            }
            // No countdown in the reason: the decision is logged when its reason changes.
            if o.config.failsafeMode {
                return .wait(reason: "Consul unreachable; leading on while every member confirms it will not take over (failsafe), else fencing \(o.fenceAfter) after the last renewal")
            }
            return .wait(reason: "Consul unreachable; fencing \(o.fenceAfter) after the last heartbeat unless it answers")
        }
    }

    /// The postmaster lives but the server does not answer. A failed probe is not a dead primary: the
    /// leader keeps its lock (the lease beats on its own) while PostgreSQL recovers in place, up to
    /// `primary_start_timeout`; past that it is fenced, and released only once nothing is left.
    static func unresponsiveDecision(_ o: MonitorObservation, standbySignal: Bool, postmaster: Bool) -> MonitorAction {
        guard postmaster else { return .fence(reason: "the postmaster is gone; killing what it left behind") }
        let timeout = o.config.primaryStartTimeout
        if case .held(_, true) = o.leader {
            if o.paused { return .wait(reason: "PostgreSQL does not answer; automatic failover is paused") }
            if o.localUnresponsiveFor >= timeout {
                return .fence(reason: "PostgreSQL did not answer within primary_start_timeout \(timeout)")
            }
            return .wait(reason: "PostgreSQL does not answer (crash recovery?); recovering in place under the lock, up to primary_start_timeout \(timeout)")
        }
        if standbySignal {
            if !o.paused, o.localUnresponsiveFor >= timeout {
                return .fence(reason: "the standby did not answer within primary_start_timeout \(timeout); it is restarted")
            }
            return .wait(reason: "the standby's PostgreSQL is starting or recovering")
        }
        // A primary's data directory coming up without the lock must never become writable.
        if case .free = o.leader, o.registeredPrimary, o.primaryReport == .none, o.guarded, !o.paused, requestAllows(o) {
            return .acquireLeader(reason: "this node is the registered primary and PostgreSQL is starting")
        }
        return .fence(reason: "a primary's data directory is starting without the leader lock")
    }

    static func downDecision(_ o: MonitorObservation, standbySignal: Bool) -> MonitorAction {
        if case .held(_, true) = o.leader {
            if o.paused { return .wait(reason: "PostgreSQL is down; automatic failover is paused (baton resume ends it)") }
            return .releaseLeader(reason: "PostgreSQL is down: no process of it is left")
        }
        if o.paused { return .wait(reason: "automatic failover is paused (baton resume ends it)") }
        if standbySignal {
            if o.failedStarts >= 2, case .held(let holder, false) = o.leader, o.leaderEndpoint != nil, o.primaryReport == .live(holder), o.leaderAlive {
                return .rejoin(leader: holder)
            }
            return .startStandby
        }
        // A primary data directory without the lock must never start writable (invariant 7): it is
        // rewound to follow the leader — only a live one — or waits until there is one.
        if case .held(let holder, false) = o.leader, o.leaderEndpoint != nil, o.primaryReport == .live(holder), o.leaderAlive {
            return .rejoin(leader: holder)
        }
        // The registered primary restarting (a node or cluster restart): it may start writable again, but
        // only after it has taken the free lock, so that no replica can promote meanwhile. When this
        // monitor itself just let the lock go because its PostgreSQL died, a replica takes over first;
        // only if none has within failover_grace does the old primary restart in place.
        if case .free = o.leader, o.primaryReport == .none, o.registeredPrimary, requestAllows(o) {
            if let released = o.releasedFor, released < o.config.failoverGrace {
                return .wait(reason: "PostgreSQL died and the lock was released: a replica takes over, or this node restarts it after failover_grace \(o.config.failoverGrace)")
            }
            guard o.guarded else { return .wait(reason: "no watchdog guards this node; it cannot lead") }
            return .acquireLeader(reason: "this node is the registered primary; it restarts PostgreSQL once it holds the lock")
        }
        return .wait(reason: "PostgreSQL is down and its data directory is a primary's; it rejoins once another node leads a live primary")
    }

    /// Why this standby must not lead on what Consul says, if it must not: the cluster's timeline claim
    /// is older than this node's own timeline (Consul was restored from an older snapshot, and a leader
    /// key that came back with it names this node), or — asynchronous mode — its WAL is further behind
    /// the last primary's than the lag limit. Acquiring checks eligibility; a lock that came back from
    /// a snapshot skipped that, and this is where it is checked again.
    static func historyRefusal(_ o: MonitorObservation) -> String? {
        guard case .standby(let position, let timeline, _, _) = o.local else { return nil }
        if o.leaderKeyRestored {
            return "the leader key naming this node came back with a restore of Consul from an older snapshot; not leading on it"
        }
        if let claimed = o.claimedTimeline, timeline > claimed {
            return "Consul's timeline claim (\(claimed)) is older than this node's timeline \(timeline): Consul lost history (restored from an older snapshot?); not leading on it"
        }
        if o.config.synchronousMode == .off, let last = o.lastPrimaryPosition, last.value > position.value,
            last.value - position.value > o.config.maximumLagOnFailover
        {
            return "this node's WAL is \(last.value - position.value) bytes behind the last primary's, over maximum_lag_on_failover \(o.config.maximumLagOnFailover); not leading"
        }
        return nil
    }

    /// No standing request hands the lock to another node.
    static func requestAllows(_ o: MonitorObservation) -> Bool {
        o.request.map { $0.to == o.node } ?? true
    }

    static func standbyDecision(_ o: MonitorObservation, upstream: String?) -> MonitorAction {
        switch o.leader {
        case .held(_, true):
            if let refusal = historyRefusal(o) { return .releaseLeader(reason: refusal) }
            return .promote
        case .held(let holder, false) where holder == o.node:
            // A session of this node's (an earlier monitor's, or a takeover cut short) holds the lock while
            // the node runs a standby: nobody else can be writable, so finish taking it — unless the key
            // came back with a restore of Consul (another node may lead a writable primary now).
            if o.leaderKeyRestored {
                return .wait(reason: "an earlier session of this node holds a leader key that came back with a restore of Consul; not leading on it")
            }
            return .takeOver(from: holder, reason: "an earlier session of this node holds the lock")
        case .held(let holder, false):
            if o.paused { return .wait(reason: "automatic failover is paused (baton resume ends it)") }
            if o.leaderSilentFor >= o.takeoverAfter {
                return silentLeaderDecision(o, holder: holder)
            }
            guard let endpoint = o.leaderEndpoint else { return .wait(reason: "the leader \(holder) is not registered") }
            if upstream != endpoint { return .follow(leader: holder, endpoint: endpoint) }
            // Pointed at the leader but not streaming for several loops: its history diverged from the
            // leader's (it was ahead on an old timeline), so it must be rewound — only from a leader that
            // is alive and says it runs a writable primary: a leader that is down explains it.
            if o.notStreamingFor.nanoseconds >= o.config.loopWait.nanoseconds * 5, o.primaryReport == .live(holder), o.leaderAlive {
                return .rejoin(leader: holder)
            }
            return .wait(reason: "following \(holder)")
        case .unknown:
            return .wait(reason: "Consul unreachable")
        case .free(let since):
            // The lock went free under a leader that did not say its PostgreSQL is gone (its session was
            // invalidated — an agent restart —, or Consul lost it): its watchdog may still wait out the
            // fence it promised, so nobody takes the lock before that (invariant 12) — on a request
            // neither, unless that leader handed the lock over to it.
            if let previous = o.previousLeader, previous.name != o.node, !previous.reportedDown,
                !(o.request.map { $0.handedOver && $0.from == previous.name } ?? false)
            {
                let fence = ClusterConfig.takeoverAfter(promise: previous.promise, config: o.config)
                if previous.goneFor < fence {
                    return .wait(reason: "the lock went free under \(previous.name) without its PostgreSQL reported down; waiting out its fence (\(fence))")
                }
            }
            if let request = o.request {
                // A switchover or manual failover names the node: it alone takes the lock.
                if request.to == o.node {
                    guard o.guarded else { return .wait(reason: "named to take over, but no watchdog guards this node") }
                    return .acquireLeader(reason: "named by a switchover or failover request")
                }
                return .wait(reason: "\(request.to) is taking over (switchover or failover request)")
            }
            if o.paused { return .wait(reason: "automatic failover is paused (baton resume ends it)") }
            switch o.primaryReport {
            case .live(let primary):
                return .wait(reason: "\(primary) runs a writable primary and will take the lock")
            case .starting(let primary):
                return .wait(reason: "\(primary)'s PostgreSQL runs without answering yet; its monitor takes the lock or fences it")
            case .unknown(let primary) where since < o.config.ttl:
                // Its monitor may be starting, or dead while its watchdog fences it: give it one TTL.
                return .wait(reason: "no recent report from the primary \(primary); failover after \(o.config.ttl) without the lock")
            default:
                break
            }
            switch candidateTurn(o, waited: since) {
            case .act(let reason):
                guard o.guarded else { return .wait(reason: "\(reason), but no watchdog guards this node") }
                return .acquireLeader(reason: reason)
            case .wait(let reason): return .wait(reason: reason)
            }
        }
    }

    /// The leader holds the lock but its heartbeat stopped long enough ago that its watchdog has stopped
    /// its PostgreSQL (a dead node, or one cut off from Consul): the best candidate takes over now
    /// rather than wait up to twice the TTL for Consul to drop the session.
    static func silentLeaderDecision(_ o: MonitorObservation, holder: NodeName) -> MonitorAction {
        if let request = o.request {
            if request.to == o.node {
                guard o.guarded else { return .wait(reason: "named to take over, but no watchdog guards this node") }
                return .takeOver(from: holder, reason: "no heartbeat from \(holder) for \(o.leaderSilentFor); named by a failover request")
            }
            return .wait(reason: "\(request.to) is taking over (switchover or failover request)")
        }
        let beyond = GoDuration(nanoseconds: o.leaderSilentFor.nanoseconds - o.takeoverAfter.nanoseconds)
        switch candidateTurn(o, waited: beyond) {
        case .act(let reason):
            guard o.guarded else { return .wait(reason: "\(holder) is silent, but no watchdog guards this node") }
            return .takeOver(from: holder, reason: "no heartbeat from \(holder) for \(o.leaderSilentFor); \(reason)")
        case .wait(let reason): return .wait(reason: "\(holder) is silent for \(o.leaderSilentFor); \(reason)")
        }
    }

    enum Turn { case act(String), wait(String) }

    /// Whether this node is the candidate to take a lost leader's place, having waited `waited` already.
    static func candidateTurn(_ o: MonitorObservation, waited: GoDuration) -> Turn {
        let choice = FailoverCandidates.choose(
            o.candidates, synchronousMode: o.config.synchronousMode, synchronous: o.synchronous,
            lastPrimaryPosition: o.lastPrimaryPosition, maximumLag: o.config.maximumLagOnFailover)
        guard let wait = choice.waitBeforeAcquiring(o.node, grace: o.config.failoverGrace) else {
            if let reason = choice.ineligible[o.node] { return .wait("not eligible: \(reason)") }
            return .wait(choice.noCandidateReason ?? "not a candidate")
        }
        if waited >= wait { return .act(wait == .zero ? "best candidate" : "the better candidates did not act within \(wait)") }
        return .wait("\(choice.best.map(\.value) ?? "another node") is the better candidate")
    }
}
