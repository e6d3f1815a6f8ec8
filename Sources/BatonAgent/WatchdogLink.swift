import BatonFence
import BatonPostgres
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// What guards a leading node's PostgreSQL when its monitor cannot: a separate process that kills it
/// when a deadline passes without a renewal. The monitor never leads without one.
public protocol FenceGuard: Sendable {
    /// Makes sure a guard answers, starting or replacing it if needed.
    /// - Returns: whether one does.
    func ensure() async -> Bool
    /// Fence unless renewed before `deadline` (CLOCK_MONOTONIC nanoseconds).
    /// - Throws: ``WatchdogUnavailable`` when no guard answers or it refuses (a required kernel
    ///   watchdog that cannot be used): this node must not lead.
    func arm(deadline: UInt64) async throws
    /// Nothing to guard (this node does not lead).
    func standDown() async
    /// Kill PostgreSQL now.
    func fenceNow() async
    /// The monitor stops cleanly: the guard may exit when it guards nothing.
    func quit() async
    /// The PID of the postmaster the guard would fence (0: it sees none), or nil when it cannot say (no
    /// answer, or a watchdog from before it could).
    func postmasterSeen() async -> Int32?
}

public struct WatchdogUnavailable: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The monitor's link to `baton-watchdog`, over the watchdog's datagram socket in the state directory.
/// Every request waits for its answer, so a watchdog that died or froze is noticed at the next renewal
/// and replaced (a frozen one is killed first): a monitor never leads unguarded. The watchdog outlives
/// the monitor, so a restarted monitor finds it and carries on where the old one stopped.
public final class WatchdogLink: FenceGuard, @unchecked Sendable {
    // @unchecked: `socket`, `sequence` and `started` are only touched on `queue` (every public method goes
    // through `onQueue`); the rest is immutable.
    public struct Configuration: Sendable {
        public var executable: String
        public var stateDirectory: String
        public var dataDirectory: String
        public var binDirectory: String
        /// The file keepalived tracks, set to FAULT (-254) when the watchdog fences…
        public var trackFile: String?
        /// …and the one a keepalived.conf from an earlier Baton tracks, set to 1.
        public var legacyTrackFile: String?
        /// `off`, `automatic` or `required` (``KernelWatchdogMode``).
        public var kernelWatchdog: String
        public var kernelDevice: String

        public init(
            executable: String, stateDirectory: String, dataDirectory: String, binDirectory: String, trackFile: String?,
            legacyTrackFile: String? = nil, kernelWatchdog: String = "off", kernelDevice: String = "/dev/watchdog"
        ) {
            self.executable = executable
            self.stateDirectory = stateDirectory
            self.dataDirectory = dataDirectory
            self.binDirectory = binDirectory
            self.trackFile = trackFile
            self.legacyTrackFile = legacyTrackFile
            self.kernelWatchdog = kernelWatchdog
            self.kernelDevice = kernelDevice
        }
    }

    let configuration: Configuration
    let logger: Logger
    private let queue = DispatchQueue(label: "baton.watchdog-link")
    private var socket: DatagramSocket?
    private var sequence: UInt64 = 0
    /// Watchdogs this process started, to reap when they exit (only these: the command runner waits
    /// for its own children).
    private var started: [Int32] = []

    public init(_ configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    var socketPath: String { WatchdogFiles.socket(stateDirectory: configuration.stateDirectory) }

    public func ensure() async -> Bool { await onQueue { self.ensureLocked() } }

    public func arm(deadline: UInt64) async throws {
        let reply = await onQueue { () -> WatchdogReply? in
            if let reply = self.request(.lead(deadline: deadline)) { return reply }
            guard self.ensureLocked() else { return nil }
            return self.request(.lead(deadline: deadline))
        }
        guard let reply else { throw WatchdogUnavailable("no watchdog answers on \(socketPath) and none could be started") }
        guard reply.state == .armed else { throw WatchdogUnavailable("the watchdog refuses to guard (see \(WatchdogFiles.log(stateDirectory: configuration.stateDirectory)))") }
    }

    public func standDown() async { _ = await onQueue { self.request(.standDown) } }

    public func fenceNow() async {
        let answered = await onQueue { self.request(.fenceNow, wait: 7000) != nil }
        if !answered {
            // Nobody to ask: do it here.
            logger.critical("The watchdog does not answer; fencing from the monitor")
            PostgresProcesses(dataDirectory: configuration.dataDirectory, binDirectory: configuration.binDirectory).killAll()
        }
    }

    public func quit() async { _ = await onQueue { self.request(.quit) } }

    public func postmasterSeen() async -> Int32? { await onQueue { self.request(.whichPostmaster)?.postmaster } }

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in queue.async { continuation.resume(returning: body()) } }
    }

    // MARK: On `queue`

    /// One request and its answer; nil when none came within `wait` milliseconds.
    private func request(_ command: WatchdogCommand, wait: Int32 = 500) -> WatchdogReply? {
        if socket == nil {
            do {
                socket = try DatagramSocket(abstractName: "baton-monitor-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            } catch {
                logger.error("Cannot open a socket to the watchdog", metadata: ["error": "\(error)"])
                return nil
            }
        }
        guard let socket else { return nil }
        sequence += 1
        let request = WatchdogRequest(sequence: sequence, command: command)
        guard socket.send(request.text, toPath: socketPath) else { return nil }
        let deadline = ContinuousClock.now + .milliseconds(Int(wait))
        while ContinuousClock.now < deadline {
            let left = deadline - ContinuousClock.now
            let milliseconds = Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1
            guard let (text, _) = socket.receive(timeoutMilliseconds: milliseconds) else { return nil }
            // Late answers to earlier requests are skipped.
            if let reply = WatchdogReply(text: text), reply.sequence == request.sequence { return reply }
        }
        return nil
    }

    /// A watchdog answers, or one was started (a hung one killed first) and answers.
    private func ensureLocked() -> Bool {
        if request(.ping) != nil { return true }
        removeUnansweringWatchdog()
        let arguments =
            [
                "--state-dir", configuration.stateDirectory, "--pgdata", configuration.dataDirectory, "--pg-bindir", configuration.binDirectory,
                "--kernel-watchdog", configuration.kernelWatchdog, "--kernel-watchdog-device", configuration.kernelDevice,
            ] + (configuration.trackFile.map { ["--track-file", $0] } ?? [])
            + (configuration.legacyTrackFile.map { ["--legacy-track-file", $0] } ?? [])
        do {
            let pid = try CommandRunner.launch(
                configuration.executable, arguments, logPath: WatchdogFiles.log(stateDirectory: configuration.stateDirectory))
            started.append(pid)
            logger.notice("Started the watchdog", metadata: ["watchdog.pid": "\(pid)"])
        } catch {
            logger.error("Cannot start the watchdog", metadata: ["error": "\(error)"])
            return false
        }
        let deadline = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < deadline {
            if request(.ping, wait: 100) != nil { return true }
            reapChildren()
        }
        logger.error("The watchdog started but does not answer", metadata: ["watchdog.socket": "\(socketPath)"])
        return false
    }

    /// A watchdog that runs but does not answer (frozen, hung) cannot guard: kill it, so that a new one
    /// can take its place. Only a process that is this node's watchdog is killed.
    private func removeUnansweringWatchdog() {
        reapChildren()
        guard let text = SmallFile.read(WatchdogFiles.pid(stateDirectory: configuration.stateDirectory)),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0,
            let commandLine = SmallFile.read("/proc/\(pid)/cmdline"),
            commandLine.contains("baton-watchdog"), commandLine.contains(configuration.dataDirectory)
        else { return }
        logger.warning("The watchdog does not answer; replacing it", metadata: ["watchdog.pid": "\(pid)"])
        kill(pid, SIGCONT)
        kill(pid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(2)
        while PostgresProcesses.state(pid).map({ $0 != "Z" }) ?? false, ContinuousClock.now < deadline {
            usleep(10_000)
            reapChildren()
        }
        reapChildren()
    }

    /// Collects watchdogs this process started that have exited (no zombie is left behind).
    private func reapChildren() {
        var status: Int32 = 0
        started.removeAll { waitpid($0, &status, WNOHANG) == $0 }
    }
}
