import BatonConsul
import ConsulAPI
import Synchronization

/// When this monitor first saw the leader key's current modify index, from the watch: a heartbeat
/// rewrites the key, and the watch's blocking read returns the moment Consul applied it, where the loop
/// sees it only at its next read of the cluster (up to `loop_wait` later). A silent leader is judged
/// from the earlier sighting, so a dead node is replaced up to a loop sooner — and as safely: whoever
/// sees a heartbeat sees it after its leader sent it, the instant the leader's lease counts from.
final class LeaderSightings: Sendable {
    private let latest = Mutex<(index: UInt64, at: ContinuousClock.Instant)?>(nil)

    /// The watch read `index` at `now` (a sighting of the same index keeps the first time).
    func saw(_ index: UInt64, at now: ContinuousClock.Instant) {
        latest.withLock { if $0?.index != index { $0 = (index, now) } }
    }

    /// When the watch first saw `index`, if it is the latest it saw.
    func firstSeen(_ index: UInt64) -> ContinuousClock.Instant? {
        latest.withLock { $0?.index == index ? $0?.at : nil }
    }
}

/// Calls `wake` each time the leader key gets a new holder or session — not on the leader's
/// heartbeat, which rewrites the key every loop — and records each heartbeat in `sightings` (the
/// monitor's). Runs until cancelled.
func watchLeaderHolder(client: ConsulClient, key: String, sightings: LeaderSightings? = nil, wake: @Sendable () -> Void) async {
    var last: [UInt8]? = nil
    for await result in ConsulWatch(wait: .seconds(30), query: { try await client.get(key, $0) }) {
        let pair = try? result.get().value
        if let pair { sightings?.saw(pair.modifyIndex, at: .now) }
        let identity = (pair?.value ?? []) + Array((pair?.session ?? "-").utf8)
        if identity != last { wake() }
        last = identity
    }
}
