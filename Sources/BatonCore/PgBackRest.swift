import ConsulAPI
import Foundation

/// Backups with pgBackRest, as pure text and rules: the repository, the stanza (named after the
/// cluster), the commands PostgreSQL runs to archive and fetch WAL, pgBackRest's configuration file, and
/// what its `info` answer says about the backups and the archive.
///
/// Every node has the same repository (a directory every node reaches: NFS, or one machine's disk in
/// the lab) and the same stanza. Only the primary archives (`archive_mode = on`): a standby never pushes
/// a segment, and a node that is promoted archives its new timeline — and first pushes the segments of
/// the old one it holds, so that the archive has no hole where the old primary died before archiving.
public struct PgBackRest: Sendable, Equatable {
    /// The repository (`repo1-path`).
    public var repository: SafePath
    /// pgBackRest's configuration file for this node, written by Baton.
    public var configFile: SafePath
    /// Where pgBackRest logs and keeps its locks on this node (one per node: nodes sharing a machine
    /// must not share locks).
    public var workDirectory: SafePath
    /// The stanza: the cluster's name.
    public var stanza: String
    /// Full backups kept (`repo1-retention-full`); older ones and the WAL only they need are expired.
    public var retentionFull: Int
    /// Processes pgBackRest compresses and copies files with (`process-max`), in a backup and a restore.
    public var processMax: Int
    public var executable: SafePath
    /// pgBackRest's TLS server on this node (`--backup-tls-*`): what a backup from a standby reaches
    /// the primary through. Nil: no server, and `baton backup --from-standby` is refused.
    public var tls: TLSServer?

    public static let defaultExecutable = try! SafePath("/usr/bin/pgbackrest")
    public static let defaultRetentionFull = 2
    public static let defaultProcessMax = 1
    public static let processMaxRange = 1...32

    /// - Throws: a ``ValidationProblem`` for a path a shell command line could not carry as it is.
    public init(
        repository: SafePath, stateDirectory: SafePath, cluster: ClusterName, retentionFull: Int = PgBackRest.defaultRetentionFull,
        processMax: Int = PgBackRest.defaultProcessMax, executable: SafePath = PgBackRest.defaultExecutable
    ) throws(ValidationProblem) {
        for (field, path) in [("--backup-repo", repository), ("--state-dir", stateDirectory), ("the pgBackRest executable", executable)] {
            guard path.value.unicodeScalars.allSatisfy({ Self.plainPathCharacters.contains($0) }) else {
                throw ValidationProblem(
                    "\(field) \(Quote.show(path.value)) is used in PostgreSQL's archive_command: only letters, digits, '/', '.', '_' and '-' are allowed there")
            }
        }
        guard (1...100).contains(retentionFull) else {
            throw ValidationProblem("--backup-retention-full \(retentionFull) must be from 1 to 100 (full backups kept)")
        }
        guard Self.processMaxRange.contains(processMax) else {
            throw ValidationProblem(
                "--backup-process-max \(processMax) must be from \(Self.processMaxRange.lowerBound) to \(Self.processMaxRange.upperBound) (processes a backup or restore copies with; at most the cores to spare)")
        }
        self.repository = repository
        self.configFile = try SafePath(stateDirectory.value + "/pgbackrest.conf")
        self.workDirectory = try SafePath(stateDirectory.value + "/pgbackrest")
        self.stanza = cluster.value
        self.retentionFull = retentionFull
        self.processMax = processMax
        self.executable = executable
    }

    static let plainPathCharacters: Set<Unicode.Scalar> = Set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-".unicodeScalars)

    /// The start of every pgBackRest command line for this node: the executable, its config, the stanza.
    public var command: [String] { [executable.value, "--config=\(configFile.value)", "--stanza=\(stanza)"] }

    /// PostgreSQL's `archive_command` (run by the primary for each finished WAL segment).
    public var archiveCommand: String { command.joined(separator: " ") + " archive-push %p" }
    /// PostgreSQL's `restore_command` (a standby or a restore fetches WAL it cannot stream).
    public var restoreCommand: String { command.joined(separator: " ") + " archive-get %f \"%p\"" }

    /// The lines `baton.conf` gains.
    public var postgresSettings: [String] {
        [
            "# Archiving with pgBackRest (bootstrap --backup pgbackrest): only the primary archives.",
            "archive_mode = on",
            "archive_command = '\(archiveCommand)'",
            "restore_command = '\(restoreCommand)'",
        ]
    }

    /// pgBackRest's configuration for this node: the repository and the local PostgreSQL, and with
    /// ``tls`` its TLS server (listening on the node's `address`).
    public func configuration(pgdata: SafePath, port: TCPPort, socketDirectory: SafePath, osUser: String, address: HostAddress) -> String {
        var lines = [
            "# Written by baton for this node (bootstrap --backup pgbackrest); rewritten when its settings change.",
            "[global]",
            "repo1-path=\(repository.value)",
            "repo1-retention-full=\(retentionFull)",
            "process-max=\(processMax)",
            "log-path=\(workDirectory.value)/log",
            "lock-path=\(workDirectory.value)/lock",
            "log-level-file=info",
            "log-level-console=warn",
            "start-fast=y",
            "",
            "[\(stanza)]",
            "pg1-path=\(pgdata.value)",
            "pg1-port=\(port.value)",
            "pg1-socket-path=\(socketDirectory.value)",
            "pg1-user=\(osUser)",
            "",
        ]
        if let tls {
            lines += [
                "# pgBackRest's TLS server (`pgbackrest server`, run by baton monitor): a backup from a standby",
                "# reaches the primary through it. Clients must show a certificate of the CA below whose CN is",
                "# the cluster's name; they may then act on this cluster's stanza only.",
                "[global:server]",
                "tls-server-address=\(address.value)",
                "tls-server-port=\(tls.port.value)",
                "tls-server-cert-file=\(tls.certificate.value)",
                "tls-server-key-file=\(tls.key.value)",
                "tls-server-ca-file=\(tls.ca.value)",
                "tls-server-auth=\(stanza)=\(stanza)",
                "",
            ]
        }
        return lines.joined(separator: "\n")
    }

    /// pgBackRest's TLS server on a node, and the same certificate as the client a backup from a
    /// standby shows the primary's server.
    public struct TLSServer: Sendable, Equatable {
        /// The node's certificate: its CN the cluster's name (what authorizes it as a client), its
        /// address in a DNS subjectAltName (what a client checks the server by; pgBackRest 2.45 compares
        /// the text and does not read IP entries).
        public var certificate: SafePath
        public var key: SafePath
        /// The CA that signed every node's certificate (checks clients and servers alike).
        public var ca: SafePath
        public var port: TCPPort

        public static let defaultPort = try! TCPPort(8432)

        public init(certificate: SafePath, key: SafePath, ca: SafePath, port: TCPPort = TLSServer.defaultPort) {
            self.certificate = certificate
            self.key = key
            self.ca = ca
            self.port = port
        }
    }

    /// Whether a backup may run on this node from its standby (`baton backup --from-standby`) — this
    /// node has a certificate, another node leads and publishes its TLS server, the local PostgreSQL
    /// streams — and the arguments it adds: pgBackRest's `--backup-standby`, the primary as `pg2`
    /// through its TLS server, this node's certificate as the client's. Else what stops it, and what
    /// to do.
    public func standbyBackup(me: NodeName, leader: NodeName?, leaderRegistration: NodeRegistration?, local: LocalPostgres) throws(ValidationProblem)
        -> [String]
    {
        guard let tls else {
            throw ValidationProblem(
                "this node has no pgBackRest TLS certificate: a backup from a standby reaches the primary through pgBackRest's TLS server — bootstrap every node with --backup-tls-certificate, --backup-tls-key and --backup-tls-ca (docs/operate.md)")
        }
        guard let leader else {
            throw ValidationProblem("nobody leads the cluster now: a backup from a standby needs the primary too; run it again once `baton status` names a leader")
        }
        guard leader != me else {
            throw ValidationProblem("this node (\(me)) leads the cluster: run `baton backup` here without --from-standby, or --from-standby on a streaming standby")
        }
        guard case .standby(_, _, _, true) = local else {
            throw ValidationProblem(
                "this node's PostgreSQL is not a standby streaming from the primary (\(local)): a backup from a standby copies the files of a standby that keeps up; run it on one (`baton status` shows which stream)")
        }
        guard let primary = leaderRegistration, primary.name == leader, let server = primary.backupServer else {
            throw ValidationProblem(
                "the leader \(leader) publishes no pgBackRest TLS server: bootstrap it with --backup-tls-certificate, --backup-tls-key and --backup-tls-ca and restart its monitor")
        }
        return [
            "--backup-standby", "--pg2-host=\(primary.address.value)", "--pg2-host-type=tls", "--pg2-host-port=\(server.port.value)",
            "--pg2-host-cert-file=\(tls.certificate.value)", "--pg2-host-key-file=\(tls.key.value)", "--pg2-host-ca-file=\(tls.ca.value)",
            "--pg2-host-config=\(server.config.value)", "--pg2-path=\(server.pgdata.value)", "--pg2-port=\(primary.port.value)",
            "--pg2-socket-path=\(server.socketDirectory.value)",
        ]
    }

    /// pgBackRest's summary of a restore, from its info-level output: `restore size = 1GB, file total
    /// = 1271` (nil when the output has none).
    public static func restoreSummary(_ output: String) -> String? {
        for line in output.split(separator: "\n").reversed() {
            guard let range = line.range(of: "restore size = ") else { continue }
            return String(line[range.lowerBound...]).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }

    /// What a failed backup's output says, for the operator: its last lines, and before them a line
    /// about a database host pgBackRest could not check (a backup from a standby that cannot reach the
    /// primary's TLS server says why there, then only that it found no primary), with what to do about
    /// a certificate that does not name the host.
    public static func backupFailure(_ output: String) -> String {
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        var shown = lines.filter { $0.contains("unable to check pg") }.suffix(2) + lines.suffix(3)
        if output.contains("in certificate common name or subject alternative names") {
            shown.append(
                "the primary's --backup-tls-certificate must name its address in a DNS subjectAltName (DNS:<address>, for an IP address too: pgBackRest 2.45 compares the text and reads no IP entries)")
        }
        var seen = Set<String>()
        return shown.filter { seen.insert($0).inserted }.joined(separator: " | ")
    }

    /// WAL segments are 16 MB (initdb's default, which Baton's initdb keeps).
    public static let segmentBytes: UInt64 = 16 << 20

    /// A WAL segment file's name (24 hex digits: timeline, then the segment's number in two halves).
    public struct Segment: Sendable, Equatable, Comparable {
        public var name: String
        public var timeline: UInt32
        /// The segment's number: its first byte's LSN over ``PgBackRest/segmentBytes``.
        public var number: UInt64

        public init?(_ name: String) {
            guard name.count == 24, name.unicodeScalars.allSatisfy({ ("0"..."9").contains($0) || ("A"..."F").contains($0) }),
                let timeline = UInt32(name.prefix(8), radix: 16), let log = UInt64(name.dropFirst(8).prefix(8), radix: 16),
                let segment = UInt64(name.suffix(8), radix: 16)
            else { return nil }
            self.name = name
            self.timeline = timeline
            self.number = log * (0x1_0000_0000 / PgBackRest.segmentBytes) + segment
        }

        public static func < (a: Segment, b: Segment) -> Bool { a.name < b.name }
    }

    /// The segments a node promoted to a new timeline pushes to the archive itself: those it holds of
    /// the timelines before, each wholly before the point where its timeline ended (the new timeline's
    /// history file says where). The old primary may have died before archiving them — a standby
    /// receives segments but, with `archive_mode = on`, never archives them. Segments past a
    /// timeline's end are never pushed: they are recycled files of garbage, or the old timeline's last,
    /// partial one (which PostgreSQL archives itself as `.partial`). Pushing one the archive holds with
    /// the same content changes nothing (pgBackRest compares checksums).
    public static func segmentsToPushAfterPromotion(walFiles: [String], history: String) -> [String] {
        var ends: [UInt32: UInt64] = [:]
        for line in history.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: true)
            guard fields.count >= 2, let timeline = UInt32(fields[0].trimmingCharacters(in: .whitespaces)),
                let end = try? LSN(parsing: fields[1].trimmingCharacters(in: .whitespaces))  // ignored: not a history line
            else { continue }
            ends[timeline] = end.value / segmentBytes
        }
        return walFiles.compactMap(Segment.init).filter { segment in ends[segment.timeline].map { segment.number < $0 } ?? false }.sorted().map(\.name)
    }
}

/// Where a new replica's copy of the data comes from (`--clone-from`): the repository, the primary
/// (pg_basebackup), or the repository when it can serve (the default).
public enum CloneSource: String, Sendable, CaseIterable {
    case auto
    case backup
    case primary

    /// Whether a clone restores from the repository, and why: `backup` always (it fails if it
    /// cannot), `primary` never, `auto` when the repository holds a backup whose WAL the archive
    /// carries on from without a hole (the archive reaches at least the backup's last segment), so
    /// that the copy can replay to where streaming takes over. Without backups configured, never.
    public func restoresFromBackup(configured: Bool, info: PgBackRest.Info?) -> (Bool, String) {
        guard configured else { return (false, "no backups are configured") }
        switch self {
        case .primary: return (false, "--clone-from primary")
        case .backup: return (true, "--clone-from backup")
        case .auto:
            guard let info else { return (false, "the repository's backups could not be read") }
            guard info.status == "ok", let newest = info.backups.last(where: { !$0.error }) else {
                return (false, "the repository holds no usable backup (stanza \(info.status))")
            }
            guard let archived = info.archiveMax, archived >= newest.walStop else {
                return (false, "the archive does not reach the end of backup \(newest.label)")
            }
            return (true, "backup \(newest.label) and the archive up to \(archived)")
        }
    }
}

extension PgBackRest {
    /// One backup as `pgbackrest info --output=json` describes it.
    public struct Backup: Sendable, Equatable {
        public var label: String
        public var type: String
        public var started: Int64
        public var stopped: Int64
        /// The database's size, and what the backup added to the repository (compressed, deduplicated).
        public var databaseBytes: UInt64
        public var repositoryBytes: UInt64
        public var walStart: String
        public var walStop: String
        /// pgBackRest's own error flag: the backup found a page checksum or other error.
        public var error: Bool

        public init(
            label: String, type: String, started: Int64, stopped: Int64, databaseBytes: UInt64, repositoryBytes: UInt64, walStart: String,
            walStop: String, error: Bool
        ) {
            self.label = label
            self.type = type
            self.started = started
            self.stopped = stopped
            self.databaseBytes = databaseBytes
            self.repositoryBytes = repositoryBytes
            self.walStart = walStart
            self.walStop = walStop
            self.error = error
        }
    }

    /// The stanza as `info` sees it: its backups, oldest first, the archive's WAL range and status.
    public struct Info: Sendable, Equatable {
        public var status: String
        public var backups: [Backup]
        public var archiveMin: String?
        public var archiveMax: String?

        public init(status: String, backups: [Backup], archiveMin: String?, archiveMax: String?) {
            self.status = status
            self.backups = backups
            self.archiveMin = archiveMin
            self.archiveMax = archiveMax
        }
    }

    /// Reads `pgbackrest info --output=json` for `stanza`.
    /// - Throws: a ``ValidationProblem`` for an answer that is not pgBackRest's.
    public static func info(json text: [UInt8], stanza: String) throws(ValidationProblem) -> Info {
        let json: JSONValue
        do { json = try JSONValue.parse(text) } catch { throw ValidationProblem("pgbackrest info did not answer JSON: \(error)") }
        guard let stanzas = json.arrayValue else { throw ValidationProblem("pgbackrest info did not answer a list of stanzas") }
        guard let entry = stanzas.first(where: { $0.member("name")?.stringValue == stanza }) else {
            return Info(status: "missing stanza", backups: [], archiveMin: nil, archiveMax: nil)
        }
        let status = entry.member("status")?.member("message")?.stringValue ?? "unknown"
        var backups: [Backup] = []
        for item in entry.member("backup")?.arrayValue ?? [] {
            guard let label = item.member("label")?.stringValue else { continue }
            backups.append(
                Backup(
                    label: label, type: item.member("type")?.stringValue ?? "?",
                    started: item.member("timestamp")?.member("start")?.int64Value ?? 0,
                    stopped: item.member("timestamp")?.member("stop")?.int64Value ?? 0,
                    databaseBytes: item.member("info")?.member("size")?.uint64Value ?? 0,
                    repositoryBytes: item.member("info")?.member("repository")?.member("delta")?.uint64Value ?? 0,
                    walStart: item.member("archive")?.member("start")?.stringValue ?? "",
                    walStop: item.member("archive")?.member("stop")?.stringValue ?? "",
                    error: item.member("error")?.boolValue ?? false))
        }
        let archives = entry.member("archive")?.arrayValue ?? []
        let min = archives.compactMap { $0.member("min")?.stringValue }.min()
        let max = archives.compactMap { $0.member("max")?.stringValue }.max()
        return Info(status: status, backups: backups.sorted { $0.started < $1.started }, archiveMin: min, archiveMax: max)
    }
}
