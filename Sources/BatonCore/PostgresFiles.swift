/// The PostgreSQL files Baton manages, as pure text: `baton.conf` (included from postgresql.conf), a
/// block at the top of pg_hba.conf and one in pg_ident.conf, and the replication passfile.
public enum PostgresFiles {
    public static let replicationUser = "replicator"
    public static let settingsFile = "baton.conf"
    public static let includeLine = "include_if_exists = 'baton.conf'\t# added by baton"

    /// Where a standby streams from.
    public struct Upstream: Sendable, Equatable {
        public var host: HostAddress
        public var port: TCPPort
        public var slot: String
        public var passfile: SafePath
        public var applicationName: NodeName
        public init(host: HostAddress, port: TCPPort, slot: String, passfile: SafePath, applicationName: NodeName) {
            self.host = host
            self.port = port
            self.slot = slot
            self.passfile = passfile
            self.applicationName = applicationName
        }

        public var conninfo: String {
            "host=\(host.value) port=\(port.value) user=\(replicationUser) passfile=\(passfile.value) application_name=\(applicationName.value) connect_timeout=3 keepalives_idle=5 keepalives_interval=2 keepalives_count=3"
        }
    }

    /// `baton.conf`: what replication, failover and pg_rewind need. `upstream` makes it a standby's.
    /// - Parameter synchronousStandbyNames: the primary's `synchronous_standby_names` (synchronous mode),
    ///   built by ``SynchronousReplication`` from validated node names.
    /// - Parameter archive: archiving and WAL fetching with pgBackRest (bootstrap `--backup pgbackrest`).
    public static func settings(
        port: TCPPort, listen: String, socketDirectory: SafePath, upstream: Upstream?, synchronousStandbyNames: String = "",
        archive: PgBackRest? = nil
    ) -> String {
        var lines = [
            "# Managed by baton: rewritten on bootstrap, follow and rejoin. Put your own settings in postgresql.conf.",
            "listen_addresses = '\(listen)'",
            "port = \(port.value)",
            "unix_socket_directories = '\(socketDirectory.value)'",
            "wal_level = replica",
            "max_wal_senders = 10",
            "max_replication_slots = 10",
            "hot_standby = on",
            "hot_standby_feedback = on",
            "wal_log_hints = on",
            "wal_keep_size = '256MB'",
            "# Retry a lost upstream quickly (the default 5s stalls a replica after a failover).",
            "wal_retrieve_retry_interval = '500ms'",
            "password_encryption = 'scram-sha-256'",
        ]
        if let archive { lines += archive.postgresSettings }
        if !synchronousStandbyNames.isEmpty {
            lines.append("synchronous_standby_names = '\(synchronousStandbyNames)'")
        }
        if let upstream {
            lines.append("primary_conninfo = '\(upstream.conninfo)'")
            lines.append("primary_slot_name = '\(upstream.slot)'")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `baton.conf` of a point-in-time clone (`baton clone`): a standalone PostgreSQL on `port`, local
    /// connections only, that never archives into the cluster's repository and follows nobody.
    public static func cloneSettings(port: TCPPort, socketDirectory: SafePath) -> String {
        [
            "# A point-in-time clone made by `baton clone`: standalone, never part of the cluster it was taken from.",
            "listen_addresses = ''",
            "port = \(port.value)",
            "unix_socket_directories = '\(socketDirectory.value)'",
            "archive_mode = off",
            "hot_standby = on",
        ].joined(separator: "\n") + "\n"
    }

    /// postgresql.conf with the includes of the cluster-wide parameters (``PostgresParameters/file``)
    /// and then of `baton.conf`, last, so that Baton's own settings win; added when missing, moved to
    /// the end when elsewhere, everything else kept as the operator wrote it.
    public static func withInclude(_ postgresqlConf: String) -> String {
        var lines = postgresqlConf.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        let wanted = [PostgresParameters.includeLine, includeLine]
        if lines.suffix(2).elementsEqual(wanted) { return postgresqlConf }
        lines.removeAll { $0.hasPrefix("include_if_exists = '\(PostgresParameters.file)'") || $0.hasPrefix("include_if_exists = 'baton.conf'") }
        return (lines + wanted).joined(separator: "\n") + "\n"
    }

    /// pg_hba.conf lines: local superuser access for Baton (peer, mapped), and the replication role from
    /// the cluster's networks only (replication, and the `postgres` database for pg_rewind).
    public static func hbaLines(allowedNetworks: [CIDR]) -> [String] {
        var lines = [
            "local   all           postgres                     peer map=baton",
            "local   replication   postgres                     peer map=baton",
        ]
        for network in allowedNetworks {
            lines.append("host    replication   \(replicationUser)   \(network.text)   scram-sha-256")
            lines.append("host    postgres      \(replicationUser)   \(network.text)   scram-sha-256")
        }
        return lines
    }

    /// pg_ident.conf lines mapping the OS users Baton runs as to the `postgres` role.
    public static func identLines(osUsers: [String]) -> [String] {
        Array(Set(osUsers + ["root", "postgres"])).sorted().map { "baton   \($0)   postgres" }
    }

    static let blockStart = "# BEGIN baton (managed: lines up to END baton are rewritten)"
    static let blockEnd = "# END baton"

    /// Puts `lines` in Baton's block at the top of `text` (pg_hba matches the first line that fits),
    /// replacing an earlier block and keeping everything else as the operator wrote it.
    public static func withManagedBlock(_ text: String, lines: [String]) -> String {
        var rest: [Substring] = []
        var inside = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == blockStart { inside = true; continue }
            if inside { if line == blockEnd { inside = false }; continue }
            rest.append(line)
        }
        let block = [blockStart] + lines + [blockEnd]
        return (block + rest.map(String.init)).joined(separator: "\n")
    }

    /// A libpq passfile line for the replication role, with `:` and `\` escaped.
    public static func passfile(password: String) -> String {
        let escaped = password.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
        return "*:*:*:\(replicationUser):\(escaped)\n"
    }

    /// The replication password back from a passfile ``passfile(password:)`` wrote; nil when it holds no
    /// line for the replication role.
    public static func password(fromPassfile text: String) -> String? {
        for line in text.split(separator: "\n") {
            var fields: [String] = [""]
            var escaped = false
            for c in line {
                if escaped {
                    fields[fields.count - 1].append(c)
                    escaped = false
                } else if c == "\\" {
                    escaped = true
                } else if c == ":" {
                    fields.append("")
                } else {
                    fields[fields.count - 1].append(c)
                }
            }
            if fields.count == 5, fields[3] == replicationUser, !fields[4].isEmpty { return fields[4] }
        }
        return nil
    }

    /// The replication password read from a file or the environment: one line, no control characters.
    public static func validatePassword(_ password: String, source: String) throws(ValidationProblem) -> String {
        var p = password
        if p.hasSuffix("\n") { p.removeLast() }
        if p.hasSuffix("\r") { p.removeLast() }
        guard !p.isEmpty else { throw ValidationProblem("the replication password from \(source) is empty") }
        guard !p.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw ValidationProblem("the replication password from \(source) contains a line break or control character")
        }
        return p
    }
}
