import BatonCore
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
        try await runner.check(tool("pg_ctl"), ["start", "-D", dataDirectory, "-l", logFile, "-w", "-t", "120"], what: "pg_ctl start")
    }

    public func stop(mode: String = "fast") async throws {
        try await runner.check(tool("pg_ctl"), ["stop", "-D", dataDirectory, "-m", mode, "-w", "-t", "120"], what: "pg_ctl stop")
    }

    /// Fencing: stops PostgreSQL now, whatever state it is in. `pg_ctl stop -m immediate` first; if that
    /// does not finish within a few seconds (a stopped or hung postmaster cannot act on the signal),
    /// SIGKILL the postmaster and every process it started, so that no backend can commit again.
    public func fence() async {
        if let result = try? await runner.run(tool("pg_ctl"), ["stop", "-D", dataDirectory, "-m", "immediate", "-w", "-t", "3"]), result.succeeded {
            return
        }
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let pid = Int32(text.split(separator: "\n").first ?? "")
        else { return }
        kill(pid, SIGKILL)
        for child in PostgresControl.children(of: pid) { kill(child, SIGKILL) }
    }

    /// The processes whose parent is `pid` (from /proc).
    static func children(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [Int32] = []
        for entry in entries {
            guard let candidate = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == pid { found.append(candidate) }
        }
        return found
    }

    public func reload() async throws {
        try await runner.check(tool("pg_ctl"), ["reload", "-D", dataDirectory], what: "pg_ctl reload")
    }

    /// Rewinds a diverged data directory to `source` (a libpq conninfo of the new primary). PostgreSQL 13+
    /// finishes crash recovery first when the directory was not shut down cleanly.
    public func rewind(source: String) async throws {
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
