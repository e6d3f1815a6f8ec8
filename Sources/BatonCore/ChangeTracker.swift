/// How long values read from Consul have gone without changing, on this process's own monotonic clock:
/// the way to judge whether another node's monitor (or agent) is alive without comparing the wall
/// clocks of two machines (invariant 11). Every write bumps a key's modify index, and each node rewrites
/// its report at least every other loop, so an index that stopped moving means a reporter that stopped.
public struct ChangeTracker<Key: Hashable & Sendable>: Sendable {
    private struct Sighting: Sendable {
        var index: UInt64
        /// When the current index was first seen.
        var since: ContinuousClock.Instant
        /// Whether a change was ever seen (a first sighting says nothing about the reporter's age).
        var changed: Bool
    }

    private var sightings: [Key: Sighting] = [:]

    public init() {}

    /// Records that `key` has modify index `index` at `now`.
    public mutating func observe(_ key: Key, index: UInt64, at now: ContinuousClock.Instant) {
        guard let last = sightings[key] else {
            sightings[key] = Sighting(index: index, since: now, changed: false)
            return
        }
        if last.index != index { sightings[key] = Sighting(index: index, since: now, changed: true) }
    }

    /// Forgets every key but `present` (deleted keys, departed nodes).
    public mutating func keep(only present: Set<Key>) {
        sightings = sightings.filter { present.contains($0.key) }
    }

    /// How long ago `key` last changed; `nil` while it has not been seen changing (just started watching,
    /// or the key never changes).
    public func sinceChange(_ key: Key, at now: ContinuousClock.Instant) -> Duration? {
        guard let sighting = sightings[key], sighting.changed else { return nil }
        return now - sighting.since
    }

    /// How long `key` has held its current index, counted from the first sighting when no change was
    /// seen: the conservative age of something that should change (a heartbeat).
    public func quietFor(_ key: Key, at now: ContinuousClock.Instant) -> Duration? {
        sightings[key].map { now - $0.since }
    }

    /// The keys whose writers count as alive (``isFresh(_:within:at:)``).
    public func fresh(within window: Duration, at now: ContinuousClock.Instant) -> [Key] {
        sightings.keys.filter { isFresh($0, within: window, at: now) }
    }

    /// Whether `key`'s writer counts as alive: its key changed within `window` — or, just after this
    /// observer started watching, it was first seen less than `window` ago (a stale report then looks
    /// alive for one window at most, which only ever makes the observer wait).
    public func isFresh(_ key: Key, within window: Duration, at now: ContinuousClock.Instant) -> Bool {
        quietFor(key, at: now).map { $0 < window } ?? false
    }
}
