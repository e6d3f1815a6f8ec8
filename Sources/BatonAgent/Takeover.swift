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

    struct Snapshot {
        var leader: NodeName?
        var registrations: [NodeName: NodeRegistration] = [:]
        var statuses: [NodeName: MemberStatus] = [:]
        var config = ClusterConfig()
    }

    func snapshot() async throws -> Snapshot {
        let keys = config.keys
        var s = Snapshot()
        for pair in try await client.list(keys.prefix, .consistent).value {
            if pair.key == keys.leader, pair.session != nil { s.leader = try? NodeName(pair.stringValue) }
            if pair.key == keys.config, let c = try? ClusterConfig(bytes: pair.value, key: pair.key) { s.config = c }
            if pair.key.hasPrefix(keys.nodesPrefix), let r = try? NodeRegistration(bytes: pair.value, key: pair.key) { s.registrations[r.name] = r }
            if pair.key.hasPrefix(keys.statusPrefix), let name = try? NodeName(String(pair.key.dropFirst(keys.statusPrefix.count))),
                let status = MemberStatus(bytes: pair.value)
            {
                s.statuses[name] = status
            }
        }
        return s
    }

    func target(_ name: NodeName, in s: Snapshot) -> TakeoverCheck.Target {
        let status = s.statuses[name]
        let healthy = status.map { $0.role == "standby" && $0.isFresh(now: Date().timeIntervalSince1970, loopWait: s.config.loopWait) } ?? false
        return TakeoverCheck.Target(name: name, registered: s.registrations[name], healthy: healthy, position: status?.position)
    }

    /// - Returns: how long the handover took, from the request to the new leader being writable.
    public func switchover(to name: NodeName, timeout: Duration) async throws -> Duration {
        let s = try await snapshot()
        let leaderPosition = s.leader.flatMap { s.statuses[$0]?.position }
        if let refusal = TakeoverCheck.switchover(
            leader: s.leader, leaderPosition: leaderPosition, target: target(name, in: s), maximumLag: s.config.maximumLagOnFailover)
        {
            throw AgentError("switchover refused: \(refusal)")
        }
        return try await request(TakeoverRequest(to: name, from: s.leader, time: rfc3339Now()), timeout: timeout)
    }

    public func failover(to name: NodeName, allowDataLoss: Bool, timeout: Duration) async throws -> Duration {
        let s = try await snapshot()
        let candidates = s.registrations.values.filter { $0.role == .standby }.map { r -> CandidateState in
            let t = target(r.name, in: s)
            return CandidateState(name: r.name, failoverPriority: max(r.priority, 1), healthy: t.healthy, walPosition: t.position ?? LSN(0), timeline: 1)
        }
        let lastPrimary = s.registrations.values.filter { $0.role == .primary }.compactMap { s.statuses[$0.name]?.position }.max()
        let choice = FailoverCandidates.choose(
            candidates, synchronousMode: s.config.synchronousMode, synchronousStandby: nil, lastPrimaryPosition: lastPrimary,
            maximumLag: s.config.maximumLagOnFailover)
        if let refusal = TakeoverCheck.failover(leader: s.leader, target: target(name, in: s), choice: choice, allowDataLoss: allowDataLoss) {
            throw AgentError("failover refused: \(refusal)")
        }
        return try await request(TakeoverRequest(to: name, from: nil, time: rfc3339Now()), timeout: timeout)
    }

    func request(_ request: TakeoverRequest, timeout: Duration) async throws -> Duration {
        let keys = config.keys
        guard try await client.put(keys.switchover, request.json.serializedBytes(), mode: .cas(0)) else {
            let pending = try await client.get(keys.switchover).value?.stringValue ?? "?"
            throw AgentError("another switchover or failover is pending (\(Quote.show(pending))); wait for it, or delete \(keys.switchover)")
        }
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            let s = try await snapshot()
            if s.leader == request.to, s.statuses[request.to]?.role == "primary" {
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
