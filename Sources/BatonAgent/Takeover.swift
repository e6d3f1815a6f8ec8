import BatonConsul
import BatonCore
import ConsulAPI
import Foundation

/// `baton switchover --to` and `baton failover --to`: checks the request, writes it for the monitors,
/// and waits until the named node leads a writable primary.
public struct Takeover {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    func view() async throws -> TakeoverView {
        let keys = config.keys
        let snapshot = ClusterSnapshot(pairs: try await client.list(keys.prefix, .consistent).value, keys: keys)
        return TakeoverView(snapshot: snapshot, live: try await liveMonitors(client, cluster: config.cluster))
    }

    /// - Returns: how long the handover took, from the request to the new leader being writable.
    public func switchover(to name: NodeName, timeout: Duration) async throws -> Duration {
        let v = try await view()
        if let refusal = v.switchoverRefusal(to: name) { throw AgentError("switchover refused: \(refusal)") }
        return try await request(
            TakeoverRequest(to: name, from: v.snapshot.leader?.holder, time: rfc3339Now(), timeout: GoDuration(timeout)), timeout: timeout)
    }

    /// `baton switchover --to NAME --at TIME`: checked now as a switchover would be (so that a schedule
    /// that could not run is refused at once), then written for the leader to run when it is due.
    public func schedule(to name: NodeName, at: Int64, now: Int64) async throws -> ScheduledSwitchover {
        if let refusal = ScheduledSwitchover.refusal(at: at, now: now) { throw AgentError("scheduling refused: \(refusal)") }
        let v = try await view()
        if let refusal = v.switchoverRefusal(to: name) { throw AgentError("scheduling refused: \(refusal)") }
        guard let leader = v.snapshot.leader?.holder else { throw AgentError("scheduling refused: no node holds the leader lock") }
        let schedule = ScheduledSwitchover(to: name, from: leader, at: at, asked: rfc3339Now(), by: config.node?.value ?? "operator")
        guard try await client.put(config.keys.scheduledSwitchover, schedule.json.serializedBytes(), mode: .cas(0)) else {
            throw AgentError("a switchover is already scheduled (`baton status` shows it); `baton switchover --cancel` removes it")
        }
        return schedule
    }

    /// `baton switchover --cancel`: removes the scheduled switchover; the one it removed, or nil.
    public func cancelScheduled() async throws -> ScheduledSwitchover? {
        let key = config.keys.scheduledSwitchover
        guard let pair = try await client.get(key, .consistent).value else { return nil }
        let schedule = try ScheduledSwitchover(bytes: pair.value, key: key)
        guard try await client.delete(key, cas: pair.modifyIndex) else { throw AgentError("the schedule changed meanwhile; look at `baton status` and try again") }
        return schedule
    }

    /// `baton switchover --to NAME --check`: why a switchover to `name` would be refused now, or nil
    /// when it would be asked for; nothing is changed.
    public func checkSwitchover(to name: NodeName) async throws -> String? { try await view().switchoverRefusal(to: name) }

    /// `baton explain`: what would happen if the primary died now.
    public func explain() async throws -> FailoverExplanation {
        let v = try await view()
        return FailoverExplanation(snapshot: v.snapshot, live: v.live)
    }

    /// A manual failover when no node leads. In synchronous mode the recorded synchronous standby has
    /// every acknowledged commit and needs no `allowDataLoss`; any other node does.
    public func failover(to name: NodeName, allowDataLoss: Bool, timeout: Duration) async throws -> Duration {
        let v = try await view()
        if let refusal = TakeoverCheck.failover(leader: v.snapshot.leader?.holder, target: v.target(name), choice: v.choice, allowDataLoss: allowDataLoss) {
            throw AgentError("failover refused: \(refusal)")
        }
        return try await request(
            TakeoverRequest(to: name, from: nil, time: rfc3339Now(), timeout: GoDuration(timeout), allowDataLoss: allowDataLoss), timeout: timeout)
    }

    func request(_ request: TakeoverRequest, timeout: Duration) async throws -> Duration {
        let keys = config.keys
        guard try await client.put(keys.switchover, request.json.serializedBytes(), mode: .cas(0)) else {
            let pending = try await client.get(keys.switchover).value?.stringValue ?? "?"
            throw AgentError("another switchover or failover is pending (\(Quote.show(pending))); wait for it, or delete \(keys.switchover)")
        }
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            let s = ClusterSnapshot(pairs: try await client.list(keys.prefix, .consistent).value, keys: keys)
            if s.leader?.holder == request.to, s.reports[request.to]?.status.role == "primary" {
                _ = try? await client.delete(keys.switchover)
                if let node = config.node ?? Optional(request.to) {
                    try? await recordEvent(
                        ClusterEvent(
                            time: rfc3339Now(), node: node, kind: request.from == nil ? "failover" : "switchover",
                            detail: "\(request.from.map { "\($0) → " } ?? "")\(request.to) in \((ContinuousClock.now - start).millisecondCount) ms"),
                        keys: keys, client: client)
                }
                return ContinuousClock.now - start
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        _ = try? await client.delete(keys.switchover)
        throw AgentError("\(request.to) did not take over within \(timeout); the request was withdrawn (see `baton status` for each monitor's decision)")
    }
}
