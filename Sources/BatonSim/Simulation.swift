import BatonConsulStore
import BatonCore
import ConsulAPI

/// One simulated cluster, run from one seed: N nodes, each a simulated PostgreSQL with Baton's real
/// rules deciding over it (``MonitorState``, ``MonitorDecision``, ``FailoverCandidates``,
/// ``SynchronousReplication``, ``TimelineClaim``, the cluster's records as ``ClusterSnapshot`` parses
/// them), the embedded Consul server's own store (``InMemoryConsul``), a workload, and faults drawn by
/// the seed — in virtual time, every invariant checked after every step.
///
/// Not thread-safe: one run is one owner's.
public final class Simulation {
    public let seed: UInt64
    public let options: SimulationOptions
    var random: SimRandom
    /// The pgbouncer agents' own draws, apart from the rest: the agents change no other choice a seed
    /// makes.
    var agentRandom: SimRandom
    let keys: ClusterKeys
    let cluster: ClusterName

    /// Virtual time since the start.
    var now: Duration = .zero
    /// The instant virtual time counts from, for the rules that take clock instants.
    static let origin = ContinuousClock.now
    var instant: ContinuousClock.Instant { Self.origin.advanced(by: now) }

    var consul = InMemoryConsul()
    /// The cluster's prefix as last parsed, by the listing's index: parsing is a pure function of the
    /// pairs, so every monitor that reads the same index gets the same snapshot without parsing again.
    var parsed: (index: UInt64, snapshot: ClusterSnapshot)?
    /// The values parsed so far (``ClusterSnapshot/ParseCache``), as the live monitor keeps them.
    var parseCache = ClusterSnapshot.ParseCache()
    var nodes: [SimNode] = []
    /// Consul answers nobody (an election: every call gets 500) until then.
    var consulDownUntil: Duration = .zero
    /// The pgbouncers' pause a switchover asked for, since when, whether a fault or its healing came
    /// meanwhile, and the nodes whose pgbouncer sent clients to the writable primary (or held them) when
    /// it began: invariant (h) holds the switchover alone to account.
    var bouncerPause: (since: Duration, disturbed: Bool, sound: Set<Int>)?
    /// The faults under way (started, not healed yet), by their index in the schedule.
    var activeFaults: [Int: FaultKind] = [:]
    /// Consul's snapshots, as a backup job would take them (newest last).
    var snapshots: [InMemoryConsul.Snapshot] = []

    /// The configuration the operator last wrote: what the cluster is meant to run with.
    var intended: ClusterConfig
    private var queue = EventQueue()
    private var nextCommit: UInt64 = 0
    /// Acknowledged commits with their place in the history they were acknowledged on.
    var acknowledged: [(commit: UInt64, index: Int)] = []
    /// Whether the `sync` key names a standby, parsed once per value (the workload asks ten times a
    /// second; by bytes, not index: a restored Consul reuses indexes).
    private var syncKeySeen: (bytes: [UInt8]?, namesAStandby: Bool)?
    private var syncRecordNamesAStandby: Bool {
        let bytes = consul.get(keys.sync)?.value
        if let seen = syncKeySeen, seen.bytes == bytes { return seen.namesAStandby }
        let names = ((try? SyncRecord.parse(bytes, key: keys.sync)) ?? nil) != nil  // a record that does not parse names nobody
        syncKeySeen = (bytes, names)
        return names
    }
    /// The last position a primary reported to Consul (what the cluster knew of the primary's WAL).
    var lastPrimaryReport: LSN?
    /// The node each fault under way hit (by the fault's place in the schedule).
    var faultTargets: [Int: Int] = [:]
    /// Every fault of the run is Consul's own trouble: with failsafe on, a promotion is a needless
    /// failover.
    private var consulTroubleOnly = false
    /// Nodes that were writable primaries after the previous step.
    private var writableBefore: Set<Int> = []
    /// The last planned switchover handed over: its target, and the history the old primary had when it
    /// stopped (invariant g: the target becomes writable with every acknowledged commit of it).
    var handover: (target: Int, history: [UInt64])?
    /// Pause requests written so far (their ids).
    var pauses = 0
    /// Nodes promoted since the last step (a standby became the primary), with the position the last
    /// primary had reported then.
    var promotedSince: [Int: LSN?] = [:]

    public internal(set) var trace: [String] = []
    public private(set) var violations: [Violation] = []
    public internal(set) var counts = Counts()

    /// What one run did.
    public struct Counts: Sendable {
        public var steps = 0
        public var faults = 0
        public var promotions = 0
        /// Promotions while another standby on the same timeline was further ahead (a measurement, not
        /// an invariant: asynchronous replication allows it within the lag limit).
        public var lessAdvancedPromotions = 0
        /// Switchovers whose pgbouncer pause invariant (h) held to account from start to end (no other
        /// fault meanwhile).
        public var switchoverPauses = 0
        public var acknowledged = 0
        /// Workload ticks (100 ms) in synchronous mode with one writable primary and a standby alive
        /// and following it; of them, those in which the `sync` key named no standby — no automatic
        /// failover could have kept every acknowledged commit (a measurement, not an invariant).
        public var synchronousPrimaryTicks = 0
        public var unprotectedTicks = 0
    }

    public init(seed: UInt64, options: SimulationOptions) {
        self.seed = seed
        self.options = options
        self.random = SimRandom(seed: seed)
        self.agentRandom = SimRandom(seed: seed ^ 0x6167_656E_7473)  // "agents"
        self.cluster = try! ClusterName("sim")  // a valid literal
        self.keys = ClusterKeys(cluster: cluster)
        var config = ClusterConfig()
        config.synchronousMode = options.synchronousMode
        if let failsafe = options.failsafeMode { config.failsafeMode = failsafe }
        self.intended = config
    }

    // MARK: Running

    /// Runs the whole schedule; returns the first violation, if any (the run stops there).
    @discardableResult
    public func run() -> Violation? {
        setUp()
        let faults = FaultSchedule.draw(&random, options: options, nodes: nodes.count)
        consulTroubleOnly = !faults.isEmpty && faults.allSatisfy(\.kind.isConsulTrouble)
        for (index, fault) in faults.enumerated() { queue.push(at: fault.at, .fault(index)) }
        let schedule = faults
        let end = options.faultPhase + options.quietPhase
        while let (time, event) = queue.pop(), time <= end {
            // Calls to Consul move time on within a step: an event due meanwhile comes right after it.
            now = max(now, time)
            consulTick()
            watchdogsAfterThaw()
            handle(event, faults: schedule)
            // The step's calls to Consul took time: a machine may have thawed meanwhile.
            watchdogsAfterThaw()
            counts.steps += 1
            if let violation = checkInvariants() { return violation }
        }
        now = end
        return checkLiveness()
    }

    private func setUp() {
        let config = intended
        _ = try? consul.put(keys.config, config.json.serializedBytes(), now: instant)  // a fresh store refuses no plain write
        for i in 0..<options.nodes {
            let name = try! NodeName("pg\(i + 1)")  // a valid literal
            let node = SimNode(index: i, name: name, standby: i != 0)
            if i == 0 { node.db.running = true } else {
                node.db.launch(at: .zero)
                node.db.upstream = nodes[0].name
            }
            nodes.append(node)
            let registration = registrationRecord(i, role: i == 0 ? .primary : .standby, upstream: i == 0 ? nil : nodes[0].name)
            _ = try? consul.put(keys.node(name), registration.json.serializedBytes(), now: instant)  // as above
        }
        for i in nodes.indices {
            queue.push(at: .milliseconds(Int64(random.int(in: 0...999))), .monitor(i, generation: 0))
            queue.push(at: .milliseconds(Int64(random.int(in: 0...999))), .beat(i, generation: 0))
            if options.bouncers { queue.push(at: .milliseconds(Int64(agentRandom.int(in: 0...999))), .agent(i, generation: 0)) }
        }
        queue.push(at: Self.workloadInterval, .workload)
        queue.push(at: .seconds(5), .snapshot)
    }

    func registrationRecord(_ i: Int, role: NodeRole, upstream: NodeName?) -> NodeRegistration {
        NodeRegistration(
            name: nodes[i].name, address: try! HostAddress("198.18.0.\(i + 1)"), port: try! TCPPort(5432),  // valid literals
            role: role, upstream: upstream, priority: 100, location: "")
    }

    func endpoint(_ i: Int) -> String { "198.18.0.\(i + 1):5432" }

    func index(of name: NodeName) -> Int? { nodes.firstIndex { $0.name == name } }

    enum Event {
        case monitor(Int, generation: Int)
        case beat(Int, generation: Int)
        case watchdog(Int, generation: Int)
        /// The step of a step-down under way on the node is over.
        case stepDown(Int, generation: Int)
        /// A pass of the node's pgbouncer agent: its tick, or woken by a watch.
        case agent(Int, generation: Int)
        case agentWoken(Int, generation: Int)
        case workload
        case snapshot
        case fault(Int)
        case heal(Int)
    }

    /// How soon a monitor whose loop is busy (a step-down) looks again whether it is free.
    static let busyLoopRetry: Duration = .milliseconds(50)

    func schedule(after delay: Duration, _ event: Event) { queue.push(at: now + delay, event) }
    func schedule(at time: Duration, _ event: Event) { queue.push(at: time, event) }

    private func handle(_ event: Event, faults: [Fault]) {
        switch event {
        case .monitor(let i, let generation):
            guard nodes[i].alive, nodes[i].generation == generation else { return }
            if let thaw = nodes[i].monitorFrozenUntil(now) { return queue.push(at: thaw, event) }
            // The loop is carrying a step-down out: it decides again once that is over.
            if nodes[i].steppingDown != nil { return schedule(after: Self.busyLoopRetry, event) }
            let pause = iterate(i)
            schedule(after: pause, .monitor(i, generation: generation))
        case .beat(let i, let generation):
            guard nodes[i].alive, nodes[i].generation == generation else { return }
            if let thaw = nodes[i].monitorFrozenUntil(now) { return queue.push(at: thaw, event) }
            schedule(after: heartbeat(i), .beat(i, generation: generation))
        case .stepDown(let i, let generation):
            guard nodes[i].alive, nodes[i].generation == generation else { return }
            if let thaw = nodes[i].monitorFrozenUntil(now) { return queue.push(at: thaw, event) }
            answerStepDown(i)
        case .agent(let i, let generation):
            guard nodes[i].alive, nodes[i].generation == generation else { return }
            if let thaw = nodes[i].nodeFrozenUntil(now) { return queue.push(at: thaw, event) }
            agentIterate(i, tick: true)
            schedule(after: Self.agentInterval, event)
        case .agentWoken(let i, let generation):
            guard nodes[i].alive, nodes[i].generation == generation else { return }
            if let thaw = nodes[i].nodeFrozenUntil(now) { return queue.push(at: thaw, event) }
            agentIterate(i)
        case .watchdog(let i, let generation):
            guard nodes[i].alive, nodes[i].watchdogGeneration == generation else { return }
            if let thaw = nodes[i].nodeFrozenUntil(now) { return queue.push(at: thaw, event) }
            watchdogFires(i)
        case .workload:
            workload()
            schedule(after: Self.workloadInterval, .workload)
        case .snapshot:
            snapshots.append(consul.snapshot)
            if snapshots.count > 4 { snapshots.removeFirst() }
            schedule(after: .seconds(5), .snapshot)
        case .fault(let index):
            counts.faults += 1
            bouncerPause?.disturbed = true
            activeFaults[index] = faults[index].kind
            start(faults[index], index: index)
        case .heal(let index):
            bouncerPause?.disturbed = true
            activeFaults[index] = nil
            heal(faults[index], index: index)
        }
    }

    /// Whether node `i` reaches Consul now.
    func reachesConsul(_ i: Int) -> Bool {
        now >= consulDownUntil && !nodes[i].cutFromConsul
    }

    /// A watchdog whose deadline passed while its machine was stopped fences the moment it runs again,
    /// before anything else on that machine.
    private func watchdogsAfterThaw() {
        for i in nodes.indices where nodes[i].alive && !nodes[i].frozen(now) {
            if let deadline = nodes[i].watchdogDeadline, firesAt(deadline) <= now { watchdogFires(i) }
        }
    }

    private func consulTick() {
        // Consul's session timers run on its leader: none expire during an election.
        if now >= consulDownUntil { consul.expireSessions(now: instant) }
    }

    /// Every call to Consul takes a millisecond of virtual time (a round trip on a quiet network): what
    /// one action does in several calls — a takeover's rename, destroy and acquire — does not happen
    /// at one instant.
    func tick() -> ContinuousClock.Instant {
        now += .milliseconds(1)
        return instant
    }

    /// The store, for a read (which takes its millisecond too).
    func consulRead() -> InMemoryConsul {
        _ = tick()
        return consul
    }

    func note(_ line: String) {
        trace.append("\(now.traceText) \(line)")
    }

    // MARK: The workload and replication

    /// A commit on the primary, and replication to the standbys, every so often.
    static let workloadInterval: Duration = .milliseconds(100)

    /// Every writable primary commits one transaction; every standby that streams receives what its
    /// upstream has (unless its WAL receiver is frozen); commits are acknowledged as the primary's
    /// synchronous_standby_names demands.
    private func workload() {
        let writable = nodes.indices.filter(isWritable)
        if intended.synchronousMode != .off, writable.count == 1,
            nodes.contains(where: { $0.alive && $0.db.answers(at: now) && $0.db.standbySignal && $0.db.upstream == nodes[writable[0]].name })
        {
            counts.synchronousPrimaryTicks += 1
            if !syncRecordNamesAStandby { counts.unprotectedTicks += 1 }
        }
        for i in nodes.indices where isWritable(i) {
            nextCommit += 1
            nodes[i].db.wal.append(nextCommit)
            nodes[i].db.pending.append((nextCommit, nodes[i].db.wal.count - 1))
        }
        for i in nodes.indices where nodes[i].db.answers(at: now) && nodes[i].db.standbySignal && !nodes[i].frozen(now) {
            guard streams(i), !nodes[i].db.receiverFrozen, let u = nodes[i].db.upstream.flatMap(index(of:)) else { continue }
            let have = nodes[i].db.wal.count
            // A standby the primary waits for has every commit it acknowledged; the others trail by one
            // to three, each by its own amount each time (asynchronous replication is never quite there,
            // and not equally far behind on every standby).
            let names = nodes[u].db.synchronousStandbyNames
            let waitedFor = names == "*" || names == SynchronousReplication.names(nodes[i].name)
            let reach = waitedFor ? nodes[u].db.wal.count : max(have, nodes[u].db.wal.count - random.int(in: 1...3))
            if reach > have { nodes[i].db.wal.append(contentsOf: nodes[u].db.wal[have..<reach]) }
            nodes[i].db.timeline = max(nodes[i].db.timeline, nodes[u].db.timeline)
        }
        for i in nodes.indices where !nodes[i].db.pending.isEmpty {
            // Not writable now (frozen, fenced): nothing acknowledged now (a stop ended the waiting commits).
            guard isWritable(i) else { continue }
            let reached = synchronousReach(i)
            while let first = nodes[i].db.pending.first, first.index < reached {
                acknowledged.append(first)
                counts.acknowledged += 1
                nodes[i].db.pending.removeFirst()
            }
        }
    }

    /// How far in primary `i`'s history commits are acknowledged: everything when it waits for no
    /// standby, else as far as a standby its synchronous_standby_names names has received.
    private func synchronousReach(_ i: Int) -> Int {
        let names = nodes[i].db.synchronousStandbyNames
        if names.isEmpty { return nodes[i].db.wal.count }
        var reach = 0
        for s in nodes.indices where s != i && streams(s) && nodes[s].db.upstream == nodes[i].name {
            guard names == "*" || names == SynchronousReplication.names(nodes[s].name) else { continue }
            reach = max(reach, nodes[s].db.wal.count)
        }
        return reach
    }

    /// Node `i`'s standby streams: it runs in recovery, its upstream answers, and its history is part of
    /// the upstream's.
    func streams(_ i: Int) -> Bool {
        let db = nodes[i].db
        guard db.answers(at: now), db.standbySignal, now >= db.receiverDownUntil, !nodes[i].frozen(now), let u = db.upstream.flatMap(index(of:)), u != i else { return false }
        return nodes[u].db.answers(at: now) && !nodes[u].frozen(now) && db.isPrefix(of: nodes[u].db)
    }

    /// A primary that would take a write now (a frozen node takes none until it thaws, and its watchdog
    /// judges its deadline first then).
    func isWritable(_ i: Int) -> Bool {
        nodes[i].alive && nodes[i].db.writable(at: now) && !nodes[i].frozen(now)
    }

    // MARK: Invariants

    /// A broken invariant: what, when, and the seed that replays it.
    public struct Violation: Error, Sendable, CustomStringConvertible {
        public var invariant: String
        public var detail: String
        public var time: Duration
        public var seed: UInt64
        public var description: String { "seed \(seed) at \(time.traceText) s: \(invariant): \(detail)" }
    }

    func violation(_ invariant: String, _ detail: String) -> Violation {
        let v = Violation(invariant: invariant, detail: detail, time: now, seed: seed)
        note("VIOLATION \(invariant): \(detail)")
        violations.append(v)
        return v
    }

    /// (a) never two writable primaries; (b) a node that becomes primary in synchronous mode has every
    /// acknowledged commit; (d) nobody is promoted while automatic failover is paused; (e) in asynchronous mode no node is promoted further behind the primary's
    /// last reported position than maximum_lag_on_failover.
    private func checkInvariants() -> Violation? {
        let writable = Set(nodes.indices.filter(isWritable))
        defer {
            writableBefore = writable
            promotedSince = [:]
        }
        if writable.count > 1 {
            return violation("two writable primaries", writable.sorted().map { nodes[$0].name.value }.joined(separator: " and "))
        }
        for i in writable.subtracting(writableBefore) {
            if intended.synchronousMode != .off, let missing = acknowledged.first(where: { !nodes[i].db.contains($0.commit, at: $0.index) }) {
                return violation(
                    "acknowledged commit lost",
                    "\(nodes[i].name) became primary without commit \(missing.commit) (acknowledged in synchronous mode; \(acknowledged.count) acknowledged in all)")
            }
        }
        if let (target, history) = handover, !writable.subtracting(writableBefore).isEmpty {
            handover = nil
            if writable.contains(target), let missing = acknowledged.first(where: { $0.index < history.count && history[$0.index] == $0.commit && !nodes[target].db.contains($0.commit, at: $0.index) }) {
                return violation(
                    "switchover lost a commit",
                    "\(nodes[target].name) became primary by a switchover without commit \(missing.commit), acknowledged by the primary that stepped down")
            }
        }
        if let violation = bouncerRoutingViolation() { return violation }
        if consul.get(keys.pause) != nil {
            // An operator's request (switchover or failover naming the node) is not automatic: pause
            // leaves it to them (`baton failover --to` works while paused).
            let requested = (try? TakeoverRequest(bytes: consul.get(keys.switchover)?.value, key: keys.switchover)).map(\.to)
            if let promoted = promotedSince.keys.sorted().first(where: { nodes[$0].name != requested }) {
                return violation("failover while paused", "\(nodes[promoted].name) promoted while automatic failover was paused")
            }
        }
        // With failsafe off a Consul outage past fence_timeout fences the leader: the strict rule's cost.
        if let promoted = promotedSince.keys.min(), consulTroubleOnly, intended.failsafeMode {
            return violation("needless failover", "\(nodes[promoted].name) promoted although only Consul misbehaved and every PostgreSQL was healthy")
        }
        for (i, reference) in promotedSince where intended.synchronousMode == .off {
            if let reported = reference, nodes[i].db.position.value + intended.maximumLagOnFailover < reported.value {
                return violation(
                    "promoted past maximum_lag_on_failover",
                    "\(nodes[i].name) promoted at \(nodes[i].db.position), \(reported.value - nodes[i].db.position.value) bytes behind the primary's last report \(reported) (limit \(intended.maximumLagOnFailover))")
            }
        }
        return nil
    }

    /// (c) liveness: with every fault healed, Consul answering and the nodes up for the quiet phase, one
    /// node leads a writable primary.
    private func checkLiveness() -> Violation? {
        let writable = nodes.indices.filter(isWritable)
        let holder = consul.get(keys.leader).flatMap { $0.session == nil ? nil : $0.stringValue }
        guard writable.count == 1, holder == nodes[writable[0]].name.value else {
            return violation(
                "no primary after the faults",
                "\(options.quietPhase.traceText) s after the last fault: writable \(writable.map { nodes[$0].name.value }), lock held by \(holder ?? "nobody")")
        }
        return nil
    }
}

/// The events to come, earliest first; events at the same time in the order they were scheduled.
struct EventQueue {
    private var heap: [(time: Duration, sequence: UInt64, event: Simulation.Event)] = []
    private var sequence: UInt64 = 0

    mutating func push(at time: Duration, _ event: Simulation.Event) {
        sequence += 1
        heap.append((time, sequence, event))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard earlier(child, parent) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (Duration, Simulation.Event)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = parent * 2 + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, earlier(left, smallest) { smallest = left }
            if right < heap.count, earlier(right, smallest) { smallest = right }
            guard smallest != parent else { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return (top.time, top.event)
    }

    private func earlier(_ a: Int, _ b: Int) -> Bool {
        heap[a].time != heap[b].time ? heap[a].time < heap[b].time : heap[a].sequence < heap[b].sequence
    }
}
