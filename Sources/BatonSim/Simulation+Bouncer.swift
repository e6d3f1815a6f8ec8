import BatonCore
import ConsulAPI

/// Each node's pgbouncer and its agent: the agent reads the leader key, the registrations and the
/// pause request from the store, decides with ``PgBouncerRouting`` (the live agent's own rule) and
/// ``BouncerAgentMemory``, holds or routes its pgbouncer, and reports as `PgBouncerAgent.report` does —
/// so the stepping-down leader waits for real acknowledgements, and the new leader ends the pause.
extension Simulation {
    /// A node's pgbouncer: where its clients' servers are, and whether it holds them (PAUSE).
    struct Bouncer {
        var target: Int?
        var paused = false
    }

    /// How often an agent decides on its own; it is also woken when the lock, a registration or the
    /// pause request changes (``wakeAgents()``), as the live one is by its watches.
    static let agentInterval: Duration = .seconds(1)

    /// Every agent passes again a few milliseconds from now (its watch answered).
    func wakeAgents() {
        guard options.bouncers else { return }
        for i in nodes.indices where nodes[i].alive {
            schedule(after: .milliseconds(Int64(agentRandom.int(in: 2...20))), .agentWoken(i, generation: nodes[i].generation))
        }
    }

    /// One pass of node `i`'s agent. Without Consul it keeps its routing (the live agent does for a
    /// fence, then holds unless the primary confirms it leads). A `tick` between full decisions only
    /// confirms the leader key's holder, as `PgBouncerAgent.iterate(full: false)` does. An agent's calls
    /// take no virtual time: it is a process of its own, and the monitors' steps keep their timing.
    func agentIterate(_ i: Int, tick: Bool = false) {
        guard reachesConsul(i) else { return }
        let holder = BouncerAgentMemory.leaderIdentity(consul.get(keys.leader))
        if tick, let decided = nodes[i].bouncerDecided, decided.leader == holder, now - decided.at < .seconds(Int64(BouncerStatus.refresh)) { return }
        nodes[i].bouncerDecided = (holder, now)
        // The keys the live agent reads one by one, parsed as the monitors parse them (malformed ones
        // left out, as the agent leaves them).
        let snapshot = clusterSnapshot(ticking: false)
        let leader = snapshot.leader.map { AgentLeaderView.held($0.holder) } ?? .none
        let registrations = snapshot.registrations
        let request = nodes[i].bouncerMemory.standing(snapshot.bouncerPause, at: instant)
        var routing = PgBouncerRouting.decide(leader: leader, registrations: registrations, request: request)
        if options.mutant == .resumeBeforeLeads, case .hold = routing, let request, leader != .held(request.from),
            let target = registrations[request.to]
        {
            // The mutant: once the old primary let go, clients go to the target before it leads.
            routing = .route(host: target.address, port: target.port, acknowledge: request.acknowledgement(.resumed))
        }
        let acknowledged: PauseAcknowledgement?
        switch routing {
        case .untouched:
            acknowledged = nil
        case .hold(_, let ack):
            nodes[i].bouncer.paused = true
            acknowledged = ack
        case .route(let host, _, let ack):
            nodes[i].bouncer.target = registrations.values.first { $0.address == host }.flatMap { index(of: $0.name) }
            nodes[i].bouncer.paused = false
            acknowledged = ack
        }
        reportBouncer(i, acknowledged: acknowledged)
    }

    /// `PgBouncerAgent.report`: written when it says something new, else every ``BouncerStatus/refresh``.
    func reportBouncer(_ i: Int, acknowledged: PauseAcknowledgement?) {
        let bouncer = nodes[i].bouncer
        let status = BouncerStatus(
            target: bouncer.target.map(endpoint), paused: bouncer.paused, acknowledged: acknowledged, problem: nil, time: Double(now.milliseconds) / 1000)
        if let last = nodes[i].bouncerReported, last.status.target == status.target, last.status.paused == status.paused,
            last.status.acknowledged == status.acknowledged, now - last.at < .seconds(Int64(BouncerStatus.refresh))
        {
            return
        }
        _ = try? consul.put(keys.pgbouncerAgent(nodes[i].name), status.json.serializedBytes(), now: instant)  // a plain write is never refused
        nodes[i].bouncerReported = (status, now)
    }

    /// Node `i`'s monitor: which live agents acknowledged `phase` of `request`, which are awaited
    /// (`MonitorLoop.awaitBouncers`).
    func acknowledgements(_ i: Int, of request: PauseRequest, phase: PauseAcknowledgement.Phase) -> (acknowledged: [NodeName], awaited: [NodeName]) {
        let live = Set(nodes[i].memory.bouncerReports.fresh(within: BouncerStatus.liveness, at: instant))
        return request.acknowledgements(clusterSnapshot().bouncers, phase: phase, live: { live.contains($0) })
    }

    /// `MonitorLoop.finishBouncerPause`, on the leader a switchover made: the pause ends once every live
    /// agent resumed on it, or after `pgbouncer_timeout`.
    func finishBouncerPause(_ i: Int, _ snapshot: ClusterSnapshot) {
        guard let pause = snapshot.bouncerPause, pause.to == nodes[i].name else { return }
        let since = bouncerPause?.since ?? now
        guard acknowledgements(i, of: pause, phase: .resumed).awaited.isEmpty || now - since >= nodes[i].config.pgbouncerTimeout.swiftDuration else { return }
        if consul.delete(keys.pgbouncerPause, cas: snapshot.bouncerPauseIndex, now: tick()) {
            note("\(nodes[i].name) ended the pgbouncers' pause")
            endBouncerPause()
            wakeAgents()
        }
    }

    /// The switchover's pause is over: counted when (h) held it to account all along.
    func endBouncerPause() {
        if let pause = bouncerPause, !pause.disturbed { counts.switchoverPauses += 1 }
        bouncerPause = nil
    }

    /// (h) While a switchover holds clients and nothing else happens, every pgbouncer taking clients
    /// sends them to a writable primary: clients see the switchover as a pause, never as an error.
    func bouncerRoutingViolation() -> Violation? {
        guard let pause = bouncerPause, !pause.disturbed else { return nil }
        guard consul.get(keys.pgbouncerPause) != nil else {
            endBouncerPause()
            return nil
        }
        for i in pause.sound where nodes[i].alive && !nodes[i].bouncer.paused {
            guard let t = nodes[i].bouncer.target, !isWritable(t) else { continue }
            return violation(
                "clients sent to a server that takes no writes in a switchover",
                "\(nodes[i].name)'s pgbouncer takes clients for \(nodes[t].name), which is not a writable primary, while the switchover's pause stands")
        }
        return nil
    }
}
