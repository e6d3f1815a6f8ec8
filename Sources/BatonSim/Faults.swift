import BatonConsulStore
import BatonCore
import ConsulAPI

/// The kinds of fault the seed draws from.
public enum FaultKind: String, Sendable, CaseIterable {
    /// kill -9 of a postmaster (the primary's, mostly).
    case postmasterKill = "postmaster-kill"
    /// A machine dies, and starts again after a while.
    case nodeDeath = "node-death"
    /// The monitor (loop and lease) is stopped for a while; PostgreSQL and the watchdog run on.
    case monitorFreeze = "monitor-freeze"
    /// The whole machine is stopped for a while.
    case nodeFreeze = "node-freeze"
    /// A node cannot reach Consul for a while (it still reaches the other nodes).
    case consulCut = "consul-cut"
    /// Consul answers every call with 500 "No cluster leader" for 1–15 s.
    case consulElection = "consul-election"
    /// A node's sessions are invalidated, as a restarted Consul agent does.
    case agentRestart = "agent-restart"
    /// Consul is restored from one of its last snapshots: keys, sessions and indexes roll back.
    case consulRestore = "consul-restore"
    /// Every standby's WAL receiver stops while the primary writes, then the primary's postmaster is killed.
    case laggingReplicas = "lagging-replicas"
    /// fence_timeout is raised to 8 s, then — with the leader's monitor frozen — lowered to 2 s.
    case fenceTimeoutLowered = "fence-timeout-lowered"
    /// The configuration gains a key an older monitor does not know (a newer `baton config set`).
    case unknownConfigKey = "unknown-config-key"
    /// A known setting of the configuration gets a value that does not parse (someone wrote the key by
    /// hand), until the operator writes it back.
    case malformedConfig = "malformed-config"
    /// The synchronous standby's WAL receiver is killed three times 0.4 s apart (each time it comes back
    /// after `wal_retrieve_retry_interval`, 500 ms: 1.3 s without streaming).
    case syncStandbyFlaps = "sync-standby-flaps"
    /// A switchover to a standby other than the synchronous one is requested (as `baton switchover`
    /// accepted before finding 8), and the leader's machine dies before it steps down.
    case switchoverThenDeath = "switchover-then-death"
    /// The operator pauses automatic failover (`baton pause`) and the leader's postmaster is killed at
    /// once; failover is resumed (`baton resume`) after a while.
    case pausedFailure = "paused-failure"
    /// The operator asks for a switchover to a standby, checked as `baton switchover` checks it; half
    /// the time the target's WAL receiver dies at that moment (its link drops) for the fault's length.
    case switchover
    /// The monitor and its watchdog are killed together (`pkill -9 baton` matches both); PostgreSQL runs
    /// on, a writable primary nobody fences when it is the leader's; the monitor starts again after a while.
    case guardiansKilled = "guardians-killed"
}

extension FaultKind {
    /// Consul's own everyday trouble (and a node's link to it), never the database's: none of these
    /// may cause a failover while every PostgreSQL and node is healthy.
    public var isConsulTrouble: Bool {
        switch self {
        case .consulElection, .agentRestart, .consulCut: return true
        default: return false
        }
    }
}

/// One fault of a run: its kind, when it starts, how long it lasts, and a choice of its own.
public struct Fault: Sendable {
    public var kind: FaultKind
    public var at: Duration
    public var length: Duration
    /// Picks the node (or the snapshot) the fault hits: below 600 modulo 1,000, the leader.
    public var choice: Int

    public init(kind: FaultKind, at: Duration, length: Duration, choice: Int = 0) {
        self.kind = kind
        self.at = at
        self.length = length
        self.choice = choice
    }
}

enum FaultSchedule {
    /// The faults of one run, drawn by the seed: times spread over the fault phase after a quiet first 5 s.
    static func draw(_ random: inout SimRandom, options: SimulationOptions, nodes: Int) -> [Fault] {
        if let script = options.script { return script }
        guard !options.kinds.isEmpty else { return [] }
        return (0..<options.faults).map { _ in
            let kind = random.pick(options.kinds)
            let at = random.duration(.seconds(5), options.faultPhase)
            let length: Duration
            switch kind {
            case .consulElection: length = random.duration(.seconds(1), .seconds(15))
            case .nodeDeath, .switchoverThenDeath, .guardiansKilled: length = random.duration(.seconds(2), .seconds(20))
            case .laggingReplicas: length = random.duration(.seconds(4), .seconds(8))
            case .fenceTimeoutLowered: length = .seconds(5)
            default: length = random.duration(.milliseconds(500), .seconds(12))
            }
            return Fault(kind: kind, at: at, length: length, choice: random.int(in: 0...999))
        }
    }
}

extension Simulation {
    /// The node holding the lock, as Consul has it (or the first node).
    var leaderIndex: Int {
        consul.get(keys.leader).flatMap { $0.session == nil ? nil : index(of: (try? NodeName($0.stringValue)) ?? nodes[0].name) } ?? 0
    }

    /// Mostly the leader: that is where faults matter.
    private func target(_ fault: Fault) -> Int {
        fault.choice % 10 < 6 ? leaderIndex : fault.choice % nodes.count
    }

    func start(_ fault: Fault, index: Int) {
        let i = target(fault)
        let name = nodes[i].name
        faultTargets[index] = i
        switch fault.kind {
        case .postmasterKill:
            note("FAULT postmaster of \(name) killed")
            nodes[i].db.stop()
            return
        case .nodeDeath:
            note("FAULT \(name) dies for \(fault.length.traceText) s")
            nodes[i].alive = false
            nodes[i].db.stop()
        case .monitorFreeze:
            note("FAULT monitor of \(name) frozen for \(fault.length.traceText) s")
            nodes[i].monitorFrozenTill = max(nodes[i].monitorFrozenTill, now + fault.length)
        case .guardiansKilled:
            if nodes[i].frozen(now) {
                note("FAULT (none: \(name) is frozen; its monitor and watchdog are not killed, as under node-freeze)")
                return
            }
            note("FAULT monitor and watchdog of \(name) killed, PostgreSQL runs on; the monitor starts again in \(fault.length.traceText) s")
            // Stopped past the heal, which starts a new monitor: nothing of the killed one runs again.
            nodes[i].monitorFrozenTill = max(nodes[i].monitorFrozenTill, now + fault.length + .milliseconds(1))
            nodes[i].guardiansKilled = true
            nodes[i].watchdogDeadline = nil
            nodes[i].watchdogGeneration += 1
        case .nodeFreeze:
            // A machine whose monitor and watchdog were killed, its writable primary unguarded since (also
            // while a restarted monitor has not led it yet), that freezes looks dead: a replica takes
            // over, and once it thaws two nodes take writes until its monitor guards it again. No rule
            // covers that (only a fence from outside the machine would), so the simulator does not draw
            // it (docs/failover.md).
            if nodes[i].unguardedPrimary {
                note("FAULT (none: \(name), without its monitor and watchdog, is not frozen)")
                return
            }
            note("FAULT \(name) frozen for \(fault.length.traceText) s")
            nodes[i].nodeFrozenTill = max(nodes[i].nodeFrozenTill, now + fault.length)
        case .consulCut:
            note("FAULT \(name) cut from Consul for \(fault.length.traceText) s")
            nodes[i].cutFromConsul = true
        case .consulElection:
            note("FAULT Consul elects a leader for \(fault.length.traceText) s (every call: 500)")
            consulDownUntil = max(consulDownUntil, now + fault.length)
        case .agentRestart:
            let sessions = consul.sessions(ofNode: name.value)
            note("FAULT Consul agent of \(name) restarted: sessions \(sessions) invalidated")
            for id in sessions { consul.destroySession(id, now: instant) }
            return
        case .consulRestore:
            guard !snapshots.isEmpty else { return }
            let snapshot = snapshots[fault.choice % snapshots.count]
            note("FAULT Consul restored from its snapshot at index \(snapshot.index) (now \(consul.index))")
            consul.restore(snapshot, now: instant)
            parsed = nil
            return
        case .laggingReplicas:
            note("FAULT every standby's WAL receiver stopped for \(fault.length.traceText) s, then the primary's postmaster is killed")
            for s in nodes.indices where s != leaderIndex { nodes[s].db.receiverFrozen = true }
        case .fenceTimeoutLowered:
            note("FAULT config set fence_timeout=8s")
            intended.fenceTimeout = .seconds(8)
            writeIntended()
        case .unknownConfigKey:
            note("FAULT config gains a key this Baton does not know")
            var json = intended.json
            if case .object(var members) = json {
                members.append(("a_setting_from_a_newer_baton", .string("on")))
                json = .object(members)
            }
            _ = try? consul.put(keys.config, json.serializedBytes(), now: instant)  // a plain write is never refused
            return
        case .syncStandbyFlaps:
            let leader = leaderIndex
            let recorded = (try? SyncRecord.parse(consulRead().get(keys.sync)?.value, key: keys.sync)).flatMap { $0 }.flatMap { self.index(of: $0.standby) }
            let s = recorded ?? (i != leader ? i : (leader + 1) % nodes.count)
            note("FAULT WAL receiver of \(nodes[s].name) killed three times 0.4 s apart (back at +\(Self.flapping.traceText) s)")
            nodes[s].db.receiverDownUntil = max(nodes[s].db.receiverDownUntil, now + Self.flapping)
            return
        case .switchoverThenDeath:
            let leader = leaderIndex
            let recorded = (try? SyncRecord.parse(consulRead().get(keys.sync)?.value, key: keys.sync)).flatMap { $0 }.flatMap { self.index(of: $0.standby) }
            let others = nodes.indices.filter { $0 != leader && $0 != recorded }
            guard !others.isEmpty else { return }
            let to = others[fault.choice % others.count]
            let request = TakeoverRequest(to: nodes[to].name, from: nodes[leader].name, time: "")
            _ = try? consul.put(keys.switchover, request.json.serializedBytes(), now: instant)  // a plain write is never refused
            note("FAULT switchover to \(nodes[to].name) requested; \(nodes[leader].name) dies for \(fault.length.traceText) s before it steps down")
            faultTargets[index] = leader
            nodes[leader].alive = false
            nodes[leader].db.stop()
        case .switchover:
            askForSwitchover(fault)
            return
        case .pausedFailure:
            let leader = leaderIndex
            note("FAULT automatic failover paused for \(fault.length.traceText) s; postmaster of \(nodes[leader].name) killed")
            let pause = JSONValue.object([("time", .string("")), ("reason", .string("simulated maintenance")), ("by", .string(nodes[leader].name.value))])
            _ = try? consul.put(keys.pause, pause.serializedBytes(), now: instant)  // a plain write is never refused
            nodes[leader].db.stop()
        case .malformedConfig:
            note("FAULT config's synchronous_mode set to a value that does not parse")
            var json = intended.json
            if case .object(let members) = json {
                json = .object(members.map { $0.0 == "synchronous_mode" ? ($0.0, .string("maybe")) : $0 })
            }
            _ = try? consul.put(keys.config, json.serializedBytes(), now: instant)  // a plain write is never refused
        }
        schedule(after: fault.length, .heal(index))
    }

    func heal(_ fault: Fault, index: Int) {
        let target = faultTargets.removeValue(forKey: index)
        switch fault.kind {
        case .nodeDeath, .switchoverThenDeath:
            if let i = target { revive(i) }
        case .guardiansKilled:
            if let i = target { restartMonitor(i) }
        case .nodeFreeze:
            if let i = target, !nodes[i].frozen(now) { note("HEAL \(nodes[i].name) thaws") }
        case .consulCut:
            guard let i = target else { return }
            nodes[i].cutFromConsul = false
            note("HEAL \(nodes[i].name) reaches Consul again")
        case .consulElection:
            guard now >= consulDownUntil else { return }
            note("HEAL Consul has a leader again")
            // A new Consul leader starts every session's TTL afresh.
            consul.restore(consul.snapshot, now: instant)
        case .laggingReplicas:
            let leader = leaderIndex
            note("HEAL WAL receivers run again; FAULT postmaster of \(nodes[leader].name) killed")
            nodes[leader].db.stop()
            for i in nodes.indices { nodes[i].db.receiverFrozen = false }
        case .fenceTimeoutLowered:
            let leader = leaderIndex
            note("FAULT monitor of \(nodes[leader].name) frozen for 12 s; config set fence_timeout=2s")
            nodes[leader].monitorFrozenTill = max(nodes[leader].monitorFrozenTill, now + .seconds(12))
            intended.fenceTimeout = .seconds(2)
            writeIntended()
        case .malformedConfig:
            note("HEAL the operator writes the config back")
            writeIntended()
        case .pausedFailure:
            note("HEAL automatic failover resumed")
            _ = consul.delete(keys.pause, now: instant)  // true: a plain delete is never refused
        case .monitorFreeze, .postmasterKill, .agentRestart, .consulRestore, .unknownConfigKey, .syncStandbyFlaps, .switchover:
            break
        }
    }

    /// `baton switchover --to`: a standby drawn by the fault, the request checked against the cluster as
    /// Consul has it and written with check-and-set at 0 (one request at a time).
    private func askForSwitchover(_ fault: Fault) {
        guard now >= consulDownUntil else { return note("FAULT a switchover asked for; Consul does not answer") }
        let snapshot = ClusterSnapshot(pairs: consul.list(keys.prefix).pairs, keys: keys)
        let live = Set(nodes.filter { $0.session.map(consul.sessionExists) ?? false }.map(\.name))
        let others = nodes.indices.filter { nodes[$0].name != snapshot.leader?.holder }
        let to = others[fault.choice % others.count]
        let name = nodes[to].name
        if let refusal = TakeoverView(snapshot: snapshot, live: live).switchoverRefusal(to: name) {
            return note("FAULT a switchover to \(name) asked for, refused: \(refusal)")
        }
        let request = TakeoverRequest(to: name, from: snapshot.leader?.holder, time: "")
        guard (try? consul.put(keys.switchover, request.json.serializedBytes(), mode: .cas(0), now: instant)) == true else {  // an error: not written
            return note("FAULT a switchover to \(name) asked for, refused: another request is pending")
        }
        note("FAULT switchover to \(name) requested")
        if fault.choice >= 500 {
            nodes[to].db.receiverDownUntil = max(nodes[to].db.receiverDownUntil, now + fault.length)
            note("FAULT WAL receiver of \(name) down for \(fault.length.traceText) s")
        }
    }

    /// How long the flapping standby streams nothing: three kills 0.4 s apart, back 0.5 s after the last.
    static let flapping: Duration = .milliseconds(1_300)

    /// A dead machine starts again: PostgreSQL down, the monitor and lease afresh.
    func revive(_ i: Int) {
        guard !nodes[i].alive else { return }
        note("HEAL \(nodes[i].name) starts again")
        nodes[i].restart()
        scheduleStart(i)
    }

    /// The monitor killed with its watchdog starts again (a new watchdog with it): on a machine that ran
    /// on, PostgreSQL as the monitor finds it.
    func restartMonitor(_ i: Int) {
        guard nodes[i].alive else { return }
        note("HEAL monitor of \(nodes[i].name) starts again")
        nodes[i].monitorFrozenTill = now
        nodes[i].restartMonitor()
        scheduleStart(i)
    }

    /// A started node's first loop, beat and agent pass.
    private func scheduleStart(_ i: Int) {
        schedule(after: .milliseconds(Int64(random.int(in: 0...999))), .monitor(i, generation: nodes[i].generation))
        schedule(after: .milliseconds(Int64(random.int(in: 0...999))), .beat(i, generation: nodes[i].generation))
        // The agent starts with the machine (or goes on) and decides at once; then it ticks every second.
        if options.bouncers { schedule(after: .milliseconds(Int64(agentRandom.int(in: 1...50))), .agent(i, generation: nodes[i].generation)) }
    }

    func writeIntended() {
        _ = try? consul.put(keys.config, intended.json.serializedBytes(), now: instant)  // a plain write is never refused
    }
}
