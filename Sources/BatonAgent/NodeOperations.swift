import BatonConsul
import BatonCore
import ConsulAPI
import Foundation

/// The nodes whose monitor runs: those whose Consul session exists (a fact Consul keeps, not another
/// machine's clock).
func liveMonitors(_ client: ConsulClient, cluster: ClusterName) async throws -> Set<NodeName> {
    let prefix = "baton-\(cluster)-"
    // ignored: a session named otherwise is not a monitor's
    return Set(try await client.listSessions().value.compactMap { session -> NodeName? in
        session.name.hasPrefix(prefix) ? try? NodeName(String(session.name.dropFirst(prefix.count))) : nil
    })
}

/// `baton restart`, `baton reload`, `baton reinit`: asks each node's monitor, through Consul, to act
/// on its PostgreSQL, one node at a time, and reports progress and each outcome.
public struct NodeCommander {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    /// The nodes `--all` means, replicas first and the leader last (a rolling restart keeps the
    /// primary's restart for when the others are back).
    public func allNodes() async throws -> [NodeName] {
        let snapshot = ClusterSnapshot(pairs: try await client.list(config.keys.prefix, .consistent).value, keys: config.keys)
        let leader = snapshot.leader?.holder
        return snapshot.registrations.keys.sorted().filter { $0 != leader } + (leader.map { [$0] } ?? [])
    }

    /// Runs `kind` on each of `nodes` in turn; stops at the first failure.
    /// - Returns: each node's finished command.
    public func run(
        _ kind: NodeCommand.Kind, on nodes: [NodeName], onlyPending: Bool = false, timeout: Duration, progress: (String) -> Void
    ) async throws -> [(NodeName, NodeCommand)] {
        guard !nodes.isEmpty else { throw AgentError("no node given: name one or more, or use --all") }
        let keys = config.keys
        let snapshot = ClusterSnapshot(pairs: try await client.list(keys.prefix, .consistent).value, keys: keys)
        let live = try await liveMonitors(client, cluster: config.cluster)
        for node in nodes {
            guard snapshot.registrations[node] != nil else {
                throw AgentError("\(node) is not registered in cluster \(config.cluster) (registered: \(snapshot.registrations.keys.sorted().map(\.value).joined(separator: ", ")))")
            }
            guard live.contains(node) else { throw AgentError("\(node)'s monitor is not running: nothing would carry out the \(kind.rawValue); start it first") }
            if kind == .reinit, snapshot.leader?.holder == node {
                throw AgentError("\(node) holds the leader lock: a primary is never re-cloned (switch over first)")
            }
        }
        var done: [(NodeName, NodeCommand)] = []
        for node in nodes {
            let outcome = try await runOne(kind, on: node, onlyPending: onlyPending, timeout: timeout, progress: progress)
            done.append((node, outcome))
            if outcome.state == .failed { throw AgentError("\(kind.rawValue) failed on \(node): \(outcome.detail)") }
        }
        return done
    }

    func runOne(_ kind: NodeCommand.Kind, on node: NodeName, onlyPending: Bool, timeout: Duration, progress: (String) -> Void) async throws -> NodeCommand {
        let key = config.keys.command(node)
        let command = NodeCommand(
            id: UUID().uuidString.lowercased(), kind: kind, onlyPending: onlyPending, by: config.node?.value ?? "operator", time: rfc3339Now())
        let existing = try await client.get(key, .consistent).value
        // ignored: a malformed value is no pending command; it is overwritten (check-and-set)
        if let existing, let pending = try? NodeCommand(bytes: existing.value, key: key), !pending.state.isFinished {
            throw AgentError(
                "a \(pending.kind.rawValue) asked by \(pending.by) at \(pending.time) is \(pending.state.rawValue) on \(node); wait for it, or delete \(key) if its asker is gone")
        }
        guard try await client.put(key, command.json.serializedBytes(), mode: .cas(existing?.modifyIndex ?? 0)) else {
            throw AgentError("another command was given to \(node) at the same moment; retry")
        }
        progress("\(node): \(kind.rawValue) asked")
        let start = ContinuousClock.now
        var index: UInt64 = 0
        var said = NodeCommand.State.requested
        while ContinuousClock.now - start < timeout {
            let result = try await client.get(key, QueryOptions(index: index, wait: .milliseconds(500)))
            index = result.index
            // ignored: a value that is not our command means ours was withdrawn or replaced
            guard let pair = result.value, let seen = try? NodeCommand(bytes: pair.value, key: key), seen.id == command.id else {
                throw AgentError("the \(kind.rawValue) on \(node) was withdrawn or replaced by someone else")
            }
            if seen.state != said {
                said = seen.state
                if !seen.state.isFinished { progress("\(node): \(seen.detail)") }
            }
            if seen.state.isFinished {
                _ = try? await client.delete(key, cas: pair.modifyIndex)  // ignored: the next command overwrites a finished one
                return seen
            }
        }
        // ignored: a failed withdrawal is reported as a command still running
        if said == .requested, let pair = try await client.get(key, .consistent).value, (try? await client.delete(key, cas: pair.modifyIndex)) == true {
            throw AgentError("\(node)'s monitor did not take the \(kind.rawValue) up within \(timeout) (is a failover under way?); it was withdrawn")
        }
        throw AgentError("the \(kind.rawValue) on \(node) still runs after \(timeout); `baton events --node \(node)` shows its outcome")
    }
}

/// `baton remove NODE`: takes a node that is gone for good out of the cluster.
public struct NodeRemoval {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    /// Removes the node's registration, status, tags, commands, pgbouncer agent report, keepalived
    /// priority (its unicast peer entry goes with the registration) and Consul service; the leader
    /// then drops its replication slot, which is waited for (at most `timeout`).
    /// - Returns: what was done, line by line.
    public func remove(_ node: NodeName, force: Bool, timeout: Duration) async throws -> [String] {
        let keys = config.keys
        var done: [String] = []
        // One transaction: the node's keys go, its keepalived priority is freed, and only if the leader
        // key and the priorities are as just read — a node that took the lock meanwhile is not removed.
        for attempt in 0..<20 {
            let pairs = try await client.list(keys.prefix, .consistent).value
            let snapshot = ClusterSnapshot(pairs: pairs, keys: keys)
            let live = try await liveMonitors(client, cluster: config.cluster)
            if snapshot.leader?.holder == node { throw AgentError("\(node) holds the leader lock: switch over to another node first") }
            guard snapshot.registrations[node] != nil || snapshot.reports[node] != nil || snapshot.keepalived.node(node) != nil else {
                if attempt > 0 { throw AgentError("\(node) was removed meanwhile (by another `baton remove`?)") }
                throw AgentError("\(node) is not part of cluster \(config.cluster)")
            }
            if live.contains(node), !force, attempt == 0 {
                throw AgentError("\(node)'s monitor is running: stop it (and PostgreSQL) on that node first, or give --force to remove it anyway")
            }
            let present = Set(pairs.map(\.key))
            let owned = [keys.node(node), keys.status(node), keys.tags(node), keys.command(node), keys.pgbouncerAgent(node)].filter(present.contains)
            var operations = owned.map { KVOperation(.delete, $0) }
            operations.append(
                snapshot.leaderKeyIndex == 0 ? KVOperation(.checkNotExists, keys.leader) : KVOperation(.checkIndex, keys.leader, index: snapshot.leaderKeyIndex))
            var freesPriority = false
            if let pair = pairs.first(where: { $0.key == keys.keepalivedNodes }), snapshot.keepalived.node(node) != nil {
                let freed = KeepalivedNodes(nodes: snapshot.keepalived.nodes.filter { $0.name != node })
                operations.append(KVOperation(.cas, keys.keepalivedNodes, value: freed.json.serializedBytes(), index: pair.modifyIndex))
                freesPriority = true
            }
            guard case .committed = try await client.transaction(operations) else { continue }
            if live.contains(node) { done.append("warning: \(node)'s monitor is running; stop it, or it may register the node again") }
            done += owned.map { "deleted \($0)" }
            if freesPriority { done.append("freed its keepalived priority in \(keys.keepalivedNodes)") }
            break
        }
        guard !done.isEmpty else { throw AgentError("the cluster kept changing while \(node) was being removed; try again") }
        // The service of a dead node's own Consul agent goes with that agent; this agent's copy (a shared
        // or embedded server) is removed here.
        do {
            try await client.deregisterService("baton-\(config.cluster)-\(node)")
            done.append("deregistered service baton-\(config.cluster)-\(node)")
        } catch {
            done.append("service baton-\(config.cluster)-\(node) not deregistered here (\(error)); it goes with its node's Consul agent")
        }
        if let actor = config.node {
            try await recordEvent(ClusterEvent(time: rfc3339Now(), node: actor, kind: "remove", detail: "removed \(node) from the cluster"), keys: keys, client: client)
        }
        done.append(try await awaitSlotDropped(node, timeout: timeout))
        return done
    }

    func awaitSlotDropped(_ node: NodeName, timeout: Duration) async throws -> String {
        let keys = config.keys
        let start = ContinuousClock.now
        while true {
            let snapshot = ClusterSnapshot(pairs: try await client.list(keys.prefix, .consistent).value, keys: keys)
            guard let leader = snapshot.leader?.holder, let report = snapshot.reports[leader]?.status, report.role == "primary" else {
                return "no primary leads now: its replication slot \(node.slotName) is dropped by the next leader"
            }
            guard let slot = report.slots.first(where: { $0.name == node.slotName }) else {
                return "the leader \(leader) has no replication slot \(node.slotName) (dropped)"
            }
            if ContinuousClock.now - start >= timeout {
                return "the leader \(leader) still keeps replication slot \(node.slotName)" + (slot.active ? " (something streams from it)" : "")
                    + "; it drops it once inactive"
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// `baton node set NODE priority=N nofailover=… nosync=…`: a node's runtime tags, check-and-set.
public struct NodeTagging {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    public func set(_ node: NodeName, _ assignments: [String]) async throws -> NodeTags {
        let keys = config.keys
        guard try await client.get(keys.node(node), .consistent).value != nil else {
            throw AgentError("\(node) is not registered in cluster \(config.cluster)")
        }
        for _ in 0..<20 {
            let pair = try await client.get(keys.tags(node), .consistent).value
            let current: NodeTags
            do { current = try pair.map { (p) throws(ValidationProblem) -> NodeTags in try NodeTags(bytes: p.value, key: p.key) } ?? NodeTags() } catch {
                throw AgentError(error.message)
            }
            // A bad assignment is the operator's input: reported as such, nothing written.
            let updated = try current.setting(assignments)
            if try await client.put(keys.tags(node), updated.json.serializedBytes(), mode: .cas(pair?.modifyIndex ?? 0)) {
                if let actor = config.node {
                    try await recordEvent(
                        ClusterEvent(time: rfc3339Now(), node: actor, kind: "tags", detail: "\(node): \(assignments.joined(separator: " "))"), keys: keys,
                        client: client)
                }
                return updated
            }
        }
        throw AgentError("\(keys.tags(node)) kept changing; retry")
    }
}

/// `baton events`: the cluster's event history, filtered, or followed as it grows.
public struct EventHistory {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    /// Events (with their keys) after `sinceNanoseconds` (since the epoch), of `node` and `kind` when given.
    public func read(sinceNanoseconds: UInt64, node: NodeName?, kind: String?, index: UInt64 = 0, wait: Duration? = nil) async throws
        -> (events: [(key: String, event: ClusterEvent)], index: UInt64)
    {
        let keys = config.keys
        let result = try await client.list(keys.eventsPrefix, wait.map { QueryOptions(index: index, wait: $0) } ?? .consistent)
        // Events an earlier Baton wrote under the cluster's prefix, until the leader moved them.
        let legacy = try await client.list(keys.legacyEventsPrefix, .consistent).value
        var events: [(key: String, event: ClusterEvent)] = []
        for (prefix, pairs) in [(keys.eventsPrefix, result.value), (keys.legacyEventsPrefix, legacy)] {
            for pair in pairs {
                // ignored: a malformed event is skipped (baton status lists it as a problem)
                guard let stamp = UInt64(pair.key.dropFirst(prefix.count).prefix(20)), stamp >= sinceNanoseconds,
                    let event = try? ClusterEvent(pair: pair)
                else { continue }
                if let node, event.node != node { continue }
                if let kind, event.kind != kind { continue }
                // Keyed by what follows the prefix: an event being moved is listed once.
                events.append((String(pair.key.dropFirst(prefix.count)), event))
            }
        }
        var seen: Set<String> = []
        return (events.sorted { $0.key < $1.key }.filter { seen.insert($0.key).inserted }, result.index)
    }
}
