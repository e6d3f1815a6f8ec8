import ConsulAPI

/// How strictly the cluster guards acknowledged commits.
public enum SynchronousMode: String, Sendable, Equatable, CaseIterable {
    /// Asynchronous replication: failover to a replica within the lag limit.
    case off
    /// The primary keeps one synchronous standby when it has a healthy one; failover only to it.
    case on
    /// As `on`, and with no healthy synchronous standby the primary stops acknowledging commits
    /// rather than fall back to asynchronous.
    case strict
}

/// Where keepalived puts the virtual IP.
public enum VIPPolicy: String, Sendable, Equatable, CaseIterable {
    /// On the node that leads a writable primary (clients through the VIP reach the primary's own
    /// pgbouncer); it moves with every failover and switchover.
    case primary
    /// keepalived's own priorities decide, among the nodes whose monitor runs: the VIP stays where it
    /// is through a failover or switchover (its holder's pgbouncer routes to whichever node leads), and
    /// moves only when its holder's machine, keepalived or monitor goes — e.g. the fastest CPU holds
    /// the address for the pgbouncers while the fastest disk holds the primary.
    case priority
}

/// Cluster-wide settings, in the Consul key `config`, that every monitor reads and follows.
public struct ClusterConfig: Sendable, Equatable {
    /// The leader session's TTL. Consul keeps a session up to twice this after its last renewal.
    public var ttl: GoDuration = .seconds(10)
    /// How often each monitor looks at its node and the cluster.
    public var loopWait: GoDuration = .seconds(1)
    /// Lock-delay of the leader session: after it is invalidated nobody may take the lock for this long.
    public var lockDelay: GoDuration = .milliseconds(1)
    public var synchronousMode: SynchronousMode = .off
    /// In asynchronous mode, a replica further behind than this (bytes of WAL) is never promoted
    /// automatically.
    public var maximumLagOnFailover: UInt64 = 1 << 20
    /// How long a primary whose postmaster lives but does not answer — crash recovery after a backend
    /// died, an I/O stall — may take to recover in place under its lock before it is fenced and the
    /// lock released (also how long a standby that does not answer is waited for before it is
    /// restarted). A postmaster that is gone is never waited for: its lock is released at once, once
    /// no process of it is left.
    public var primaryStartTimeout: GoDuration = .seconds(60)
    /// After this long without the best candidate taking the lock, the next best may.
    public var failoverGrace: GoDuration = .seconds(3)
    /// A leader whose heartbeat (a check-and-set write of `leader`, every loop) has not reached Consul
    /// for this long stops its PostgreSQL — its watchdog does it even when the monitor is dead — and the
    /// replicas take over a leader silent for this long plus ``fenceMargin``, without waiting for its
    /// session to lapse (Consul may keep a session up to twice its TTL). Shorter: a dead node is
    /// replaced sooner. Longer: the primary rides out longer Consul outages before it stops. At most
    /// 80 % of `ttl` is used.
    public var fenceTimeout: GoDuration = .seconds(3)
    /// How long a switchover waits for every live pgbouncer agent to acknowledge that its pgbouncer
    /// paused (and, after the promotion, resumed); an agent that does not answer in time does not hold
    /// the switchover up, and the event says which. Also how long a client waits in a pgbouncer held
    /// for a failover (its `query_wait_timeout` meanwhile, in whole seconds) before it fails with
    /// "query_wait_timeout" rather than waiting on for a primary that does not come.
    public var pgbouncerTimeout: GoDuration = .seconds(5)
    /// A leader that cannot reach Consul keeps PostgreSQL writable as long as every other member
    /// confirms over its node API, each fence period, that it cannot reach Consul either or sees no
    /// other leader — and so will not take over. On by default: Consul's everyday trouble (an
    /// election, a hang, an overloaded server, a node's link to it cut) is not the database's, and must
    /// not cost clients a failover; a leader cut off from Consul *and* from a member still fences after
    /// `fence_timeout`, and a dead leader asks nobody, so node loss is as fast as without it. Off
    /// restores the strict rule: a leader that cannot reach Consul stops after `fence_timeout`,
    /// whatever else happens.
    public var failsafeMode = true
    /// In synchronous mode, how long the primary waits for a recorded synchronous standby that stopped
    /// streaming (commits wait meanwhile) before it replaces it or, `on`, acknowledges commits without
    /// it. A WAL receiver that reconnects within it (killed, a network blip) stays the standby failover
    /// may promote; without it a flapping standby leaves the cluster with nobody to promote until it is
    /// recorded again. Longer: more flaps ridden out, longer commit stalls when the standby is really gone.
    public var synchronousStandbyGrace: GoDuration = .seconds(2)
    /// Where keepalived puts the virtual IP (``VIPPolicy``).
    public var vipPolicy: VIPPolicy = .primary
    /// With backups (bootstrap `--backup pgbackrest`): the leader's monitor runs a backup of
    /// ``backupType`` whenever the newest in the repository is older than this (after a failover the
    /// new leader carries on). 0 (the default): only `baton backup` makes backups.
    public var backupEvery: GoDuration = .zero
    /// What a scheduled backup is: full, diff or incr (pgBackRest makes the first one full anyway).
    public var backupType = "full"
    /// Settings in the key that this Baton does not know (written by a newer one during a rolling
    /// upgrade): never applied, kept as they are when this Baton writes the key back.
    public var unknownSettings: [UnknownSetting] = []

    /// A setting this Baton does not know, as it stands in the key.
    public struct UnknownSetting: Sendable, Equatable {
        public var name: String
        public var value: JSONValue
    }

    /// Time allowed for the watchdog's stop to take effect before a replica relies on it.
    public static let fenceMargin: GoDuration = .milliseconds(500)

    /// How long after its last successful heartbeat a leader stops taking writes: `fence_timeout`, and
    /// never later than 80 % of the session TTL (before Consul can hand the lock to another node).
    public var fenceAfter: GoDuration { GoDuration(nanoseconds: min(fenceTimeout.nanoseconds, ttl.nanoseconds * 4 / 5)) }

    /// How long a leader's heartbeat must have been silent before a replica may take the lock from it.
    /// Whether a node's session is renewed now: every third of the TTL (at least a loop) — Consul keeps
    /// a session at least a TTL after its renewal, so two renewals may fail before it lapses, and the
    /// leader's session outlives its lease (`fence_timeout`, at most 80 % of the TTL) by far (invariant
    /// 1). The leader needs no more: its heartbeats prove the lock, and one that finds the key free
    /// under its name renews at once. `sinceConfirmed` is nil when there is no session (one is made
    /// at once).
    public func sessionRenewalDue(sinceConfirmed: Duration?) -> Bool {
        guard let sinceConfirmed else { return true }
        return sinceConfirmed >= max(ttl.swiftDuration / 3, loopWait.swiftDuration)
    }

    public var takeoverAfter: GoDuration { GoDuration(nanoseconds: fenceAfter.nanoseconds + Self.fenceMargin.nanoseconds) }

    /// How long a silent leader that armed its watchdog with `promise` must have been silent before a
    /// node running `config` may take over: the longer of the two fences, plus the margin.
    public static func takeoverAfter(promise: GoDuration?, config: ClusterConfig) -> GoDuration {
        guard let promise, promise > config.fenceAfter else { return config.takeoverAfter }
        return GoDuration(nanoseconds: promise.nanoseconds + fenceMargin.nanoseconds)
    }

    // MARK: Member rounds (failsafe mode)

    /// With `failsafe_mode`, a writable leader renews its lease between writes of the leader key by
    /// member rounds (``LeaseState``): every other member promises over its node API not to take over
    /// for this long plus ``fenceMargin``, and only then is the watchdog armed for it. Two fifths of
    /// the fence: a dead leader's last round runs out sooner than a Consul heartbeat would, so a dead
    /// node is replaced sooner, while Consul's own trouble costs nothing as long as the members answer.
    public var roundPromise: GoDuration { GoDuration(nanoseconds: fenceAfter.nanoseconds * 2 / 5) }
    /// How often a leader renewing by rounds asks: four rounds per promise.
    public var roundInterval: Duration { roundPromise.swiftDuration / 4 }
    /// How long a round waits for the members' answers: a member that has not answered by then has not
    /// promised, and the leader writes the key instead.
    public var roundTimeout: Duration { roundInterval }
    /// While rounds renew the lease, the leader still writes the key this often (a third of the TTL,
    /// at least a loop), so that a node that has not promised — one the leader did not know to ask —
    /// sees it beat.
    public var roundsKeyInterval: Duration { max(ttl.swiftDuration / 3, loopWait.swiftDuration) }
    /// The promise a write made under rounds carries, for the nodes that did not promise since: while
    /// Consul answers, the next write comes within ``roundsKeyInterval``, after at most one more round's
    /// pause and wait, and the last round reaches ``roundPromise`` past it.
    public var roundsKeyPromise: GoDuration {
        GoDuration(nanoseconds: GoDuration(roundsKeyInterval + roundInterval + roundTimeout).nanoseconds + roundPromise.nanoseconds)
    }

    public init() {}

    /// The settings by their key in Consul, with their current values as text.
    public var entries: [(String, String)] {
        [
            ("ttl", ttl.description), ("loop_wait", loopWait.description), ("lock_delay", lockDelay.description),
            ("synchronous_mode", synchronousMode.rawValue), ("maximum_lag_on_failover", String(maximumLagOnFailover)),
            ("primary_start_timeout", primaryStartTimeout.description), ("failover_grace", failoverGrace.description),
            ("fence_timeout", fenceTimeout.description), ("pgbouncer_timeout", pgbouncerTimeout.description),
            ("failsafe_mode", failsafeMode ? "on" : "off"), ("synchronous_standby_grace", synchronousStandbyGrace.description),
            ("vip_policy", vipPolicy.rawValue), ("backup_every", backupEvery.description), ("backup_type", backupType),
        ]
    }

    public static let keys: [String] = ClusterConfig().entries.map(\.0)

    public var json: JSONValue {
        .object(
            entries.map { key, value in
                key == "maximum_lag_on_failover" ? (key, .number(value)) : (key, .string(value))
            } + unknownSettings.map { ($0.name, $0.value) })
    }

    /// Reads the key's value; missing settings keep their defaults. A setting this Baton does not know
    /// is kept aside, never applied (``unknownSettings``): a newer `baton config set` during a rolling
    /// upgrade must not throw every older monitor back to the defaults. A known setting with a value
    /// that does not parse, or settings that are unsafe together, make the whole value an error: the
    /// reader keeps the configuration it had.
    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        self.init()
        guard let bytes, !bytes.isEmpty else { return }
        let json = try Record.object(bytes, key: key)
        for (name, value) in json.objectValue ?? [] {
            guard Self.keys.contains(name) else {
                unknownSettings.append(UnknownSetting(name: name, value: value))
                continue
            }
            let text: String
            if let s = value.stringValue {
                text = s
            } else if case .number(let n) = value {
                text = n
            } else {
                throw ValidationProblem("Consul key \(key): \(name) must be a string or a number")
            }
            try set(name, text, source: "Consul key \(key)")
        }
        try validate(source: "Consul key \(key)")
    }

    /// Changes one setting from text, as `baton config set NAME=VALUE` does.
    public mutating func set(_ name: String, _ value: String, source: String = "setting") throws(ValidationProblem) {
        func duration() throws(ValidationProblem) -> GoDuration {
            do { return try GoDuration(parsing: value) } catch {
                throw ValidationProblem("\(source): \(name) \(Quote.show(value)) is not a duration such as 10s or 500ms")
            }
        }
        switch name {
        case "ttl": ttl = try duration()
        case "loop_wait": loopWait = try duration()
        case "lock_delay": lockDelay = try duration()
        case "primary_start_timeout": primaryStartTimeout = try duration()
        case "failover_grace": failoverGrace = try duration()
        case "fence_timeout": fenceTimeout = try duration()
        case "pgbouncer_timeout": pgbouncerTimeout = try duration()
        case "synchronous_standby_grace": synchronousStandbyGrace = try duration()
        case "synchronous_mode":
            guard let mode = SynchronousMode(rawValue: value) else {
                throw ValidationProblem("\(source): synchronous_mode must be off, on or strict, not \(Quote.show(value))")
            }
            synchronousMode = mode
        case "failsafe_mode":
            guard value == "on" || value == "off" else {
                throw ValidationProblem("\(source): failsafe_mode must be on or off, not \(Quote.show(value))")
            }
            failsafeMode = value == "on"
        case "backup_every": backupEvery = try duration()
        case "backup_type":
            guard ["full", "diff", "incr"].contains(value) else {
                throw ValidationProblem("\(source): backup_type must be full, diff or incr, not \(Quote.show(value))")
            }
            backupType = value
        case "vip_policy":
            guard let policy = VIPPolicy(rawValue: value) else {
                throw ValidationProblem("\(source): vip_policy must be primary or priority, not \(Quote.show(value))")
            }
            vipPolicy = policy
        case "maximum_lag_on_failover":
            guard let bytes = UInt64(value) else {
                throw ValidationProblem("\(source): maximum_lag_on_failover must be a number of bytes, not \(Quote.show(value))")
            }
            maximumLagOnFailover = bytes
        default:
            throw ValidationProblem("\(source): unknown setting \(Quote.show(name)); the settings are \(Self.keys.joined(separator: ", "))")
        }
    }

    /// The rules that keep the settings safe together.
    public func validate(source: String = "config") throws(ValidationProblem) {
        guard ttl >= .seconds(1), ttl <= .seconds(86_400) else { throw ValidationProblem("\(source): ttl must be from 1s to 24h") }
        guard loopWait >= .milliseconds(100) else { throw ValidationProblem("\(source): loop_wait must be at least 100ms") }
        guard loopWait.nanoseconds * 3 <= ttl.nanoseconds else {
            throw ValidationProblem(
                "\(source): loop_wait (\(loopWait)) must be at most a third of ttl (\(ttl)), so that a primary renews its session several times before it lapses")
        }
        guard lockDelay <= .seconds(60) else { throw ValidationProblem("\(source): lock_delay must be at most 60s (Consul's maximum)") }
        guard primaryStartTimeout >= .zero, failoverGrace >= .zero, pgbouncerTimeout >= .zero, pgbouncerTimeout <= .seconds(300) else { throw ValidationProblem("\(source): timeouts cannot be negative, and pgbouncer_timeout is at most 5m") }
        guard backupEvery == .zero || backupEvery >= .seconds(3600) else {
            throw ValidationProblem("\(source): backup_every must be 0s (no scheduled backups) or at least 1h")
        }
        guard synchronousStandbyGrace >= .zero, synchronousStandbyGrace <= .seconds(60) else {
            throw ValidationProblem("\(source): synchronous_standby_grace must be from 0s to 60s (commits wait for an absent synchronous standby that long)")
        }
        guard fenceAfter.nanoseconds >= loopWait.nanoseconds * 2 else {
            throw ValidationProblem(
                "\(source): fence_timeout (\(fenceTimeout), at most 80 % of ttl is used) must be at least twice loop_wait (\(loopWait)), so that one slow heartbeat does not stop the primary")
        }
    }
}
