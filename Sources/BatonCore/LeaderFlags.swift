import ConsulAPI

/// The leader key's flags: the heartbeat count (each beat is a check-and-set write that bumps it) and
/// the leader's fencing promise — the `fence_after` its watchdog was armed with at that beat — so that
/// every node times a takeover by the promise the silent leader really made, not by its own reading of
/// the configuration (invariant 12: a lowered fence_timeout must not let a replica take over while the
/// old primary's watchdog still waits out the longer deadline it armed).
///
/// The low 32 bits count beats; the high 32 bits hold the promise in milliseconds (0: none, as an
/// earlier Baton writes them).
public struct LeaderFlags: Sendable, Equatable {
    public var beats: UInt32
    /// The `fence_after` the leader's watchdog was armed with when it wrote the key.
    public var promise: GoDuration?

    public init(beats: UInt32, promise: GoDuration?) {
        self.beats = beats
        self.promise = promise
    }

    public init(raw: UInt64) {
        beats = UInt32(truncatingIfNeeded: raw)
        let milliseconds = raw >> 32
        promise = milliseconds == 0 ? nil : .milliseconds(Int64(milliseconds))
    }

    public var raw: UInt64 {
        // Rounded up: a promise is never read shorter than it was made.
        let milliseconds = promise.map { UInt64(max(0, ($0.nanoseconds + 999_999) / 1_000_000)) } ?? 0
        return (min(milliseconds, UInt64(UInt32.max)) << 32) | UInt64(beats)
    }

    /// The flags of the next beat after `raw`, promising `fenceAfter`.
    public static func nextBeat(after raw: UInt64, promise fenceAfter: GoDuration) -> UInt64 {
        LeaderFlags(beats: LeaderFlags(raw: raw).beats &+ 1, promise: fenceAfter).raw
    }
}
