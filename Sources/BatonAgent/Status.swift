import BatonConsul
import BatonCore
import BatonPostgres
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
        var snapshot = ClusterSnapshot(pairs: try await client.list(keys.prefix, .consistent).value, keys: keys)
        snapshot.addEvents(try await client.list(keys.eventsPrefix, .consistent).value)
        var view = StatusView(snapshot: snapshot, cluster: config.cluster, events: events)
        // ignored: without the session list the status is still shown, only without who runs a monitor
        view.liveMonitors = try? await liveMonitors(client, cluster: config.cluster)
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

    /// The cluster-wide PostgreSQL parameters.
    public func parameters() async throws -> PostgresParameters {
        let key = config.keys.postgresql
        do { return try PostgresParameters(bytes: try await client.get(key, .consistent).value?.value, key: key) } catch let problem as ValidationProblem {
            throw AgentError(problem.message)
        }
    }

    /// Applies `NAME=VALUE` pairs together; any invalid one refuses them all and writes nothing.
    /// `postgresql.NAME=VALUE` (and `unset` names `postgresql.NAME`) are cluster-wide PostgreSQL
    /// parameters, checked against `definitions` (PostgreSQL's pg_settings) before they are stored.
    /// - Returns: the cluster settings and the PostgreSQL parameters as stored, and the parameters set
    ///   that take effect only at a restart.
    public func set(
        _ assignments: [String], unset: [String] = [], definitions: (String) async throws -> PostgresSettingDefinition? = { _ in nil }
    ) async throws -> (config: ClusterConfig, parameters: PostgresParameters, needRestart: [String]) {
        var settings: [(String, String)] = []
        var changes: [(String, String?)] = []
        do throws(ValidationProblem) {
            for assignment in assignments {
                guard let equals = assignment.firstIndex(of: "=") else { throw ValidationProblem("\(Quote.show(assignment)) is not NAME=VALUE") }
                let name = String(assignment[..<equals])
                let value = String(assignment[assignment.index(after: equals)...])
                if name.hasPrefix("postgresql.") { changes.append((String(name.dropFirst(11)), value)) } else { settings.append((name, value)) }
            }
            for name in unset {
                guard name.hasPrefix("postgresql.") else {
                    throw ValidationProblem("--unset takes postgresql.NAME; cluster settings go back to their default with NAME=DEFAULT")
                }
                changes.append((String(name.dropFirst(11)), nil))
            }
        } catch { throw AgentError(error.message) }
        // PostgreSQL's own rules first, before anything is written.
        var needRestart: [String] = []
        for (name, value) in changes {
            do throws(ValidationProblem) {
                try PostgresParameters.checkName(name)
                if let value { try PostgresParameters.checkValue(value, name: name) }
            } catch { throw AgentError(error.message) }
            guard let value else { continue }
            guard let definition = try await definitions(name) else {
                // An extension's parameters (prefix.name) need not be known before the extension loads.
                if name.contains(".") { continue }
                throw AgentError("unrecognized configuration parameter \"\(name)\" (PostgreSQL's pg_settings does not know it); nothing was written")
            }
            do { try definition.check(value) } catch { throw AgentError("\(error.message); nothing was written") }
            if definition.needsRestart { needRestart.append(name) }
        }
        var storedConfig = try await show()
        if !settings.isEmpty { storedConfig = try await update(settings) }
        var storedParameters = try await parameters()
        if !changes.isEmpty { storedParameters = try await update(changes) }
        if let node = config.node {
            let said = assignments + unset.map { "--unset \($0)" }
            try await recordEvent(ClusterEvent(time: rfc3339Now(), node: node, kind: "config", detail: "set \(said.joined(separator: " "))"), keys: config.keys, client: client)
        }
        return (storedConfig, storedParameters, needRestart)
    }

    func update(_ assignments: [(String, String)]) async throws -> ClusterConfig {
        let key = config.keys.config
        return try await modify(key, what: "the cluster config") { bytes throws(ValidationProblem) in
            var updated = try ClusterConfig(bytes: bytes, key: key)
            for (name, value) in assignments { try updated.set(name, value) }
            try updated.validate()
            return (updated, updated.json)
        }
    }

    func update(_ changes: [(String, String?)]) async throws -> PostgresParameters {
        let key = config.keys.postgresql
        return try await modify(key, what: "the cluster's PostgreSQL parameters") { bytes throws(ValidationProblem) in
            var updated = try PostgresParameters(bytes: bytes, key: key)
            for (name, value) in changes { updated = try updated.setting(name, to: value) }
            return (updated, updated.json)
        }
    }

    /// Reads `key`, applies `change` to what it holds and writes the result back with check-and-set,
    /// again while others write the key meanwhile; a value `change` refuses changes nothing.
    private func modify<Value>(
        _ key: String, what: String, _ change: ([UInt8]?) throws(ValidationProblem) -> (Value, JSONValue)
    ) async throws -> Value {
        for _ in 0..<20 {
            let pair = try await client.get(key, .consistent).value
            let (value, json): (Value, JSONValue)
            do throws(ValidationProblem) { (value, json) = try change(pair?.value) } catch { throw AgentError(error.message) }
            if try await client.put(key, json.serializedBytes(), mode: .cas(pair?.modifyIndex ?? 0)) { return value }
        }
        throw AgentError("\(what) kept changing; retry")
    }
}

/// PostgreSQL's own description of its parameters (pg_settings), read from a running server.
public struct PostgresSettingsCatalog {
    let conninfo: String

    public init(conninfo: String) { self.conninfo = conninfo }

    public func definition(_ name: String) async throws -> PostgresSettingDefinition? {
        let connection: PostgresConnection
        do { connection = try await PostgresConnection.connect(conninfo) } catch {
            throw AgentError("postgresql.* values are checked against PostgreSQL's pg_settings, and this node's PostgreSQL does not answer (\(error)); run it on a node whose PostgreSQL runs")
        }
        defer { connection.close() }
        let rows = try await connection.query(
            "SELECT name, vartype, unit, min_val, max_val, enumvals::text, context FROM pg_settings WHERE name = $1", [name], timeout: .seconds(5))
        return rows.first.flatMap(PostgresSettingDefinition.init(row:))
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
