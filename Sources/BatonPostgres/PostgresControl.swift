import BatonCore
import BatonFence
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// PostgreSQL's own tools, run as the PostgreSQL OS user: initdb, pg_ctl, pg_basebackup,
/// pg_controldata.
public struct PostgresControl: Sendable {
    public var binDirectory: String
    public var dataDirectory: String
    public var runner: CommandRunner

    public init(binDirectory: String, dataDirectory: String, osUser: String) {
        self.binDirectory = binDirectory
        self.dataDirectory = dataDirectory
        self.runner = CommandRunner(runAsUser: osUser)
    }

    func tool(_ name: String) -> String { binDirectory + "/" + name }

    /// Reads what the data directory holds without starting anything.
    public func inspect() async throws -> DataDirectoryState {
        let fm = FileManager.default
        let contents = (try? fm.contentsOfDirectory(atPath: dataDirectory)) ?? []
        if contents.isEmpty { return DataDirectoryState(kind: .empty) }
        guard contents.contains("PG_VERSION"), contents.contains("global") else { return DataDirectoryState(kind: .notPostgres) }
        let output = try await runner.check(tool("pg_controldata"), ["-D", dataDirectory], what: "pg_controldata on \(dataDirectory)")
        guard let id = PostgresControl.field("Database system identifier", in: output) else {
            throw PostgresError("pg_controldata printed no system identifier for \(dataDirectory)")
        }
        let standby = contents.contains("standby.signal") || contents.contains("recovery.signal")
        return DataDirectoryState(kind: .cluster(systemIdentifier: id, standby: standby))
    }

    static func field(_ name: String, in output: String) -> String? {
        for line in output.split(separator: "\n") where line.hasPrefix(name + ":") {
            return line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }

    /// Creates a new cluster with data checksums (pg_rewind needs checksums or wal_log_hints).
    public func initdb() async throws {
        try await runner.check(
            tool("initdb"),
            ["-D", dataDirectory, "--data-checksums", "--auth-local=peer", "--auth-host=scram-sha-256", "--encoding=UTF8", "--username=postgres"],
            what: "initdb")
    }

    /// Whether a postmaster runs on the data directory.
    public func isRunning() async throws -> Bool {
        let result = try await runner.run(tool("pg_ctl"), ["status", "-D", dataDirectory])
        return result.status == 0
    }

    /// Starts PostgreSQL and waits until it accepts connections.
    public func start(logFile: String) async throws {
        removeStaleLockFile()
        try await runner.check(tool("pg_ctl"), ["start", "-D", dataDirectory, "-l", logFile, "-w", "-t", "120"], what: "pg_ctl start")
    }

    public func stop(mode: String = "fast") async throws {
        try await runner.check(tool("pg_ctl"), ["stop", "-D", dataDirectory, "-m", mode, "-w", "-t", "120"], what: "pg_ctl stop")
    }

    /// Starts the postmaster without waiting for it to accept connections (crash recovery may take a
    /// while; the caller watches for it instead of blocking).
    public func launch(logFile: String) async throws {
        removeStaleLockFile()
        try await runner.check(tool("pg_ctl"), ["start", "-D", dataDirectory, "-l", logFile, "-W"], what: "pg_ctl start")
    }

    /// Removes postmaster.pid when no process of this data directory runs. A postmaster killed with
    /// SIGKILL leaves it behind, and until its parent (init, or a container's PID 1) reaps it, its PID
    /// still exists as a zombie: PostgreSQL takes that for a live postmaster and refuses to start —
    /// pg_rewind's crash recovery included, which then costs a full clone.
    func removeStaleLockFile() {
        let path = dataDirectory + "/postmaster.pid"
        guard FileManager.default.fileExists(atPath: path), processes.running().isEmpty else { return }
        try? FileManager.default.removeItem(atPath: path)  // ignored: PostgreSQL reports a lock file it still finds
    }

    /// The processes of this data directory.
    public var processes: PostgresProcesses { PostgresProcesses(dataDirectory: dataDirectory, binDirectory: binDirectory) }

    /// How ``stopBounded(fast:immediate:)`` got PostgreSQL to stop.
    public enum StopOutcome: String, Sendable {
        /// It was not running.
        case notRunning = "not running"
        /// A fast shutdown: a shutdown checkpoint, every WAL record sent to the standbys.
        case fast = "fast shutdown"
        /// An immediate shutdown: no checkpoint (crash recovery at the next start).
        case immediate = "immediate shutdown"
        /// Its processes were killed.
        case killed = "killed"
    }

    /// Stops PostgreSQL within bounds, whatever state it is in: a fast shutdown for up to `fast`, then
    /// an immediate one for up to `immediate`, then SIGKILL of every process of the data directory.
    /// - Throws: when processes are still alive after all that (which only a process in
    ///   uninterruptible sleep can do).
    @discardableResult
    public func stopBounded(fast: Duration = .seconds(10), immediate: Duration = .seconds(5)) async throws -> StopOutcome {
        let processes = self.processes
        guard !processes.running().isEmpty else { return .notRunning }
        for (mode, bound, outcome) in [("fast", fast, StopOutcome.fast), ("immediate", immediate, .immediate)] {
            let seconds = max(1, Int(bound.components.seconds))
            let result = try await runner.run(
                tool("pg_ctl"), ["stop", "-D", dataDirectory, "-m", mode, "-w", "-t", String(seconds)], timeout: bound + .seconds(2))
            if result.succeeded, processes.running().isEmpty { return outcome }
            if processes.running().isEmpty { return outcome }
        }
        let left = processes.killAll(timeout: .seconds(5))
        guard left.isEmpty else { throw PostgresError("PostgreSQL processes \(left) survived SIGKILL (stuck in the kernel?)") }
        return .killed
    }

    /// Fencing: kills every process of the data directory with SIGKILL at once — the postmaster, its
    /// children, and any backend a dead postmaster left behind — without going through pg_ctl or
    /// runuser, and checks that none is left.
    /// - Returns: the processes still alive (empty when the fence is verified).
    @discardableResult
    public func fence() async -> [Int32] {
        let processes = self.processes
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: processes.killAll(timeout: .seconds(5))) }
        }
    }

    /// What the control file says (pg_controldata): the cluster's state and its last checkpoint.
    public func controlData() async throws -> ControlData { ControlData(pgControldataOutput: try await controlDataText()) }

    /// pg_controldata's whole output, as it prints it (for `baton report`).
    public func controlDataText() async throws -> String {
        try await runner.check(tool("pg_controldata"), ["-D", dataDirectory], what: "pg_controldata")
    }

    public func reload() async throws {
        try await runner.check(tool("pg_ctl"), ["reload", "-D", dataDirectory], what: "pg_ctl reload")
    }

    /// Rewinds a diverged data directory to `source` (a libpq conninfo of the new primary). PostgreSQL 13+
    /// finishes crash recovery first when the directory was not shut down cleanly.
    public func rewind(source: String) async throws {
        removeStaleLockFile()
        try await runner.check(tool("pg_rewind"), ["-D", dataDirectory, "--source-server=" + source, "--progress"], what: "pg_rewind")
    }

    /// Clones a primary: streams WAL during the copy into `slot` (which must exist).
    /// - Parameter conninfo: how to reach the primary; the password comes from the passfile named in it.
    public func basebackup(conninfo: String, slot: String) async throws {
        try await runner.check(
            tool("pg_basebackup"),
            ["-D", dataDirectory, "-d", conninfo, "-X", "stream", "-S", slot, "-c", "fast", "--no-password", "--progress"],
            what: "pg_basebackup from the primary")
    }
}

/// The control file as pg_controldata prints it, for what Baton decides from it.
public struct ControlData: Sendable, Equatable {
    /// `shut down`, `shut down in recovery`, `in production`, `in crash recovery`, `in archive recovery`…
    public var state: String
    /// The latest checkpoint's location: after a clean shutdown, the last WAL record.
    public var checkpoint: LSN?
    public var timeline: Int?

    public init(state: String, checkpoint: LSN?, timeline: Int?) {
        self.state = state
        self.checkpoint = checkpoint
        self.timeline = timeline
    }

    public init(pgControldataOutput output: String) {
        state = PostgresControl.field("Database cluster state", in: output) ?? ""
        checkpoint = PostgresControl.field("Latest checkpoint location", in: output).flatMap { try? LSN(parsing: $0) }
        timeline = PostgresControl.field("Latest checkpoint's TimeLineID", in: output).flatMap { Int($0) }
    }

    /// A primary that stopped with a fast or smart shutdown: its shutdown checkpoint is its last record.
    public var isCleanPrimaryShutdown: Bool { state == "shut down" }
}
