import BatonConsulStore
import Synchronization

/// The one wake-up of the server's timer task (``CheckRunner``): it sleeps until the earliest deadline
/// it knows of — a session's or a TTL check's expiry, a blocked query's wait, a critical service's
/// reaping — and is woken early only when a deadline before that one appears. A server at rest thus
/// wakes when something is due, not on a fixed tick.
final class Alarm: Sendable {
    private struct State {
        /// When the sleeper wakes; nil while it is awake (computing its next deadline or sweeping).
        var planned: ContinuousClock.Instant?
        var sleeper: CheckedContinuation<Void, Never>?
        /// A deadline came while the sleeper was awake: its next sleep starts with another look.
        var dirty = false
    }
    private let state = Mutex(State())

    /// Whether the sleeper sleeps now (it planned a wake-up): a request from now on is weighed against it.
    var sleeping: Bool { state.withLock { $0.planned != nil } }

    /// A deadline at `instant` was set: wakes the sleeper if it planned to sleep past it.
    func request(_ instant: ContinuousClock.Instant) {
        let woken = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard let planned = s.planned else {
                s.dirty = true
                return nil
            }
            guard instant < planned else { return nil }
            s.planned = nil
            defer { s.sleeper = nil }
            return s.sleeper
        }
        woken?.resume()
    }

    /// The sleeper is about to look at the deadlines (and then sleep until the earliest): a deadline
    /// requested from now on makes its next sleep end at once, so none is missed.
    func awake() {
        state.withLock {
            $0.planned = nil
            $0.dirty = false
        }
    }

    /// Sleeps until `instant`, an earlier ``request(_:)`` or cancellation.
    func sleep(until instant: ContinuousClock.Instant) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(until: instant, clock: .continuous) }  // ignored: cancelled means woken
            group.addTask { await self.waitForRequest(planned: instant) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForRequest(planned: ContinuousClock.Instant) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.dirty || Task.isCancelled { return true }
                    s.planned = planned
                    s.sleeper = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let sleeper = state.withLock { s -> CheckedContinuation<Void, Never>? in
                s.planned = nil
                defer { s.sleeper = nil }
                return s.sleeper
            }
            sleeper?.resume()
        }
    }
}
