import ConsulAPI

/// What a node's monitor knows of itself, as its HTTP API answers from it (updated every loop).
public struct NodeView: Sendable, Equatable {
    public var node: NodeName
    public var local: LocalPostgres = .down(standbySignal: false)
    /// This node's session holds the leader lock and the lease has not run out.
    public var leading = false
    /// When the lease runs out (CLOCK_MONOTONIC nanoseconds; 0 when not leading).
    public var leaseDeadline: UInt64 = 0
    /// When the monitor's loop last completed (CLOCK_MONOTONIC nanoseconds).
    public var loopRanAt: UInt64 = 0
    public var loopWait: GoDuration = ClusterConfig().loopWait
    public var fenceAfter: GoDuration = ClusterConfig().fenceAfter
    /// The cluster's `failsafe_mode` as this node last read it: without it, no failsafe request is granted.
    public var failsafeMode = ClusterConfig().failsafeMode
    public var priority: Int = 100
    /// The node the `sync` key records.
    public var synchronousStandby: NodeName?
    /// The leader's WAL position as it last reported it.
    public var leaderPosition: LSN?
    /// Who holds the lock, as last read (nil: nobody, or Consul unreadable).
    public var leader: NodeName?
    /// Whether the last read of Consul succeeded.
    public var consulReachable = false
    /// The promises this node made a leader (member rounds, failsafe): not to take over from it until then.
    public var failsafeGrant: LeaseGrant?

    public init(node: NodeName) { self.node = node }

    public static func == (a: NodeView, b: NodeView) -> Bool {
        a.node == b.node && a.local == b.local && a.leading == b.leading && a.leaseDeadline == b.leaseDeadline && a.loopRanAt == b.loopRanAt
            && a.failsafeMode == b.failsafeMode && a.priority == b.priority && a.synchronousStandby == b.synchronousStandby && a.leaderPosition == b.leaderPosition
            && a.leader == b.leader && a.consulReachable == b.consulReachable && a.failsafeGrant == b.failsafeGrant
    }
}

/// What a member promised a leader that asked it (a member round, ``LeaseState``): not to take over
/// from `leader` until `until` (CLOCK_MONOTONIC nanoseconds). The latest promise was made at `at` for
/// `period` (how far the leader said it may stay writable, plus the margin) while the leader's last
/// write of the key that got through had modify index `keyIndex` (nil: the leader did not say); an
/// earlier promise may reach further.
public struct LeaseGrant: Sendable, Equatable {
    public var leader: NodeName
    public var at: UInt64
    public var until: UInt64
    public var period: GoDuration
    public var keyIndex: UInt64?

    public init(leader: NodeName, at: UInt64, until: UInt64, period: GoDuration, keyIndex: UInt64? = nil) {
        self.leader = leader
        self.at = at
        self.until = until
        self.period = period
        self.keyIndex = keyIndex
    }

    /// The promise made to `leader` at `now` for `period`, on top of `earlier`: it holds at least as
    /// long as the earlier one did (a promise is never taken back).
    public static func made(to leader: NodeName, at now: UInt64, period: GoDuration, keyIndex: UInt64?, after earlier: LeaseGrant?) -> LeaseGrant {
        let until = now + UInt64(max(0, period.nanoseconds))
        return LeaseGrant(leader: leader, at: now, until: max(until, earlier?.until ?? 0), period: period, keyIndex: keyIndex)
    }

    /// The promise as the monitor decides from it at `now`: how long ago the latest was made, how long
    /// the promise still holds (zero once it ran out), how long the latest was for.
    public func seen(now: UInt64) -> Seen {
        Seen(
            leader: leader, age: .nanoseconds(Int64(now &- min(at, now))), left: .nanoseconds(Int64(until &- min(until, now))),
            period: period.swiftDuration, keyIndex: keyIndex)
    }

    public struct Seen: Sendable, Equatable {
        public var leader: NodeName
        public var age: Duration
        public var left: Duration
        public var period: Duration
        public var keyIndex: UInt64?

        public init(leader: NodeName, age: Duration, left: Duration, period: Duration, keyIndex: UInt64? = nil) {
            self.leader = leader
            self.age = age
            self.left = left
            self.period = period
            self.keyIndex = keyIndex
        }

        /// The leader this node promised not to take over from, while the promise holds.
        public var holding: NodeName? { left > .zero ? leader : nil }
    }
}

/// The health endpoints of the node API, as pure functions: each answers 200 or 503, so that a load
/// balancer's HTTP check (HAProxy's `option httpchk`) routes by them.
public enum NodeHealth {
    public struct Answer: Sendable, Equatable {
        public var status: Int
        public var reason: String
    }

    static func ok(_ reason: String) -> Answer { Answer(status: 200, reason: reason) }
    static func no(_ reason: String) -> Answer { Answer(status: 503, reason: reason) }

    /// The endpoints that answer GET and HEAD with 200/503.
    public static let paths = ["/primary", "/replica", "/read-only", "/health", "/liveness", "/readiness", "/sync", "/async"]

    /// Answers `path` (with its query parameters) at monotonic time `now`; nil for an unknown path.
    /// - Throws: ``ValidationProblem`` for a bad query parameter (the API answers 400 with it).
    public static func answer(_ path: String, query: [(String, String)], view v: NodeView, now: UInt64) throws(ValidationProblem) -> Answer? {
        switch path {
        case "/primary":
            guard case .primary = v.local else { return no("PostgreSQL is not a writable primary here") }
            guard v.leading, now < v.leaseDeadline else { return no("this node does not hold the leader lock (or its lease ran out)") }
            return ok("primary")
        case "/replica":
            guard case .standby(let position, _, _, let streaming) = v.local else { return no("not a standby") }
            guard streaming else { return no("the standby does not stream") }
            for (name, value) in query {
                switch name {
                case "lag":
                    let limit = try bytes(value)
                    guard let leader = v.leaderPosition else { return no("the leader's position is not known") }
                    let lag = leader > position ? leader.value - position.value : 0
                    if lag > limit { return no("lag \(lag) bytes over \(limit)") }
                case "tag_nofailover":
                    guard let wanted = Bool(value) else { throw ValidationProblem("tag_nofailover must be true or false, not \(Quote.show(value))") }
                    if (v.priority == 0) != wanted { return no("nofailover is \(v.priority == 0)") }
                default:
                    throw ValidationProblem("unknown parameter \(Quote.show(name)) (lag, tag_nofailover)")
                }
            }
            return ok("streaming standby")
        case "/read-only":
            guard v.local.isUp else { return no("PostgreSQL does not answer") }
            if case .primary = v.local, !(v.leading && now < v.leaseDeadline) { return no("a primary without the leader lock") }
            return ok("PostgreSQL answers reads")
        case "/health":
            return v.local.isUp ? ok("PostgreSQL is up") : no("PostgreSQL does not answer")
        case "/liveness":
            let window = UInt64(max(0, v.loopWait.nanoseconds)) * 2
            return now - min(now, v.loopRanAt) <= window ? ok("the monitor's loop runs") : no("the monitor's loop has not run for over 2 × loop_wait")
        case "/readiness":
            switch v.local {
            case .primary: return v.leading && now < v.leaseDeadline ? ok("leading primary") : no("a primary without the leader lock")
            case .standby(_, _, _, true): return ok("streaming standby")
            default: return no("neither a leading primary nor a streaming standby")
            }
        case "/sync":
            guard case .standby = v.local, v.synchronousStandby == v.node else { return no("not the synchronous standby") }
            return ok("the synchronous standby")
        case "/async":
            guard case .standby = v.local, v.synchronousStandby != v.node else { return no("not an asynchronous standby") }
            return ok("an asynchronous standby")
        default:
            return nil
        }
    }

    /// `1048576`, `16kB`, `1MB`, `2GB` (PostgreSQL's units: kB = 1024 bytes).
    public static func bytes(_ text: String) throws(ValidationProblem) -> UInt64 {
        let units: [(String, UInt64)] = [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10), ("B", 1)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            guard let n = UInt64(text.dropLast(suffix.count)), n <= UInt64.max / factor else { break }
            return n * factor
        }
        guard let n = UInt64(text) else { throw ValidationProblem("lag \(Quote.show(text)) is not a size such as 1048576, 16kB or 1MB") }
        return n
    }

    /// Whether to grant a leader's request (a member round, ``LeaseState``) not to take over from it:
    /// only when this node sees that leader holding the lock, sees nobody holding it, or cannot reach
    /// Consul — and then it promises not to take over for the leader's period (`fenceAfter`, what it
    /// arms its watchdog with on the strength of the answers; this node's own fence period when the
    /// request names none, as an earlier Baton's does not) plus a margin from now: longer than the leader
    /// may stay writable on it. (A promise timed by this node's own period where the leader's is longer
    /// would run out while the leader is still writable — found by the simulator: fence_timeout raised
    /// to 8 s, a member that had not read it yet granted 3 s.)
    public static func failsafe(request leader: NodeName, fenceAfter requested: GoDuration? = nil, keyIndex: UInt64? = nil, view v: NodeView, now: UInt64)
        -> (granted: Bool, reason: String, grant: LeaseGrant?)
    {
        // A request with failsafe off is a forgery or a leader on another configuration: a promise
        // made for it would hold off a failover the cluster's settings allow (issue 23, finding 7).
        guard v.failsafeMode else { return (false, "failsafe_mode is off in this node's configuration", nil) }
        if v.leader == v.node, v.consulReachable { return (false, "\(v.node) holds the leader lock itself", nil) }
        if v.consulReachable, let holder = v.leader, holder != leader { return (false, "\(holder) holds the leader lock", nil) }
        let period = GoDuration(nanoseconds: (requested ?? v.fenceAfter).nanoseconds + ClusterConfig.fenceMargin.nanoseconds)
        let grant = LeaseGrant.made(to: leader, at: now, period: period, keyIndex: keyIndex, after: v.failsafeGrant)
        return (true, v.consulReachable ? "\(v.leader.map { "\($0) holds the lock" } ?? "no node holds the lock")" : "this node cannot reach Consul", grant)
    }
}
