import BatonCore
import Foundation

/// pgBackRest's commands for this node, run as PostgreSQL's OS user (pgBackRest reads the data
/// directory and writes the repository as that user): the rules and texts are ``PgBackRest``'s.
public struct PgBackRestTool: Sendable {
    public let settings: PgBackRest
    let runner: CommandRunner

    public init(settings: PgBackRest, osUser: String) {
        self.settings = settings
        self.runner = CommandRunner(runAsUser: osUser)
    }

    func run(_ arguments: [String], timeout: Duration? = nil, onOutput: (@Sendable (String) -> Void)? = nil) async throws -> CommandResult {
        try await runner.run(settings.executable.value, Array(settings.command.dropFirst()) + arguments, timeout: timeout, onOutput: onOutput)
    }

    func check(_ arguments: [String], what: String, timeout: Duration? = nil) async throws -> String {
        let result = try await run(arguments, timeout: timeout)
        guard result.succeeded else { throw PostgresError("pgbackrest \(what) failed (exit \(result.status)): \(result.output.suffix(2000))") }
        return result.output
    }

    /// Creates the stanza in the repository (nothing when it exists for this database), then checks
    /// that archiving works: a WAL switch reaches the repository.
    public func createStanza() async throws {
        _ = try await check(["stanza-create"], what: "stanza-create", timeout: .seconds(120))
        _ = try await check(["check"], what: "check (archiving reaches the repository)", timeout: .seconds(120))
    }

    /// `pgbackrest check`: the configuration, the archive and the repository agree.
    public func checkArchive() async throws -> CommandResult { try await run(["check"], timeout: .seconds(120)) }

    /// A backup of type `type` (full, diff, incr) from this node, each line of pgBackRest's progress
    /// handed to `progress`; `arguments` adds to the command line (``PgBackRest/standbyBackup(me:leader:leaderRegistration:local:)``).
    public func backup(type: String, arguments: [String] = [], progress: @escaping @Sendable (String) -> Void) async throws -> CommandResult {
        try await run(["--log-level-console=info", "--type=\(type)"] + arguments + ["backup"], onOutput: progress)
    }

    /// The stanza's backups and archive.
    public func info() async throws -> PgBackRest.Info {
        let output = try await check(["--output=json", "info"], what: "info", timeout: .seconds(60))
        do throws(ValidationProblem) {
            return try PgBackRest.info(json: Array(output.utf8), stanza: settings.stanza)
        } catch {
            throw PostgresError(error.message)
        }
    }

    /// Pushes WAL segments from `walDirectory` to the archive (those it holds already, with the same
    /// content, are left as they are); returns the segments that could not be pushed, with why.
    public func push(_ segments: [String], walDirectory: String) async throws -> [(segment: String, why: String)] {
        var failed: [(String, String)] = []
        for segment in segments {
            let result = try await run(["archive-push", walDirectory + "/" + segment], timeout: .seconds(60))
            if !result.succeeded { failed.append((segment, String(result.output.suffix(300)))) }
        }
        return failed
    }

    /// Restores the latest backup into `pgdata` as a standby (standby.signal and restore_command
    /// written): it replays the archive, then streams once its upstream is set. Into an empty
    /// directory; or, with `delta`, over a stopped cluster's (pgBackRest's `--delta`: a file whose
    /// size, time and checksum match the backup's is kept, every other is copied, and files the backup
    /// does not have are removed). Returns pgBackRest's summary line (`restore size = …`).
    @discardableResult
    public func restoreStandby(into pgdata: String, delta: Bool = false) async throws -> String {
        let result = try await run(["--log-level-console=info", "--pg1-path=\(pgdata)", "--type=standby"] + (delta ? ["--delta"] : []) + ["restore"])
        guard result.succeeded else {
            throw PostgresError("pgbackrest restore of a standby into \(pgdata) failed (exit \(result.status)): \(result.output.suffix(2000))")
        }
        return PgBackRest.restoreSummary(result.output) ?? "restored"
    }

    /// Restores the latest backup into the empty directory `pgdata`, replaying WAL up to `target`
    /// (`--type=time|lsn`), then stopping there and promoting: a point-in-time copy.
    public func restore(into pgdata: String, target: (type: String, value: String)?, progress: @escaping @Sendable (String) -> Void) async throws
        -> CommandResult
    {
        var arguments = ["--log-level-console=info", "--pg1-path=\(pgdata)"]
        if let target { arguments += ["--type=\(target.type)", "--target=\(target.value)", "--target-action=promote"] }
        return try await run(arguments + ["restore"], onOutput: progress)
    }
}

extension PostgresControl {
    /// Copies the cluster into this (empty) data directory: restored from the repository as a standby
    /// when `source` says so for what the repository holds (``CloneSource``), else with pg_basebackup
    /// from the primary over `conninfo` and its slot. Returns how it was copied, for the report.
    public func clone(conninfo: String, slot: String, backup: PgBackRestTool?, source: CloneSource) async throws -> String {
        try await clone(conninfo: conninfo, slot: slot, backup: backup, chosen: await cloneSource(backup: backup, source: source))
    }

    /// The same, with the source already chosen (``cloneSource(backup:source:)``).
    public func clone(conninfo: String, slot: String, backup: PgBackRestTool?, chosen: (fromBackup: Bool, why: String)) async throws -> String {
        let (fromBackup, why) = chosen
        if fromBackup, let backup {
            let summary = try await backup.restoreStandby(into: dataDirectory)
            return "restored from the pgBackRest repository (\(why); \(summary)); it replays the archive, then streams"
        }
        try await basebackup(conninfo: conninfo, slot: slot)
        return "cloned with pg_basebackup from the primary" + (backup == nil ? "" : " (\(why))")
    }

    /// Whether a clone restores from the repository (``CloneSource``, for what it holds), and why.
    public func cloneSource(backup: PgBackRestTool?, source: CloneSource) async -> (fromBackup: Bool, why: String) {
        var info: PgBackRest.Info? = nil
        if let backup, source == .auto {
            // ignored: a repository that cannot be read means pg_basebackup (the reason says so)
            info = try? await backup.info()
        }
        let (fromBackup, why) = source.restoresFromBackup(configured: backup != nil, info: info)
        return (fromBackup && backup != nil, why)
    }
}
