import BatonChaosCore
import BatonConsul
import BatonCore
import BatonPostgres
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Injects the faults of a chaos run into the lab and heals them.
struct FaultInjector {
    let lab: ChaosLab
    let consul: ConsulClient

    /// What a fault did: the nodes it hit and anything worth saying.
    struct Done: Sendable {
        var targets: [String] = []
        var note: String = ""
    }

    /// The node a role names now.
    func resolve(_ role: TargetRole, pick: Int, leader: String?, sync: String?) -> String {
        let names = lab.names
        let replicas = names.filter { $0 != leader }
        switch role {
        case .primary: return leader ?? names[pick % names.count]
        case .replica: return replicas.isEmpty ? names[pick % names.count] : replicas[pick % replicas.count]
        case .synchronousStandby: return sync ?? (replicas.isEmpty ? names[pick % names.count] : replicas[pick % replicas.count])
        case .random: return names[pick % names.count]
        }
    }

    /// Injects the fault, waits its duration, heals it.
    func perform(_ fault: PlannedFault, leader: String?, sync: String?) async -> Done {
        if fault.kind == .overlap {
            return await withTaskGroup(of: Done.self) { group in
                for part in fault.parts { group.addTask { await perform(part, leader: leader, sync: sync) } }
                var all = Done()
                for await done in group {
                    all.targets += done.targets
                    if !done.note.isEmpty { all.note += (all.note.isEmpty ? "" : "; ") + done.note }
                }
                return all
            }
        }
        let target = resolve(fault.target, pick: fault.pick, leader: leader, sync: sync)
        var done = Done(targets: fault.kind.aimed ? [target] : [])
        let hold = Duration.milliseconds(Int64(fault.duration * 1000))
        do {
            switch fault.kind {
            case .killPostmaster:
                guard let pid = lab.postmaster(target) else { return note(done, "no postmaster on \(target)") }
                lab.signal([pid], SIGKILL)
            case .killBackend:
                guard let pid = await lab.backend(target) else { return note(done, "no backend on \(target)") }
                lab.signal([pid], SIGKILL)
            case .killMonitor:
                lab.signal(await lab.monitor(target), SIGKILL)
                try await Task.sleep(for: hold)
                try await lab.lab("start-daemon", String(lab.number(target)), "monitor")
            case .killWatchdog:
                let pids = await lab.watchdog(target)
                if pids.isEmpty { done.note = "no watchdog on \(target)" }
                lab.signal(pids, SIGKILL)
            case .killAgent:
                lab.signal(await lab.agent(target), SIGKILL)
                try await Task.sleep(for: hold)
                try await lab.lab("start-daemon", String(lab.number(target)), "pgbouncer-agent")
            case .killPgBouncer:
                lab.signal(await lab.pgbouncer(target), SIGKILL)
                try await Task.sleep(for: .seconds(1))
                try await lab.lab("start-daemon", String(lab.number(target)), "pgbouncer")
            case .killKeepalived:
                try await lab.lab("kill-keepalived", String(lab.number(target)))
                try await Task.sleep(for: .seconds(1))
                try await lab.lab("start-keepalived", String(lab.number(target)))
            case .nodeDeath:
                try await lab.lab("kill-node", String(lab.number(target)))
                try await Task.sleep(for: hold)
                try await lab.lab("start-node", String(lab.number(target)))
            case .freezeMonitor:
                let pids = await lab.monitor(target) + (await lab.watchdog(target))
                lab.signal(pids, SIGSTOP)
                try? await Task.sleep(for: hold)
                lab.signal(pids, SIGCONT)
            case .freezeNode:
                let pids = await lab.pids(target)
                lab.signal(pids, SIGSTOP)
                try? await Task.sleep(for: hold)
                lab.signal(pids, SIGCONT)
            case .partition:
                try await lab.lab("partition", String(lab.number(target)))
                try? await Task.sleep(for: hold)
                try await lab.lab("heal", String(lab.number(target)))
            case .pairPartition:
                let others = lab.names.filter { $0 != target }
                let other = others[fault.pick % others.count]
                done.targets.append(other)
                try await blackhole(target, lab.address(other))
                try await blackhole(other, lab.address(target))
                try? await Task.sleep(for: hold)
                try await unblackhole(target, lab.address(other))
                try await unblackhole(other, lab.address(target))
            case .consulCut:
                try await blackhole(target, ChaosLab.consul)
                try? await Task.sleep(for: hold)
                try await unblackhole(target, ChaosLab.consul)
            case .consulStop:
                try await lab.lab("stop-consul")
                try? await Task.sleep(for: hold)
                try await lab.lab("start-consul")
            case .consulSlow:
                lab.setConsulDelay(fault.delay)
                try? await Task.sleep(for: hold)
                lab.setConsulDelay(0)
            case .consulElection:
                _ = try await lab.lab("consul-fault", "election", "--for", "\(fault.duration)s")
                try? await Task.sleep(for: hold)
            case .consulHang:
                _ = try await lab.lab("consul-fault", "hang", "--for", "\(fault.duration)s")
                try? await Task.sleep(for: hold)
            case .agentRestart:
                // The lab's Consul is one server: each node's sessions carry its name.
                let answer = try await lab.lab("consul-fault", "agent-restart", "--node", ChaosLab.consulNodeName, "--name", "baton-lab-\(target)")
                done.note = "invalidated: " + answer.trimmingCharacters(in: .whitespacesAndNewlines)
            case .vrrpPartition:
                try await blackhole(target, "224.0.0.18")
                try? await Task.sleep(for: hold)
                try await unblackhole(target, "224.0.0.18")
            case .syncLinkFlap:
                guard let standby = sync else { return note(done, "no synchronous standby recorded") }
                done.targets = [standby]
                let end = ContinuousClock.now + hold
                while ContinuousClock.now < end {
                    if let receiver = await lab.walReceiver(standby) { lab.signal([receiver], SIGTERM) }
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 200...600)))
                }
            case .switchover:
                let replicas = lab.names.filter { $0 != leader }
                guard let leader, !replicas.isEmpty else { return note(done, "no leader to switch over from") }
                // In synchronous mode only the synchronous standby may take over (others are refused).
                let to = sync.flatMap { replicas.contains($0) ? $0 : nil } ?? replicas[fault.pick % replicas.count]
                done.targets = [leader, to]
                let result = try await lab.runner.run(
                    lab.baton, ["switchover", "--config", lab.configPath(to), "--to", to, "--timeout", "30"], timeout: .seconds(40))
                done.note = result.succeeded ? "switched over to \(to)" : "switchover refused or failed: " + result.output.trimmingCharacters(in: .whitespacesAndNewlines).suffix(200)
            case .configChange:
                guard let leader else { return note(done, "no leader to freeze") }
                done.targets = [leader]
                func set(_ value: String) async throws {
                    let result = try await lab.runner.run(lab.baton, ["config", "set", "--config", lab.configPath(leader), value], timeout: .seconds(20))
                    if !result.succeeded { done.note += "config set \(value) refused: " + result.output.trimmingCharacters(in: .whitespacesAndNewlines).suffix(120) + "; " }
                }
                try await set("fence_timeout=6s")
                // Every monitor reads it within a loop; the leader arms 6 s from its next beat on.
                try? await Task.sleep(for: .seconds(2))
                let frozen = await lab.monitor(leader) + (await lab.watchdog(leader))
                lab.signal(frozen, SIGSTOP)
                try await set("fence_timeout=2s")
                try? await Task.sleep(for: hold)
                lab.signal(frozen, SIGCONT)
                try await set("fence_timeout=3s")
                done.note += "fence_timeout 6s → 2s with \(leader)'s monitor frozen \((fault.duration * 10).rounded() / 10) s → 3s"
            case .laggingCrash:
                guard let leader else { return note(done, "no leader to crash") }
                let standbys = lab.names.filter { $0 != leader }
                var receivers: [Int32] = []
                for standby in standbys { if let pid = await lab.walReceiver(standby) { receivers.append(pid) } }
                done.targets = [leader] + standbys
                lab.signal(receivers, SIGSTOP)
                try? await Task.sleep(for: hold)
                lab.signal(receivers, SIGCONT)
                guard let pid = lab.postmaster(leader) else { return note(done, "no postmaster on \(leader)") }
                lab.signal([pid], SIGKILL)
                done.note = "\(receivers.count) WAL receiver(s) stopped \((fault.duration * 10).rounded() / 10) s, then \(leader)'s postmaster killed"
            case .consulRestore:
                let file = "\(lab.directory)/consul-snapshot.json"
                _ = try await lab.lab("consul-snapshot", "save", file)
                try? await Task.sleep(for: hold)
                _ = try await lab.lab("consul-snapshot", "restore", file)
                done.note = "Consul's store rolled back \((fault.duration * 10).rounded() / 10) s"
            case .overlap:
                break
            }
        } catch {
            done.note += (done.note.isEmpty ? "" : "; ") + "could not inject or heal: \(error)"
        }
        return done
    }

    func note(_ done: Done, _ text: String) -> Done {
        var d = done
        d.note = text
        return d
    }

    /// Drops a node's traffic to `destination` (the kernel here has no netfilter: a blackhole route).
    func blackhole(_ node: String, _ destination: String) async throws {
        _ = try await lab.inNode(node, ["/usr/sbin/ip", "route", "add", "blackhole", destination + "/32"])
    }

    func unblackhole(_ node: String, _ destination: String) async throws {
        _ = try await lab.inNode(node, ["/usr/sbin/ip", "route", "del", "blackhole", destination + "/32"])
    }
}

/// Whether the lab converged: one primary holding the lock and taking writes, every replica streaming
/// from it, the VIP on it, and every pgbouncer routed to it and not paused.
struct Convergence {
    let lab: ChaosLab
    let consul: ConsulClient

    /// nil when converged, else what is still off.
    func missing() async -> String? {
        guard let leader = await lab.leader(consul) else { return "nobody holds the leader lock" }
        guard await lab.scalar(leader, "SELECT pg_is_in_recovery()") == "f",
            let position = await lab.scalar(leader, "SELECT pg_current_wal_lsn()::text")
        else { return "the leader \(leader) does not take writes" }
        for node in lab.names where node != leader {
            // Streaming as PostgreSQL reports it, and caught up with what the leader had a moment ago (a
            // link that died quietly still shows `streaming` for a while).
            let receiver = await lab.scalar(
                node, "SELECT status || ' ' || coalesce(sender_host, '') || ' ' || (pg_last_wal_receive_lsn() >= '\(position)'::pg_lsn) FROM pg_stat_wal_receiver")
            guard receiver == "streaming \(lab.address(leader)) true" else { return "\(node) does not stream from \(leader) (\(receiver ?? "no answer"))" }
        }
        guard await lab.vipHolder() == leader else { return "the VIP is not on \(leader)" }
        for node in lab.names {
            guard lab.bouncerTarget(node) == leader else { return "\(node)'s pgbouncer does not route to \(leader)" }
            let report = (try? await consul.get(lab.keys.pgbouncerAgent(try NodeName(node))).value).flatMap { BouncerStatus(bytes: $0?.value) }
            guard report?.paused == false else { return "\(node)'s pgbouncer is paused or its agent silent" }
        }
        return nil
    }

    /// Seconds until converged (polled every 250 ms), or nil past `bound`.
    func await(bound: Duration) async -> (Double?, String?) {
        let start = ContinuousClock.now
        var last: String? = nil
        while ContinuousClock.now - start < bound {
            last = await missing()
            if last == nil {
                let took = ContinuousClock.now - start
                return (Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18, nil)
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        return (nil, last)
    }
}
