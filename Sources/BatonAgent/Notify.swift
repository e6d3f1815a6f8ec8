import BatonConsul
import BatonCore
import ConsulAPI
import Foundation

/// keepalived's notify hook: records this node's VRRP state in `keepalived/nodes` with check-and-set,
/// ignoring a notification older than the stored one, and records an event.
public struct Notify: Sendable {
    public let config: NodeConfig
    public let client: ConsulClient

    public init(config: NodeConfig, client: ConsulClient) {
        self.config = config
        self.client = client
    }

    /// This process's place in keepalived's notification order (see ``VRRPNotification/sequence``).
    public static func ownSequence() -> UInt64 {
        let pid = getpid()
        // Field 22 of /proc/self/stat is the start time in clock ticks; the command name (field 2) may
        // contain spaces, so count from the closing parenthesis.
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
            return VRRPNotification.sequence(startTicks: UInt64(Date().timeIntervalSince1970 * 100), pid: pid)
        }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        let ticks = fields.count > 19 ? UInt64(fields[19]) ?? 0 : 0
        return VRRPNotification.sequence(startTicks: ticks, pid: pid)
    }

    /// - Returns: whether the state was recorded (`false` for a late notification).
    public func record(_ notification: VRRPNotification) async throws -> Bool {
        guard let node = config.node else { throw AgentError("the Baton config names no node-name") }
        let key = config.keys.keepalivedNodes
        let time = rfc3339Now()
        for _ in 0..<50 {
            let pair = try await client.get(key, .consistent).value
            let updated: KeepalivedNodes?
            do {
                updated = try notification.applied(to: try KeepalivedNodes(bytes: pair?.value, key: key), node: node, time: time)
            } catch { throw AgentError(error.message) }
            guard let updated else { return false }
            if try await client.put(key, updated.json.serializedBytes(), mode: .cas(pair?.modifyIndex ?? 0)) {
                try await recordEvent(
                    ClusterEvent(
                        time: time, node: node, kind: "notify",
                        detail: "VRRP \(notification.state) (\(notification.type.lowercased()) \(notification.instance), priority \(notification.priority))"),
                    keys: config.keys, client: client)
                return true
            }
            try await Task.sleep(for: .milliseconds(Int64.random(in: 5...30)))
        }
        throw AgentError("keepalived/nodes kept changing: could not record the VRRP state after 50 attempts")
    }
}
