import BatonSettings
import BatonConsul
import BatonCore
import Foundation

/// Why a runtime command could not run; says what to do.
public struct AgentError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What the runtime commands (notify, status, config) need from a node's Baton config file, which
/// `baton bootstrap` writes in the same format as its own options.
public struct NodeConfig: Sendable {
    public var cluster: ClusterName
    public var node: NodeName?
    public var consul: String

    public var keys: ClusterKeys { ClusterKeys(cluster: cluster) }

    public init(cluster: ClusterName, node: NodeName?, consul: String) {
        self.cluster = cluster
        self.node = node
        self.consul = consul
    }

    /// Reads `path`, validating the few settings used here. A missing file with explicit values is fine.
    public static func load(path: String?, cluster: String?, consul: String?) throws -> NodeConfig {
        var values: [String: RawValue] = [:]
        if let path {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw AgentError("cannot read the Baton config \(path); `baton bootstrap` writes it (--baton-config)")
            }
            do { values = try BootstrapOption.load(yaml: text, source: path) } catch { throw AgentError(error.description) }
        }
        func string(_ key: String) -> String? { if case .string(let s)? = values[key] { return s } else { return nil } }
        do {
            let clusterName = try ClusterName(cluster ?? string("cluster") ?? "main")
            let node = try string("node-name").map { (n) throws(ValidationProblem) -> NodeName in try NodeName(n, field: "node-name") }
            return NodeConfig(cluster: clusterName, node: node, consul: consul ?? string("consul") ?? "127.0.0.1:8500")
        } catch {
            throw AgentError(error.message)
        }
    }

    public func client() throws -> ConsulClient {
        do { return ConsulClient(try ConsulConfiguration.resolve(address: consul)) } catch { throw AgentError(error.message) }
    }
}

/// The current time in RFC 3339 with milliseconds, UTC.
public func rfc3339Now() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return TimeText.rfc3339(seconds: Int64(now.tv_sec), nanoseconds: Int64(now.tv_nsec))
}

/// Appends an event to the cluster's bounded history and prunes the oldest beyond `keep`.
public func recordEvent(_ event: ClusterEvent, keys: ClusterKeys, client: ConsulClient, keep: Int = 200) async throws {
    let nanoseconds = UInt64(Date().timeIntervalSince1970 * 1e9)
    try await client.put(ClusterEvent.key(prefix: keys.eventsPrefix, nanoseconds: nanoseconds, node: event.node), event.json.serializedBytes())
    let existing = try await client.keys(keys.eventsPrefix).value
    for key in ClusterEvent.keysToPrune(existing, keep: keep) { try await client.delete(key) }
}
