/// The cluster as `baton switchover` and `baton failover` check a request against it: the records, and
/// whose monitors are alive (for the command: those whose Consul session exists, a fact Consul keeps,
/// not another machine's clock). The monitors check the target again before they act. The leader's
/// scheduled switchovers and the simulator's operator check by the same rules.
public struct TakeoverView: Sendable {
    public var snapshot: ClusterSnapshot
    public var live: Set<NodeName>

    public init(snapshot: ClusterSnapshot, live: Set<NodeName>) {
        self.snapshot = snapshot
        self.live = live
    }

    public var candidates: [CandidateState] { FailoverCandidates.candidates(snapshot, fresh: { live.contains($0) }) }

    /// The failover ranking, as the monitors make it.
    public var choice: FailoverChoice {
        FailoverCandidates.choose(
            candidates, synchronousMode: snapshot.config.synchronousMode, synchronous: snapshot.sync,
            lastPrimaryPosition: snapshot.lastPrimaryPosition, maximumLag: snapshot.config.maximumLagOnFailover)
    }

    public func target(_ name: NodeName) -> TakeoverCheck.Target {
        let report = snapshot.reports[name]?.status
        return TakeoverCheck.Target(
            name: name, registered: snapshot.registrations[name], healthy: report?.role == "standby" && live.contains(name), position: report?.position)
    }

    /// Why a planned switchover to `name` is refused now (``TakeoverCheck/switchover``), or nil.
    public func switchoverRefusal(to name: NodeName) -> String? {
        let leader = snapshot.leader?.holder
        return TakeoverCheck.switchover(
            leader: leader, leaderPosition: leader.flatMap { snapshot.reports[$0]?.status.position }, target: target(name),
            maximumLag: snapshot.config.maximumLagOnFailover, synchronousMode: snapshot.config.synchronousMode, choice: choice)
    }
}
