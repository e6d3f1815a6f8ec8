import BatonAgent
import BatonCore
import BatonFence
import BatonPostgres
import Foundation
import Synchronization

/// A PostgreSQL stand-in for tests of the monitor's shell: it holds a state, answers the monitor's
/// typed calls (``LocalDatabase``: never SQL text to match), and takes as long as a test says for the slow steps (promotion, start, stop,
/// checkpoint). What the monitor asked of it is recorded.
public final class FakeDatabase: LocalDatabase, @unchecked Sendable {
    // @unchecked: the test and the monitor's loop share it; every field is guarded by `lock`.
    public struct Delays: Sendable {
        public var promote: Duration = .zero
        public var checkpoint: Duration = .zero
        /// After a launch, how long the server does not answer (crash recovery) before it does.
        public var recovery: Duration = .zero
        public var stop: Duration = .zero
        public init() {}
    }

    private let lock = NSLock()
    private var state: LocalPostgres
    private var recoveringUntil: (ContinuousClock.Instant, LocalPostgres)?
    private var log: [String] = []
    private var standbyNames = ""
    public var delays: Delays {
        get { lock.withLock { storedDelays } }
        set { lock.withLock { storedDelays = newValue } }
    }
    private var storedDelays = Delays()
    /// Runs at each launch, before the server "starts": what a test checks at that moment.
    public var onLaunch: (@Sendable () -> Void)? {
        get { lock.withLock { storedOnLaunch } }
        set { lock.withLock { storedOnLaunch = newValue } }
    }
    private var storedOnLaunch: (@Sendable () -> Void)?

    public init(_ state: LocalPostgres, postmaster: Int32? = nil) {
        self.state = state
        self.postmaster = postmaster
    }

    public var conninfo: String? { nil }

    /// What the monitor asked, in order (`promote`, `launch`, `stop`, `fence`, `CHECKPOINT`…).
    public var actions: [String] { lock.withLock { log } }

    /// Sets what the server is now (a test's fault: a crash, a stall).
    public func set(_ new: LocalPostgres) { lock.withLock { state = new } }

    public var current: LocalPostgres { lock.withLock { state } }

    private func note(_ action: String) { lock.withLock { log.append(action) } }

    public func observe() async -> LocalPostgres {
        lock.withLock {
            if let (until, next) = recoveringUntil, ContinuousClock.now >= until {
                state = next
                recoveringUntil = nil
            }
            return state
        }
    }

    public func checkpoint(timeout: Duration) async throws {
        note("CHECKPOINT")
        try await Task.sleep(for: delays.checkpoint)
    }

    /// A statement needs the server up.
    private func answering() async throws {
        guard (await observe()).isUp else { throw PostgresError(sqlState: "57014", "the fake server does not answer") }
    }

    public func checkpointTimeline() async throws -> Int {
        try await answering()
        return 1
    }

    public func checkpointBehindTimeline() async throws -> Bool {
        try await answering()
        return false
    }

    public func replayPosition() async throws -> LSN? {
        try await answering()
        return LSN(0x1000)
    }

    public func currentPosition() async throws -> LSN? {
        try await answering()
        return LSN(0x1000)
    }

    public func pendingRestart() async throws -> [String] {
        try await answering()
        return []
    }

    public func slots() async throws -> [SlotReport] {
        try await answering()
        return []
    }

    public func createSlot(_ name: String) async throws {
        try await answering()
        note("create slot \(name)")
    }

    public func dropSlot(_ name: String) async throws {
        try await answering()
        note("drop slot \(name)")
    }

    public func synchronousStandbyNames() async throws -> String {
        try await answering()
        return lock.withLock { standbyNames }
    }

    public func replicationPeers() async throws -> [ReplicationPeer] {
        try await answering()
        return []
    }

    public func replicationLag() async throws -> [(standby: String, bytes: UInt64, seconds: Double?)] {
        try await answering()
        return []
    }

    public func archiverStatistics() async throws -> ArchiverStatistics {
        try await answering()
        return ArchiverStatistics(failedCount: 0, lastArchivedAt: nil, lastFailedAt: nil, lastFailedWAL: nil)
    }

    public func promote(timeout: Duration) async throws {
        note("promote")
        try await Task.sleep(for: delays.promote)
        lock.withLock { state = .primary(position: LSN(0x1000), timeline: 2) }
    }

    public func launch() async throws {
        onLaunch?()
        note("launch")
        lock.withLock {
            var standby = false
            if case .down(true) = state { standby = true }
            let next: LocalPostgres = standby ? .standby(position: LSN(0x1000), timeline: 1, upstream: nil, streaming: true) : .primary(position: LSN(0x1000), timeline: 1)
            state = .unresponsive(standbySignal: standby, postmaster: true)
            recoveringUntil = (ContinuousClock.now + storedDelays.recovery, next)
        }
    }

    public func stop() async throws -> PostgresControl.StopOutcome {
        note("stop")
        try await Task.sleep(for: delays.stop)
        lock.withLock {
            if case .down = state {} else { state = .down(standbySignal: false) }
        }
        return .fast
    }

    /// The postmaster's PID it passes for (nil: no process stands in for it).
    public let postmaster: Int32?
    public func postmasterPID() -> Int32? { postmaster }

    public func fence() async -> [Int32] {
        note("fence")
        lock.withLock { state = .down(standbySignal: false) }
        return []
    }

    public func reload() async throws { note("reload") }
    public func controlData() async throws -> ControlData { ControlData(state: "shut down", checkpoint: LSN(0x1000), timeline: 1) }
    public func rewind(source: String) async throws { note("rewind") }
    public func clone(conninfo: String, slot: String, inPlace: Bool) async throws -> CloneOutcome {
        note("clone")
        return CloneOutcome(moved: nil, inPlace: false, how: "cloned by the fake")
    }

    public func writeSettings(upstream: PostgresFiles.Upstream?, synchronousStandbyNames: String) throws {
        lock.withLock { standbyNames = synchronousStandbyNames }
        note("settings upstream=\(upstream.map { "\($0.host):\($0.port)" } ?? "none") sync=\(synchronousStandbyNames)")
    }

    public func markStandby() throws {
        note("standby.signal")
        lock.withLock {
            if case .down = state { state = .down(standbySignal: true) }
        }
    }

    public func writeParameters(_ text: String) throws -> Bool {
        note("parameters \(text.split(separator: "\n").dropFirst().joined(separator: ";"))")
        return true
    }

    public func historyTimelines() -> [Int] { [] }
    public func readHistory(_ timeline: Int) -> String { "" }
    public func writeHistory(_ timeline: Int, _ text: String) throws {}
    public var isEmpty: Bool { false }
    public func close() {}
}

/// A watchdog stand-in: records every deadline it was given and when, and whether it was asked to
/// fence; it never kills anything. `available` false plays a watchdog that cannot be started.
public final class FakeGuard: FenceGuard {
    public struct Arming: Sendable {
        public var at: UInt64
        public var deadline: UInt64
    }

    private let state = Mutex((armings: [Arming](), standDowns: 0, fences: 0, available: true))

    public init(available: Bool = true, seen: Int32? = nil) {
        self.seen = seen
        state.withLock { $0.available = available }
    }

    public var armings: [Arming] { state.withLock { $0.armings } }
    public var fences: Int { state.withLock { $0.fences } }
    public var standDowns: Int { state.withLock { $0.standDowns } }

    public func ensure() async -> Bool { state.withLock { $0.available } }

    public func arm(deadline: UInt64) async throws {
        try state.withLock {
            guard $0.available else { throw WatchdogUnavailable("the fake watchdog is unavailable") }
            $0.armings.append(Arming(at: MonotonicClock.nanoseconds(), deadline: deadline))
        }
    }

    public func standDown() async { state.withLock { $0.standDowns += 1 } }
    public func fenceNow() async { state.withLock { $0.fences += 1 } }
    public func quit() async {}
    /// The postmaster it says it would fence (nil: it cannot say, as an earlier watchdog).
    public let seen: Int32?
    public func postmasterSeen() async -> Int32? { seen }

    /// How far each deadline had run out when the next arming came (nanoseconds), for every gap in
    /// which the watchdog would have fenced: empty when the guard never lapsed.
    public func lapses() -> [UInt64] {
        let armings = self.armings
        var lapses: [UInt64] = []
        for (previous, next) in zip(armings, armings.dropFirst()) where next.at > previous.deadline {
            lapses.append(next.at - previous.deadline)
        }
        return lapses
    }
}

