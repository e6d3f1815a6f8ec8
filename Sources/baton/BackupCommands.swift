import ArgumentParser
import BatonAgent
import BatonConsul
import BatonCore
import BatonSettings
import Foundation

/// The node's settings and a Consul client for the backup commands (`--config`, as the other node
/// commands read it).
private func backups(_ options: NodeOptions, command: String) throws -> Backups {
    guard let path = options.path else {
        throw AgentError("no Baton config: give --config (the file `baton bootstrap` wrote) or create /etc/baton/baton.yaml")
    }
    let settings = try MonitorCommand.loadOrExit(path, command: command)
    let consul: ConsulConfiguration
    do { consul = try ConsulConfiguration.resolve(address: options.consul ?? settings.consulAddresses) } catch { throw AgentError(error.message) }
    return try Backups(settings: settings, client: ConsulClient(consul))
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up the cluster with pgBackRest, on the leader or from a standby.",
        discussion: """
            Runs pgBackRest's backup of this node's PostgreSQL, which must be the primary (run it on the leader: \
            `baton status` names it), printing pgBackRest's progress, then the backup it made. With --from-standby \
            it runs on a streaming standby instead: pgBackRest copies the files from this standby and only starts \
            and stops the backup on the primary, through the primary's pgBackRest TLS server (every node bootstrapped \
            with --backup-tls-certificate, --backup-tls-key and --backup-tls-ca; its monitor runs the server). The \
            repository and retention are those bootstrap was given (--backup pgbackrest --backup-repo PATH); the \
            outcome is recorded in the cluster's events. Exit status 1 when the backup failed, or this node does not \
            lead (is not a streaming standby, with --from-standby).
            """)
    @OptionGroup var node: NodeOptions
    @Option(help: "full, diff (changes since the last full) or incr (since the last backup of any type).") var type = "full"
    @Flag(help: "Run on this streaming standby, sparing the primary the copying (pgBackRest's backup-standby).") var fromStandby = false

    func run() async throws {
        try await reportingErrors("backup") {
            let backups = try backups(node, command: "backup")
            let made = try await backups.backup(type: type, fromStandby: fromStandby) { print($0) }
            print("backup \(made.label) (\(made.type)) done: WAL \(made.walStart) … \(made.walStop)")
        }
    }
}

struct BackupsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backups", abstract: "List the cluster's backups in the pgBackRest repository, with sizes and times.")
    @OptionGroup var node: NodeOptions

    func run() async throws {
        try await reportingErrors("backups") {
            let backups = try backups(node, command: "backups")
            for line in Backups.table(try await backups.info()) { print(line) }
        }
    }
}

struct CloneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clone",
        abstract: "Restore a point-in-time copy of the cluster into a new directory, to take back dropped data.",
        discussion: """
            Restores the latest backup before the target from the pgBackRest repository into --pgdata (new or \
            empty), replays the archived WAL up to the target and starts it on --port as a standalone \
            PostgreSQL (local connections only, over this node's socket directory). It never archives into \
            the cluster's repository and never joins the cluster. Stop it with pg_ctl when done.
            """)
    @OptionGroup var node: NodeOptions
    @Option(help: "Stop at this time (PostgreSQL's timestamptz text, e.g. '2026-12-07 12:00:00+00').") var toTime: String?
    @Option(help: "Stop at this WAL position (e.g. 0/3000060).") var toLsn: String?
    @Option(help: "The new data directory (absolute path, missing or empty).") var pgdata: String
    @Option(help: "The port the copy listens on.") var port: Int

    func run() async throws {
        try await reportingErrors("clone") {
            let target: Backups.Target
            switch (toTime, toLsn) {
            case (let time?, nil):
                guard !time.isEmpty, !time.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "'" || $0 == "\"" || $0 == "\\" }) else {
                    throw ValidationProblem("--to-time \(Quote.show(time)) must be a time such as '2026-12-07 12:00:00+00'")
                }
                target = .time(time)
            case (nil, let lsn?): target = .lsn(try LSN(parsing: lsn))
            default: throw ValidationProblem("give one of --to-time or --to-lsn")
            }
            let directory = try SafePath(pgdata, field: "--pgdata")
            let listen = try TCPPort(port, field: "--port")
            let backups = try backups(node, command: "clone")
            for line in try await backups.clone(to: target, pgdata: directory, port: listen, progress: { print($0) }) { print(line) }
        }
    }
}
