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
        let snapshot = ClusterSnapshot(pairs: try await client.list(keys.prefix, .consistent).value, keys: keys)
        return StatusView(snapshot: snapshot, cluster: config.cluster, events: events)
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
