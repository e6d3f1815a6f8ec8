import BatonConsulStore
import ConsulAPI
import Dispatch
import Foundation
import Synchronization

/// The server's state, its durable log and the wake-ups of blocked readers.
///
/// Reads take a short lock. Writes go one at a time through a dedicated thread: the write is planned
/// against the current state, appended to the log and synced, and only then applied and made visible,
/// so no reader ever sees a write that a crash could lose.
final class Store: Sendable {
    private let state: Mutex<State>
    // @unchecked-free: the log is touched only on `commitQueue`.
    private nonisolated(unsafe) let log: WriteAheadLog?
    private let commitQueue = DispatchQueue(label: "baton.consul.commit")
    private let waiters = Mutex<Waiters>(Waiters())
    /// Writes fail with this once the disk failed: better to stop acknowledging than to lie.
    private let broken = Mutex<String?>(nil)
    /// Snapshots restored so far: a blocked query that sees this change answers at once, whatever the
    /// index (Consul abandons every watch on a restore).
    private let restores = Mutex<UInt64>(0)

    /// Wakes the timer task (``CheckRunner``) when a deadline comes before the one it sleeps until.
    let alarm = Alarm()

    struct Waiters {
        struct Waiter {
            var continuation: CheckedContinuation<Void, Never>
            var deadline: ContinuousClock.Instant
        }
        var version: UInt64 = 0
        var pending: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
    }

    init(log: WriteAheadLog?, initial: State) {
        self.log = log
        self.state = Mutex(initial)
    }

    /// Refuses further writes and closes the log, after any write in progress.
    func close() {
        commitQueue.sync {
            broken.withLock { $0 = "the server is shutting down" }
            log?.close()
        }
    }

    func read<T>(_ body: (borrowing State) throws(APIError) -> T) throws(APIError) -> T {
        try state.withLock { (s: inout State) throws(APIError) -> T in try body(s) }
    }

    /// Changes runtime-only state (session and check deadlines are not in `State`; lock-delay is).
    func mutateRuntime<T>(_ body: (inout State) -> T) -> T {
        let (result, deadline) = state.withLock { s in
            let before = s.nextDeadline()
            return (body(&s), Self.earlier(s.nextDeadline(), than: before))
        }
        if let deadline { alarm.request(deadline) }
        return result
    }

    /// `after` when it comes before `before` (or there was none): a deadline the timer task must be
    /// told of. Renewals, which only push deadlines later, and the timer's own sweeps tell it nothing.
    private static func earlier(_ after: ContinuousClock.Instant?, than before: ContinuousClock.Instant?) -> ContinuousClock.Instant? {
        guard let after else { return nil }
        if let before, before <= after { return nil }
        return after
    }

    /// The earliest instant something falls due: a session's or TTL check's expiry, a critical
    /// service's reaping, a blocked query's deadline.
    func nextDeadline() -> ContinuousClock.Instant? {
        let stateDeadline = state.withLock { $0.nextDeadline() }
        let waiterDeadline = waiters.withLock { $0.pending.values.map(\.deadline).min() }
        return [stateDeadline, waiterDeadline].compactMap { $0 }.min()
    }

    /// Ends the waits of blocked queries whose deadline has come.
    func expireWaiters(now: ContinuousClock.Instant) {
        let due = waiters.withLock { w -> [CheckedContinuation<Void, Never>] in
            let ids = w.pending.filter { $0.value.deadline <= now }.map(\.key)
            return ids.compactMap { w.pending.removeValue(forKey: $0)?.continuation }
        }
        for continuation in due { continuation.resume() }
    }

    /// Plans, persists and applies one write.
    func write<R: Sendable>(_ planner: @escaping @Sendable (borrowing State, UInt64, ContinuousClock.Instant) throws(APIError) -> Plan<R>)
        async throws(APIError) -> R
    {
        let outcome: Result<R, APIError> = await withCheckedContinuation { continuation in
            commitQueue.async {
                continuation.resume(returning: self.commit(planner))
            }
        }
        return try outcome.get()
    }

    private func commit<R>(_ planner: (borrowing State, UInt64, ContinuousClock.Instant) throws(APIError) -> Plan<R>) -> Result<R, APIError> {
        if let reason = broken.withLock({ $0 }) { return .failure(APIError(500, "storage failed, writes are refused: \(reason)")) }
        let now = ContinuousClock.now
        let planned: Result<(Plan<R>, UInt64), APIError> = state.withLock { s in
            let index = s.index + 1
            do throws(APIError) {
                return .success((try planner(s, index, now), index))
            } catch {
                return .failure(error)
            }
        }
        guard case .success(let (plan, index)) = planned else {
            if case .failure(let e) = planned { return .failure(e) }
            fatalError("unreachable")
        }
        guard !plan.changes.isEmpty else { return .success(plan.result) }
        if let log {
            do {
                try log.append(ChangeCoding.encode(plan.changes, index: index))
            } catch {
                broken.withLock { $0 = "\(error)" }
                return .failure(APIError(500, "cannot persist the write: \(error)"))
            }
        }
        let (snapshot, deadline): (State?, ContinuousClock.Instant?) = state.withLock { s in
            let before = s.nextDeadline()
            s.apply(plan.changes, index: index, now: now)
            return ((log?.logSize ?? 0) > (log?.compactionThreshold ?? Int.max) ? s : nil, Self.earlier(s.nextDeadline(), than: before))
        }
        if let deadline { alarm.request(deadline) }
        if let snapshot, let log {
            do { try log.compact(snapshot) } catch { broken.withLock { $0 = "\(error)" } }
        }
        wakeAll()
        return .success(plan.result)
    }

    /// Replaces the whole state with a snapshot's (`PUT /v1/snapshot`): made durable first (the log
    /// starts again from it), then visible; every blocked reader wakes — indexes may go backwards,
    /// which Consul's clients answer by reading afresh.
    func restore(_ restored: State) async throws(APIError) {
        let outcome: Result<Void, APIError> = await withCheckedContinuation { continuation in
            commitQueue.async { continuation.resume(returning: self.replace(with: restored)) }
        }
        try outcome.get()
    }

    private func replace(with snapshot: State) -> Result<Void, APIError> {
        if let reason = broken.withLock({ $0 }) { return .failure(APIError(500, "storage failed, writes are refused: \(reason)")) }
        let restored = snapshot.restored(over: state.withLock { $0.index })
        if let log {
            do { try log.compact(restored) } catch {
                broken.withLock { $0 = "\(error)" }
                return .failure(APIError(500, "cannot persist the restored snapshot: \(error)"))
            }
        }
        state.withLock { $0 = restored }
        restores.withLock { $0 += 1 }
        if let deadline = restored.nextDeadline() { alarm.request(deadline) }
        wakeAll()
        return .success(())
    }

    // MARK: Blocking

    /// The current change version, to wait on with ``waitForChange(after:until:)``.
    var version: UInt64 { waiters.withLock { $0.version } }

    private func wakeAll() {
        let woken = waiters.withLock { w -> [CheckedContinuation<Void, Never>] in
            w.version += 1
            defer { w.pending.removeAll() }
            return w.pending.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Wakes blocked readers without a write (a renewal changes nothing, but a test may want a poke).
    func notifyRuntimeChange() { wakeAll() }

    /// Returns when anything was written after `version`, at `deadline` (the timer task ends the
    /// wait: no timer per blocked query), or on cancellation.
    func waitForChange(after version: UInt64, until deadline: ContinuousClock.Instant) async {
        let id = waiters.withLock { w -> UInt64 in
            w.nextID += 1
            return w.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = waiters.withLock { w -> Bool in
                    if w.version > version || Task.isCancelled || ContinuousClock.now >= deadline { return true }
                    w.pending[id] = Waiters.Waiter(continuation: continuation, deadline: deadline)
                    return false
                }
                if resumeNow { continuation.resume() } else { alarm.request(deadline) }
            }
        } onCancel: {
            let waiter = waiters.withLock { $0.pending.removeValue(forKey: id) }
            waiter?.continuation.resume()
        }
    }

    /// Consul's blocking-query loop: answer at once unless the caller asked to wait for an index the
    /// result has not passed; then wait for writes, re-evaluating on each, until the deadline.
    ///
    /// `evaluate` returns the result's index and whether it is a single object that is missing; a
    /// missing object that was already missing before a wake-up keeps the query blocked (Consul's
    /// refinement, so that unrelated writes do not return a spurious 404).
    func blockingQuery<T>(
        index requested: UInt64, wait: Duration?, evaluate: (borrowing State) throws(APIError) -> (index: UInt64, missing: Bool, value: T)
    ) async throws(APIError) -> (index: UInt64, value: T) {
        var threshold = requested
        var previouslyMissing = false
        let deadline: ContinuousClock.Instant
        if requested > 0, let wait {
            let jitter = Duration.nanoseconds(Int64.random(in: 0..<max(1, (wait / 16).nanosecondCount)))
            deadline = .now + wait + jitter
        } else {
            deadline = .now
        }
        let restoredBefore = restores.withLock { $0 }
        while true {
            let version = self.version
            let (index, missing, value) = try read(evaluate)
            if requested == 0 { return (index, value) }
            if restores.withLock({ $0 }) != restoredBefore { return (index, value) }
            if index > threshold {
                if !(missing && previouslyMissing) { return (index, value) }
                threshold = index
            }
            previouslyMissing = missing
            if ContinuousClock.now >= deadline || Task.isCancelled { return (index, value) }
            await waitForChange(after: version, until: deadline)
            if ContinuousClock.now >= deadline || Task.isCancelled {
                let (index, _, value) = try read(evaluate)
                return (index, value)
            }
        }
    }
}
