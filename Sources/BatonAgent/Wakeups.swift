import BatonConsul
import BatonCore
import ConsulAPI
import Synchronization

/// The leader key as the monitor's watch last saw it, and when it first saw that modify index. A
/// heartbeat rewrites the key, and the watch's blocking read returns the moment Consul applied it, where
/// the loop sees it only at its next read of the cluster (up to `loop_wait` later). A silent leader is
/// judged from the earlier sighting, so a dead node is replaced up to a loop sooner — and as safely:
/// whoever sees a heartbeat sees it after its leader sent it, the instant the leader's lease counts
/// from. The leader's own beat starts from the key as seen here instead of reading it first.
public final class LeaderSightings: Sendable {
    private let state = Mutex<(pair: KVPair, at: ContinuousClock.Instant)?>(nil)

    public init() {}

    /// The watch read `pair` at `now` (a sighting of the same modify index keeps the first time).
    func saw(_ pair: KVPair, at now: ContinuousClock.Instant) {
        state.withLock { if $0?.pair.modifyIndex != pair.modifyIndex { $0 = (pair, now) } }
    }

    /// The watch saw the key deleted.
    func sawNothing() { state.withLock { $0 = nil } }

    /// When the watch first saw `index`, if it is the latest it saw.
    func firstSeen(_ index: UInt64) -> ContinuousClock.Instant? {
        state.withLock { $0?.pair.modifyIndex == index ? $0?.at : nil }
    }

    /// The key as the watch last saw it.
    var latest: KVPair? { state.withLock { $0?.pair } }
}

/// Calls `wake` each time the leader key gets a new holder or session — not on the leader's
/// heartbeat, which rewrites the key every loop — and records each heartbeat in `sightings` (the
/// monitor's). Runs until cancelled.
func watchLeaderHolder(client: ConsulClient, key: String, sightings: LeaderSightings? = nil, wake: @Sendable () -> Void) async {
    var last: [UInt8]? = nil
    for await result in ConsulWatch(wait: .seconds(30), query: { try await client.get(key, $0) }) {
        let pair = try? result.get().value
        if let pair { sightings?.saw(pair, at: .now) } else if case .success = result { sightings?.sawNothing() }
        let identity = BouncerAgentMemory.leaderIdentity(pair)
        if identity != last { wake() }
        last = identity
    }
}
