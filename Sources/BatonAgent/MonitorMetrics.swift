import BatonCore
import ConsulAPI
import CoreMetrics

/// The monitor's metrics, through swift-metrics (`baton monitor` bootstraps the Prometheus backend and
/// serves it at `/metrics`). Names follow Prometheus' conventions: the `baton_` prefix, units in names,
/// `_total` for counters.
struct MonitorMetrics {
    static let roles = ["primary", "standby", "unresponsive", "down"]

    let lockHeld = Gauge(label: "baton_leader_lock_held")
    let timeline = Gauge(label: "baton_timeline")
    let walPosition = Gauge(label: "baton_wal_position_bytes")
    let heartbeatAge = Gauge(label: "baton_heartbeat_age_seconds")
    let loopDuration = Gauge(label: "baton_loop_duration_seconds")
    let consulReachable = Gauge(label: "baton_consul_reachable")
    let failsafe = Gauge(label: "baton_failsafe_active")
    let watchdog = Gauge(label: "baton_watchdog_answers")
    /// Settings of the local PostgreSQL waiting for a restart.
    let pendingRestart = Gauge(label: "baton_pending_restart")
    /// On the leader: how many things have disagreed about who serves past the patience (0 elsewhere).
    let routingDisagreement = Gauge(label: "baton_routing_disagreement")

    /// 1 for the local PostgreSQL's role, 0 for the others.
    func role(_ local: LocalPostgres) {
        let current = MemberStatus(local: local, decision: "", time: 0).role
        for role in Self.roles { Gauge(label: "baton_postgres_role", dimensions: [("role", role)]).record(role == current ? 1 : 0) }
    }

    func decided(_ action: MonitorAction) {
        Counter(label: "baton_decisions_total", dimensions: [("kind", action.kind)]).increment()
    }

    /// An action that changed who leads or whether PostgreSQL runs: promotions, takeovers, switchovers
    /// (the stepping-down side), releases, fences.
    func acted(_ action: MonitorAction) {
        let name: String
        switch action {
        case .promote, .acquireLeader: name = "baton_lock_acquisitions_total"
        case .takeOver: name = "baton_takeovers_total"
        case .stepDown: name = "baton_switchovers_total"
        case .releaseLeader: name = "baton_releases_total"
        case .fence: name = "baton_fences_total"
        default: return
        }
        Counter(label: name).increment()
    }

    func promoted() { Counter(label: "baton_promotions_total").increment() }

    /// On the primary: each standby's lag as `pg_stat_replication` shows it.
    func replication(_ lags: [(standby: String, bytes: UInt64, seconds: Double?)]) {
        for lag in lags {
            Gauge(label: "baton_replication_lag_bytes", dimensions: [("standby", lag.standby)]).record(Double(lag.bytes))
            Gauge(label: "baton_replication_lag_seconds", dimensions: [("standby", lag.standby)]).record(lag.seconds ?? 0)
        }
    }

    /// Every reason `baton_failover_eligible` may carry: eligible, the leader itself, or why not.
    static let eligibilityReasons = ["eligible", "leader"] + Ineligibility.keys

    /// What this monitor would decide if the lock were lost now (issue 25): for each registered node,
    /// `baton_failover_eligible{node,reason}` is 1 for its reason and 0 for the others (so that a reason
    /// that no longer holds never lingers), its rank among the eligible (0: not eligible), its lag
    /// behind the primary's last known position; the time since the leader's last heartbeat as this
    /// monitor saw it; whether automatic failover is paused.
    func decision(_ o: MonitorObservation, leader: NodeName?) {
        let choice = FailoverCandidates.choose(
            o.candidates, synchronousMode: o.config.synchronousMode, synchronous: o.synchronous, lastPrimaryPosition: o.lastPrimaryPosition,
            maximumLag: o.config.maximumLagOnFailover)
        for candidate in o.candidates {
            let node = candidate.name.value
            let reason = candidate.name == leader ? "leader" : choice.ineligible[candidate.name]?.key ?? "eligible"
            for r in Self.eligibilityReasons {
                Gauge(label: "baton_failover_eligible", dimensions: [("node", node), ("reason", r)]).record(r == reason ? 1 : 0)
            }
            Gauge(label: "baton_failover_rank", dimensions: [("node", node)]).record((choice.ranked.firstIndex(of: candidate.name) ?? -1) + 1)
            if let primary = o.lastPrimaryPosition {
                let lag = primary > candidate.walPosition ? primary.value - candidate.walPosition.value : 0
                Gauge(label: "baton_candidate_lag_bytes", dimensions: [("node", node)]).record(Double(lag))
            }
        }
        if let primary = o.lastPrimaryPosition { Gauge(label: "baton_primary_position_bytes").record(Double(primary.value)) }
        Gauge(label: "baton_leader_silence_seconds").record(Double(o.leaderSilentFor.nanoseconds) / 1e9)
        Gauge(label: "baton_failover_paused").record(o.paused ? 1 : 0)
    }

    /// On the leader: each replication slot's retained WAL and whether it lost WAL its standby needed.
    func slots(_ slots: [SlotReport]) {
        for slot in slots {
            Gauge(label: "baton_slot_retained_bytes", dimensions: [("slot", slot.name)]).record(Double(slot.retainedBytes))
            Gauge(label: "baton_slot_lost", dimensions: [("slot", slot.name)]).record(slot.lost ? 1 : 0)
        }
    }

    /// On the leader, with backups: the archive's backlog and failures, and when the newest backup ended.
    func archive(_ archive: ArchiveHealth) {
        Gauge(label: "baton_archive_waiting_segments").record(archive.waiting)
        Gauge(label: "baton_archive_lag_seconds").record(archive.lagSeconds)
        Gauge(label: "baton_archive_failures_total").record(Double(archive.failures))
        Gauge(label: "baton_archive_failing").record(archive.failingSince == nil ? 0 : 1)
        switch archive.backups {
        case .unknown: break
        case .none: Gauge(label: "baton_backup_last_timestamp_seconds").record(0)
        case .newest(let ended): Gauge(label: "baton_backup_last_timestamp_seconds").record(ended)
        }
    }

    /// Each node's pgbouncer as its agent last reported it.
    func bouncers(_ reports: [NodeName: BouncerStatus]) {
        for (node, report) in reports {
            Gauge(label: "baton_pgbouncer_paused", dimensions: [("node", node.value)]).record(report.paused ? 1 : 0)
            Gauge(label: "baton_pgbouncer_target_info", dimensions: [("node", node.value), ("target", report.target ?? "")]).record(1)
            Gauge(label: "baton_pgbouncer_problem", dimensions: [("node", node.value)]).record(report.problem == nil ? 0 : 1)
        }
    }
}
