import BatonConsul
import BatonCore
import BatonPostgres
import BatonSettings
import ConsulAPI
import Foundation

/// `baton backup`, `baton backups` and `baton clone`: pgBackRest's backups of the cluster, run where
/// they belong (a backup on the leader, a clone on any node), with the cluster's own settings.
public struct Backups: Sendable {
    public let settings: BootstrapSettings
    public let client: ConsulClient
    let tool: PgBackRestTool

    /// - Throws: ``AgentError`` when this node was bootstrapped without `--backup pgbackrest`.
    public init(settings: BootstrapSettings, client: ConsulClient) throws {
        guard let backup = settings.backup else {
            throw AgentError(
                "this node has no backups configured: bootstrap it with --backup pgbackrest --backup-repo PATH (or add backup: pgbackrest and backup-repo: PATH to its Baton config and rerun bootstrap)")
        }
        self.settings = settings
        self.client = client
        self.tool = PgBackRestTool(settings: backup, osUser: settings.pgOSUser)
    }

    public static let types = ["full", "diff", "incr"]

    /// Backs up the cluster from this node, each line of pgBackRest's progress handed to `progress`;
    /// records an event with the outcome. This node must lead (pgBackRest backs up the primary), or
    /// with `fromStandby` be a streaming standby: pgBackRest then copies the files from this standby and
    /// only starts and stops the backup on the primary, through the primary's TLS server
    /// (``PgBackRest/standbyBackup(me:leader:leaderRegistration:local:)``).
    /// - Returns: the backup pgBackRest made.
    public func backup(type: String, fromStandby: Bool = false, progress: @escaping @Sendable (String) -> Void) async throws -> PgBackRest.Backup {
        guard Self.types.contains(type) else { throw AgentError("--type must be one of \(Self.types.joined(separator: ", ")), not \(Quote.show(type))") }
        let keys = settings.keys
        let leaderKey = try await client.get(keys.leader, .consistent).value
        // ignored: a holder that is not a node's name is nobody this node could back up from
        let leader = leaderKey.flatMap { $0.session != nil ? try? NodeName($0.stringValue) : nil }
        var arguments: [String] = []
        if fromStandby {
            var registration: NodeRegistration? = nil
            if let leader, let pair = try await client.get(keys.node(leader), .consistent).value {
                // ignored: a registration that cannot be read is one that publishes no server (the refusal says so)
                registration = try? NodeRegistration(bytes: pair.value, key: pair.key)
            }
            let database = PostgresNode(settings: settings)
            let local = await database.observe()
            database.close()
            do throws(ValidationProblem) {
                arguments = try tool.settings.standbyBackup(me: settings.node, leader: leader, leaderRegistration: registration, local: local)
            } catch {
                throw AgentError(error.message)
            }
        } else if leader != settings.node {
            throw AgentError(
                "this node (\(settings.node)) does not lead the cluster (\(leader?.value ?? "nobody") does): run `baton backup` on the leader, whose PostgreSQL is the primary, or `baton backup --from-standby` on a streaming standby")
        }
        let before = Set(try await tool.info().backups.map(\.label))
        let result = try await tool.backup(type: type, arguments: arguments, progress: progress)
        let made = try await tool.info().backups.last { !before.contains($0.label) }
        guard result.succeeded, let made else {
            let detail = PgBackRest.backupFailure(result.output)
            // ignored: the error below says it
            try? await recordEvent(ClusterEvent(time: rfc3339Now(), node: settings.node, kind: "backup", detail: "\(type) backup failed: \(detail)"), keys: keys, client: client)
            throw AgentError("pgbackrest \(type) backup failed (exit \(result.status)): \(detail)")
        }
        let event = ClusterEvent(
            time: rfc3339Now(), node: settings.node, kind: "backup",
            detail:
                "\(made.type) backup \(made.label)\(fromStandby ? " from the standby \(settings.node)" : ""): \(StatusView.bytes(made.databaseBytes)) of database, \(StatusView.bytes(made.repositoryBytes)) added to the repository in \(made.stopped - made.started) s"
        )
        // ignored: the backup is made; the event is the history's, not the backup's
        try? await recordEvent(event, keys: keys, client: client)
        return made
    }

    /// The stanza's backups and archive, as pgBackRest's `info` reports them.
    public func info() async throws -> PgBackRest.Info { try await tool.info() }

    /// A table of the backups, oldest first, and the archive's range.
    public static func table(_ info: PgBackRest.Info) -> [String] {
        var lines = ["stanza status: \(info.status)"]
        if let min = info.archiveMin, let max = info.archiveMax { lines.append("archived WAL: \(min) … \(max)") }
        guard !info.backups.isEmpty else { return lines + ["no backups yet: run `baton backup` on the leader"] }
        let header = ["label", "type", "started", "seconds", "database", "added", "WAL from", "WAL to"]
        var rows = [header]
        for b in info.backups {
            rows.append([
                b.label + (b.error ? " (errors!)" : ""), b.type, TimeText.rfc3339(seconds: b.started), String(b.stopped - b.started),
                StatusView.bytes(b.databaseBytes), StatusView.bytes(b.repositoryBytes), b.walStart, b.walStop,
            ])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return lines + rows.map { row in row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
    }

    /// Where a point-in-time clone stops.
    public enum Target: Sendable, Equatable {
        case time(String)
        case lsn(LSN)
    }

    /// Restores the latest backup before `target` into `pgdata` (missing or empty) as a standalone
    /// PostgreSQL on `port` (local connections only, over this node's socket directory), started and
    /// promoted once it reached the target: a copy to take dropped data from. It never archives into
    /// the cluster's repository, streams from or is registered with the cluster.
    /// - Returns: how to connect to it and stop it.
    public func clone(to target: Target, pgdata: SafePath, port: TCPPort, progress: @escaping @Sendable (String) -> Void) async throws -> [String] {
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: pgdata.value), !entries.isEmpty {
            throw AgentError("\(pgdata.value) is not empty: a clone goes into a new or empty directory (nothing was changed)")
        }
        guard pgdata.value != settings.pgdata.value else { throw AgentError("--pgdata is this node's own data directory: give a new one") }
        try AtomicFile.ensureDirectory(pgdata.value, mode: 0o700, owner: settings.pgOSUser)
        let restoreTarget: (type: String, value: String)
        switch target {
        case .time(let text): restoreTarget = ("time", text)
        case .lsn(let lsn): restoreTarget = ("lsn", lsn.description)
        }
        let restored = try await tool.restore(into: pgdata.value, target: restoreTarget, progress: progress)
        guard restored.succeeded else {
            throw AgentError("pgbackrest restore failed (exit \(restored.status)): \(restored.output.split(separator: "\n").suffix(3).joined(separator: " | "))")
        }
        // The copy's own settings: no archiving into the cluster's repository, no upstream, its own port.
        let conf = PostgresFiles.cloneSettings(port: port, socketDirectory: settings.pgSocketDirectory)
        try AtomicFile.write(conf, to: pgdata.value + "/" + PostgresFiles.settingsFile, mode: 0o600, owner: settings.pgOSUser)
        try? FileManager.default.removeItem(atPath: pgdata.value + "/standby.signal")  // ignored: a backup of a primary has none
        let control = PostgresControl(binDirectory: settings.pgBindir.value, dataDirectory: pgdata.value, osUser: settings.pgOSUser)
        let log = pgdata.value + "/clone.log"
        do { try await control.start(logFile: log) } catch {
            // ignored: without its log the error says where to look
            let tail = PostgresLog.reason((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
            throw AgentError(
                "the clone in \(pgdata.value) did not start (a recovery that cannot reach the target — WAL missing from the archive, a time before the first backup — stops it): \(tail); its whole log: \(log)")
        }
        let conninfo = ConnInfo.make([
            ("host", settings.pgSocketDirectory.value), ("port", String(port.value)), ("user", "postgres"), ("dbname", "postgres"),
            ("connect_timeout", "5"), ("application_name", "baton-clone"),
        ])
        let deadline = ContinuousClock.now + .seconds(3600)
        while true {
            if let connection = try? await PostgresConnection.connect(conninfo) {
                let recovering = try? await connection.scalar("SELECT pg_is_in_recovery()")
                connection.close()
                if recovering == "f" { break }
            }
            guard try await control.isRunning() else {
                // ignored: without its log the error says where to look
                let tail = PostgresLog.reason((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
                let hint =
                    tail.contains("before configured recovery target")
                    ? "the archive holds no commit after the target, so recovery cannot stop there: give an earlier time or position" : "see its log"
                throw AgentError("the clone in \(pgdata.value) stopped during its recovery (\(hint)): \(tail); its whole log: \(log)")
            }
            guard ContinuousClock.now < deadline else {
                throw AgentError("the clone in \(pgdata.value) did not finish its recovery within an hour; it still runs (stop it with pg_ctl); see \(log)")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        return [
            "clone of \(settings.cluster) at \(restoreTarget.type) \(restoreTarget.value) runs in \(pgdata.value) on port \(port.value) (local connections only)",
            "connect: psql -h \(settings.pgSocketDirectory.value) -p \(port.value) -U postgres",
            "stop it: \(settings.pgBindir.value)/pg_ctl stop -D \(pgdata.value) (as \(settings.pgOSUser)); its log: \(log)",
        ]
    }
}
