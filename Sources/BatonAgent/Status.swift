import BatonConsul
import BatonCore
import ConsulAPI
import Foundation

/// Gathers ``StatusView`` from Consul. A malformed value is reported as a problem, never trusted.
public struct StatusReader {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    public func read(events: Int = 10) async throws -> StatusView {
        let keys = config.keys
        var problems: [String] = []
        let all = try await client.list(keys.prefix, .consistent).value
        let byKey = Dictionary(all.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var claim: ClusterClaim? = nil
        if let pair = byKey[keys.initialize] {
            do { claim = try ClusterClaim(bytes: pair.value, key: pair.key) } catch { problems.append(error.message) }
        }
        var leader: NodeName? = nil
        if let pair = byKey[keys.leader], pair.session != nil {
            do { leader = try NodeName(pair.stringValue, field: "the leader key") } catch { problems.append(error.message) }
        }
        var clusterConfig = ClusterConfig()
        if let pair = byKey[keys.config] {
            do { clusterConfig = try ClusterConfig(bytes: pair.value, key: pair.key) } catch { problems.append(error.message) }
        }
        var keepalived = KeepalivedNodes()
        if let pair = byKey[keys.keepalivedNodes] {
            do { keepalived = try KeepalivedNodes(bytes: pair.value, key: pair.key) } catch { problems.append(error.message) }
        }
        var nodes: [StatusView.Node] = []
        for pair in all where pair.key.hasPrefix(keys.nodesPrefix) {
            do {
                let registration = try NodeRegistration(bytes: pair.value, key: pair.key)
                nodes.append(
                    StatusView.Node(
                        registration: registration, keepalived: keepalived.node(registration.name), holdsLeaderLock: leader == registration.name,
                        pgbouncer: byKey[keys.pgbouncerAgent(registration.name)].flatMap { BouncerStatus(bytes: $0.value) },
                        report: byKey[keys.status(registration.name)].flatMap { MemberStatus(bytes: $0.value) }))
            } catch {
                problems.append(error.message)
            }
        }
        var history: [ClusterEvent] = []
        for pair in all.filter({ $0.key.hasPrefix(keys.eventsPrefix) }).sorted(by: { $0.key < $1.key }).suffix(events) {
            guard let json = try? JSONValue.parse(pair.value ?? []), let node = try? NodeName(json.member("node")?.stringValue ?? "") else {
                problems.append("Consul key \(pair.key) is not an event")
                continue
            }
            history.append(
                ClusterEvent(
                    time: json.member("time")?.stringValue ?? "", node: node, kind: json.member("kind")?.stringValue ?? "",
                    detail: json.member("detail")?.stringValue ?? ""))
        }
        var decisions: [NodeName: String] = [:]
        for pair in all where pair.key.hasPrefix(keys.statusPrefix) {
            if let name = try? NodeName(String(pair.key.dropFirst(keys.statusPrefix.count))), let decision = MemberStatus(bytes: pair.value)?.decision {
                decisions[name] = Quote.show(decision)
            }
        }
        var paused: String? = nil
        if let pair = byKey[keys.pause] {
            let json = try? JSONValue.parse(pair.value ?? [])
            paused = Quote.show("since \(json?.member("time")?.stringValue ?? "?"): \(json?.member("reason")?.stringValue ?? "no reason given")")
        }
        var view = StatusView(
            cluster: config.cluster, claim: claim, leader: leader, config: clusterConfig, nodes: nodes, problems: problems, events: history,
            paused: paused, decisions: decisions)
        view.synchronousStandby = SynchronousReplication.recordedStandby(byKey[keys.sync]?.value)
        return view
    }
}

/// `baton config show|set`: the cluster settings in Consul, changed with check-and-set.
public struct ClusterSettings {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    public func show() async throws -> ClusterConfig {
        let key = config.keys.config
        do { return try ClusterConfig(bytes: try await client.get(key, .consistent).value?.value, key: key) } catch let problem as ValidationProblem {
            throw AgentError(problem.message)
        }
    }

    /// Applies `NAME=VALUE` pairs together; any invalid one refuses them all and writes nothing.
    public func set(_ assignments: [String]) async throws -> ClusterConfig {
        let key = config.keys.config
        for _ in 0..<20 {
            let pair = try await client.get(key, .consistent).value
            var updated: ClusterConfig
            do throws(ValidationProblem) {
                updated = try ClusterConfig(bytes: pair?.value, key: key)
                for assignment in assignments {
                    guard let equals = assignment.firstIndex(of: "=") else {
                        throw ValidationProblem("\(Quote.show(assignment)) is not NAME=VALUE")
                    }
                    try updated.set(String(assignment[..<equals]), String(assignment[assignment.index(after: equals)...]))
                }
                try updated.validate()
            } catch { throw AgentError(error.message) }
            if try await client.put(key, updated.json.serializedBytes(), mode: .cas(pair?.modifyIndex ?? 0)) {
                if let node = config.node {
                    try await recordEvent(
                        ClusterEvent(time: rfc3339Now(), node: node, kind: "config", detail: "set \(assignments.joined(separator: " "))"),
                        keys: config.keys, client: client)
                }
                return updated
            }
        }
        throw AgentError("the cluster config kept changing; retry")
    }
}

/// `baton pause` / `baton resume`: stop and restart automatic failover cluster-wide.
public struct Maintenance {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    public func pause(reason: String) async throws {
        let time = rfc3339Now()
        let value = JSONValue.object([("time", .string(time)), ("reason", .string(reason)), ("by", .string(config.node?.value ?? ""))])
        try await client.put(config.keys.pause, value.serializedBytes())
        if let node = config.node {
            try await recordEvent(ClusterEvent(time: time, node: node, kind: "pause", detail: "automatic failover paused: \(reason)"), keys: config.keys, client: client)
        }
    }

    public func resume() async throws {
        try await client.delete(config.keys.pause)
        if let node = config.node {
            try await recordEvent(ClusterEvent(time: rfc3339Now(), node: node, kind: "resume", detail: "automatic failover resumed"), keys: config.keys, client: client)
        }
    }
}
