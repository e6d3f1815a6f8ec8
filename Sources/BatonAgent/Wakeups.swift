import BatonConsul
import ConsulAPI

/// Calls `wake` each time the leader key gets a new holder or session — not on the leader's
/// heartbeat, which rewrites the key every loop. Runs until cancelled.
func watchLeaderHolder(client: ConsulClient, key: String, wake: @Sendable () -> Void) async {
    var last: [UInt8]? = nil
    for await result in ConsulWatch(wait: .seconds(30), query: { try await client.get(key, $0) }) {
        let pair = try? result.get().value
        let identity = (pair?.value ?? []) + Array((pair?.session ?? "-").utf8)
        if identity != last { wake() }
        last = identity
    }
}
