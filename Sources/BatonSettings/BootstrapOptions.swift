import BatonCore
import Foundation
import Yams

/// An option's value as given on the command line or in the YAML config file, before validation.
public enum RawValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case list([String])
}

/// The options of `baton bootstrap`: every one settable as a `--flag` or as the same name in the
/// YAML file given with `--config`; flags override the file.
public enum BootstrapOption {
    public enum Kind: Sendable { case string, int, bool, list }

    public static let all: [String: Kind] = [
        "cluster": .string, "node-name": .string, "address": .string, "consul": .string, "pgdata": .string, "pg-port": .int,
        "pg-bindir": .string, "pg-os-user": .string, "pg-socket-dir": .string, "pg-listen": .string,
        "replication-password-file": .string, "allowed-network": .list, "virtual-ip": .string, "interface": .string,
        "virtual-router-id": .int, "keepalived-conf": .string, "pgbouncer-ini": .string, "pgbouncer-port": .int,
        "pgbouncer-auth-file": .string, "pgbouncer-listen": .string, "state-dir": .string, "priority": .int, "location": .string, "event-command": .string,
        "templates-dir": .string, "force-clone": .bool, "consul-create": .bool, "consul-join": .list,
        "consul-bootstrap-expect": .int, "consul-data-dir": .string, "consul-config-dir": .string, "consul-start-command": .list,
        "baton-executable": .string, "baton-config": .string, "streaming-timeout": .int, "kernel-watchdog": .string,
        "kernel-watchdog-device": .string, "api-listen": .string, "api-tls-certificate": .string, "api-tls-key": .string,
        "api-tls-client-ca": .string, "vrrp-unicast": .bool, "keepalived-pid-file": .string,
        "max-slot-wal-keep-size": .string, "log-format": .string, "read-only-databases": .list, "read-only-suffix": .string,
        "read-only-max-lag": .string, "backup": .string, "backup-repo": .string, "backup-retention-full": .int, "backup-process-max": .int,
        "backup-tls-certificate": .string, "backup-tls-key": .string, "backup-tls-ca": .string, "backup-tls-port": .int, "clone-from": .string,
    ]

    /// Reads a YAML config file: a mapping of option names to scalars or lists. Unknown keys and wrong
    /// types are errors, all reported at once.
    public static func load(yaml text: String, source: String) throws(ValidationProblems) -> [String: RawValue] {
        let node: Any?
        do { node = try Yams.load(yaml: text) } catch {
            throw ValidationProblems([ValidationProblem("\(source) is not valid YAML: \(error)")])
        }
        guard let node else { return [:] }
        guard let mapping = node as? [String: Any] else {
            throw ValidationProblems([ValidationProblem("\(source) must be a mapping of option names to values, e.g. `cluster: main`")])
        }
        var problems = ProblemCollector()
        var values: [String: RawValue] = [:]
        for key in mapping.keys.sorted() {
            guard let kind = all[key] else {
                let hint = all.keys.first { $0.replacingOccurrences(of: "-", with: "") == key.replacingOccurrences(of: "_", with: "").replacingOccurrences(of: "-", with: "").lowercased() }
                problems.add("\(source): unknown option \(Quote.show(key))" + (hint.map { " (did you mean \($0)?)" } ?? ""))
                continue
            }
            let value = mapping[key]
            switch (kind, value) {
            case (.string, let s as String): values[key] = .string(s)
            case (.string, let i as Int): values[key] = .string(String(i))
            case (.int, let i as Int): values[key] = .int(i)
            case (.bool, let b as Bool): values[key] = .bool(b)
            case (.list, let s as String): values[key] = .list(s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            case (.list, let items as [Any]):
                let strings = items.compactMap { $0 as? String }
                if strings.count == items.count { values[key] = .list(strings) } else { problems.add("\(source): \(key) must be a list of strings") }
            default:
                problems.add("\(source): \(key) must be \(kind == .int ? "an integer" : kind == .bool ? "true or false" : kind == .list ? "a list" : "a string")")
            }
        }
        try problems.throwIfAny()
        return values
    }
}

/// Whether this node creates the cluster or joins it.
public enum BootstrapMode: Sendable, Equatable {
    case master
    /// Consul HTTP addresses of the cluster; one reachable is enough.
    case join([String])
}

/// Every setting of a bootstrap, validated.
public struct BootstrapSettings: Sendable {
    public var mode: BootstrapMode
    public var cluster: ClusterName
    public var node: NodeName
    public var address: HostAddress
    public var consulAddresses: String
    public var pgdata: SafePath
    public var pgPort: TCPPort
    public var pgBindir: SafePath
    public var pgOSUser: String
    public var pgSocketDirectory: SafePath
    public var pgListen: String
    public var replicationPasswordSource: PasswordSource
    public var allowedNetworks: [CIDR]
    public var virtualIP: CIDR?
    public var interface: String?
    public var virtualRouterID: Int
    public var keepalivedConf: SafePath
    public var pgbouncerIni: SafePath
    public var pgbouncerPort: TCPPort
    public var pgbouncerAuthFile: SafePath
    public var pgbouncerListen: String
    public var stateDirectory: SafePath
    public var priority: Int
    public var location: String
    public var templatesDirectory: SafePath?
    public var forceClone: Bool
    public var consulAgent: ConsulAgentSettings?
    public var batonExecutable: SafePath
    public var batonConfig: SafePath
    public var streamingTimeout: Int
    /// Run with each event the monitor records (`KIND NODE TIME DETAIL`), like repmgr's
    /// event_notification_command.
    public var eventCommand: SafePath?
    /// Whether the watchdog also uses the kernel's watchdog device, which resets a frozen machine.
    public var kernelWatchdog: KernelWatchdogMode = .off
    public var kernelWatchdogDevice: SafePath = try! SafePath("/dev/watchdog")
    /// How the monitor and the pgbouncer agent write their logs (`log-format: text|json`).
    public var logFormat: LogFormat = .text
    /// Read-only aliases in this node's pgbouncer: for each of these databases `<db><suffix>`, routed to
    /// this node's standby while it streams within `readOnlyMaximumLag` bytes of the primary, else to
    /// the primary (``ReadOnlyRouting``). Empty: no aliases.
    public var readOnlyDatabases: [String] = []
    public var readOnlySuffix = "_ro"
    public var readOnlyMaximumLag: UInt64 = 16 << 20
    /// Where the monitor's HTTP API listens (`--api-listen HOST:PORT`; default this node's address, port 8008).
    public var apiListen = APIListen(host: "0.0.0.0", port: try! TCPPort(8008))
    /// TLS for the HTTP API: certificate and key, and the CA client certificates must be signed by.
    public var apiTLS: APITLS?
    /// keepalived talks to its peers by unicast (`unicast_peer`: the other nodes' addresses, kept up to
    /// date by the monitor) instead of multicast, which many networks drop.
    public var vrrpUnicast = false
    /// Where keepalived keeps its PID: the monitor sends it SIGHUP after changing the unicast peers.
    public var keepalivedPidFile: SafePath = try! SafePath("/run/keepalived.pid")
    /// The cluster's `max_slot_wal_keep_size`, stored by the node that creates the cluster (a bound on
    /// the WAL a replication slot of a node gone for good can hold back).
    public var maxSlotWalKeepSize = PostgresParameters.defaultMaxSlotWalKeepSize
    /// Backups with pgBackRest (`--backup pgbackrest --backup-repo PATH`): archiving on the primary, WAL
    /// fetched from the repository by standbys, `baton backup`. Nil: no backups.
    public var backup: PgBackRest?
    /// Where a clone (a join, `baton reinit`, a rejoin pg_rewind cannot do) copies the data from.
    public var cloneFrom: CloneSource = .auto

    /// How the other nodes reach this node's API.
    public var apiAddress: NodeAPIAddress {
        let host = apiListen.host == "0.0.0.0" || apiListen.host == "::" ? address : ((try? HostAddress(apiListen.host)) ?? address)
        return NodeAPIAddress(tls: apiTLS != nil, host: host, port: apiListen.port)
    }

    /// Where this node's pgBackRest TLS server answers (nil: it runs none), for its registration.
    public var backupServer: BackupServerAddress? {
        guard let backup, let tls = backup.tls else { return nil }
        return BackupServerAddress(port: tls.port, config: backup.configFile, pgdata: pgdata, socketDirectory: pgSocketDirectory)
    }

    /// This node's registration in the cluster, with the role and upstream it has.
    public func registration(role: NodeRole, upstream: NodeName?) -> NodeRegistration {
        NodeRegistration(
            name: node, address: address, port: pgPort, role: role, upstream: upstream, priority: priority, location: location, api: apiAddress,
            backupServer: backupServer)
    }

    public var keys: ClusterKeys { ClusterKeys(cluster: cluster) }
    public var passfile: SafePath { try! SafePath(stateDirectory.value + "/pgpass") }
    public var postgresLog: String { stateDirectory.value + "/postgresql.log" }
}

/// Whether a node's watchdog also drives the kernel's watchdog device (like Patroni's `watchdog.mode`).
/// How the daemons write their log lines on standard error.
public enum LogFormat: String, Sendable, CaseIterable {
    /// logfmt: `ts=… level=info msg="…" key=value`.
    case text
    /// One JSON object a line with fixed keys (time, level, node, cluster, event, reason, message),
    /// for log shippers that should need no parser.
    case json
}

public enum KernelWatchdogMode: String, Sendable, CaseIterable {
    /// Not used.
    case off
    /// Used when the device can be opened; the node leads without it otherwise.
    case automatic
    /// The node never leads unless the device is open and accepted its timeout.
    case required
}

/// The address and port the node API listens on.
public struct APIListen: Sendable, Equatable {
    /// An IP address, or 0.0.0.0 / :: for every address.
    public var host: String
    public var port: TCPPort

    public init(host: String, port: TCPPort) {
        self.host = host
        self.port = port
    }

    /// `HOST:PORT` (an IPv6 host in brackets).
    public init(parsing text: String) throws(ValidationProblem) {
        guard let colon = text.lastIndex(of: ":"), let number = Int(text[text.index(after: colon)...]) else {
            throw ValidationProblem("--api-listen \(Quote.show(text)) must be HOST:PORT, e.g. 198.18.0.1:8008")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard IPAddress.parse(host) != nil else { throw ValidationProblem("--api-listen \(Quote.show(text)): the host must be an IP address") }
        self.init(host: host, port: try TCPPort(number, field: "--api-listen"))
    }

    public var text: String { host.contains(":") ? "[\(host)]:\(port.value)" : "\(host):\(port.value)" }
}

/// The node API's TLS files.
public struct APITLS: Sendable, Equatable {
    public var certificate: SafePath
    public var key: SafePath
    public var clientCA: SafePath?
}

/// Where the replication password comes from: a file, or an environment variable. Never a flag.
public enum PasswordSource: Sendable, Equatable {
    case file(SafePath)
    case environment(String)

    public var description: String {
        switch self {
        case .file(let p): return "file \(p.value)"
        case .environment(let name): return "environment variable \(name)"
        }
    }
}

/// How Baton manages a real Consul agent, when asked to (`--consul-create` / `--consul-join`).
public struct ConsulAgentSettings: Sendable, Equatable {
    public var create: Bool
    public var retryJoin: [HostAddress]
    public var bootstrapExpect: Int
    public var dataDirectory: SafePath
    public var configDirectory: SafePath
    public var startCommand: [String]
}

extension BootstrapSettings {
    public static let passwordVariable = "BATON_REPLICATION_PASSWORD"

    /// Validates merged options in one pass and reports every problem at once.
    public static func validate(mode: BootstrapMode, options o: [String: RawValue], environment: [String: String], hostname: String)
        throws(ValidationProblems) -> BootstrapSettings
    {
        var p = ProblemCollector()
        func string(_ k: String) -> String? { if case .string(let s)? = o[k] { return s } else { return nil } }
        func int(_ k: String) -> Int? { if case .int(let i)? = o[k] { return i } else { return nil } }
        func bool(_ k: String) -> Bool { if case .bool(let b)? = o[k] { return b } else { return false } }
        func list(_ k: String) -> [String]? { if case .list(let l)? = o[k] { return l } else { return nil } }
        func path(_ k: String, _ fallback: String) -> SafePath? { p.check { () throws(ValidationProblem) in try SafePath(string(k) ?? fallback, field: "--\(k)") } }

        let cluster = p.check { () throws(ValidationProblem) in try ClusterName(string("cluster") ?? "main") }
        let node = p.check { () throws(ValidationProblem) in try NodeName(string("node-name") ?? hostname.lowercased(), field: "--node-name") }
        var address: HostAddress? = nil
        if let a = string("address") {
            address = p.check { () throws(ValidationProblem) in try HostAddress(a, field: "--address") }
        } else {
            p.add("--address is required: this node's address as the other nodes reach it")
        }
        let pgdata = path("pgdata", "/var/lib/postgresql/15/baton")
        let pgPort = p.check { () throws(ValidationProblem) in try TCPPort(int("pg-port") ?? 5432, field: "--pg-port") }
        let pgBindir = path("pg-bindir", "/usr/lib/postgresql/15/bin")
        let pgOSUser = string("pg-os-user") ?? "postgres"
        if p.check({ () throws(ValidationProblem) in try NodeName(pgOSUser, field: "--pg-os-user") }) == nil {}
        let socketDir = path("pg-socket-dir", "/var/run/postgresql")
        let pgListen = string("pg-listen") ?? "*"
        if pgListen != "*" { _ = p.check { () throws(ValidationProblem) in try HostAddress(pgListen, field: "--pg-listen") } }

        var passwordSource: PasswordSource? = nil
        if let file = string("replication-password-file") {
            if let safe = p.check({ () throws(ValidationProblem) in try SafePath(file, field: "--replication-password-file") }) {
                if FileManager.default.isReadableFile(atPath: safe.value) {
                    passwordSource = .file(safe)
                } else {
                    p.add("--replication-password-file \(safe.value) does not exist or is not readable")
                }
            }
        } else if environment[passwordVariable] != nil {
            passwordSource = .environment(passwordVariable)
        } else {
            p.add("no replication password: give --replication-password-file FILE or set \(passwordVariable) (never a flag: it would show in ps)")
        }

        var networks: [CIDR] = []
        if let given = list("allowed-network") {
            for text in given { if let c = p.check({ () throws(ValidationProblem) in try CIDR(text, field: "--allowed-network") }) { networks.append(c) } }
        } else if let address, let ip = IPAddress.parse(address.value) {
            networks = [try! CIDR("\(address.value)/\(ip.bytes.count == 4 ? 32 : 128)")]
        } else if address != nil {
            p.add("--allowed-network is required when --address is a host name: the networks the replicas connect from")
        }

        var vip: CIDR? = nil
        if let text = string("virtual-ip") { vip = p.check { () throws(ValidationProblem) in try CIDR(text, field: "--virtual-ip") } }
        let interface = string("interface")
        if let interface { _ = p.check { () throws(ValidationProblem) in try KeepalivedSettings.validateInterface(interface) } }
        if vip != nil && interface == nil { p.add("--virtual-ip needs --interface: the network interface that carries it") }
        let routerID = int("virtual-router-id") ?? 51
        _ = p.check { () throws(ValidationProblem) in try KeepalivedSettings.validateRouterID(routerID) }
        let vrrpUnicast = bool("vrrp-unicast")
        if vrrpUnicast && vip == nil { p.add("--vrrp-unicast needs --virtual-ip and --interface: it is how keepalived's peers reach each other") }
        if vrrpUnicast, let address, IPAddress.parse(address.value) == nil {
            p.add("--vrrp-unicast needs --address to be an IP address (keepalived's unicast_src_ip), not \(Quote.show(address.value))")
        }
        let keepalivedPidFile = path("keepalived-pid-file", "/run/keepalived.pid")
        let maxSlotWalKeepSize = string("max-slot-wal-keep-size") ?? PostgresParameters.defaultMaxSlotWalKeepSize
        _ = p.check { () throws(ValidationProblem) in
            do throws(ValidationProblem) { try PostgresSettingDefinition.maxSlotWalKeepSize.check(maxSlotWalKeepSize) } catch {
                throw ValidationProblem("--max-slot-wal-keep-size: \(error.message) (a size such as 8GB, or -1 for no limit)")
            }
        }

        let priority = int("priority") ?? 100
        if !(0...1000).contains(priority) { p.add("--priority \(priority) must be from 0 (never promoted) to 1000") }
        let location = string("location") ?? "default"
        if location.isEmpty || !location.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) {
            p.add("--location \(Quote.show(location)) may use only letters, digits, '-' and '_'")
        }
        let pgbouncerListen = string("pgbouncer-listen") ?? "*"
        if pgbouncerListen != "*" { _ = p.check { () throws(ValidationProblem) in try HostAddress(pgbouncerListen, field: "--pgbouncer-listen") } }

        var consulAgent: ConsulAgentSettings? = nil
        let create = bool("consul-create")
        let joinAgents = list("consul-join")
        if create && joinAgents != nil { p.add("give --consul-create (first node) or --consul-join ADDR… (other nodes), not both") }
        if create || joinAgents != nil {
            var joins: [HostAddress] = []
            for a in joinAgents ?? [] { if let h = p.check({ () throws(ValidationProblem) in try HostAddress(a, field: "--consul-join") }) { joins.append(h) } }
            let expect = int("consul-bootstrap-expect") ?? 3
            if !(1...7).contains(expect) { p.add("--consul-bootstrap-expect \(expect) must be from 1 to 7") }
            let command = list("consul-start-command") ?? ["/usr/bin/systemctl", "start", "consul"]
            if command.first.map({ !$0.hasPrefix("/") }) ?? true { p.add("--consul-start-command must start with an absolute path") }
            if let dataDir = path("consul-data-dir", "/var/lib/consul"), let configDir = path("consul-config-dir", "/etc/consul.d") {
                consulAgent = ConsulAgentSettings(
                    create: create, retryJoin: joins, bootstrapExpect: expect, dataDirectory: dataDir, configDirectory: configDir, startCommand: command)
            }
        }

        var consul = string("consul") ?? "127.0.0.1:8500"
        if case .join(let addresses) = mode {
            if addresses.isEmpty { p.add("--join needs at least one address of the cluster's Consul") }
            if string("consul") == nil { consul = addresses.joined(separator: ",") }
        }
        let timeout = int("streaming-timeout") ?? 120
        if timeout < 1 { p.add("--streaming-timeout must be at least 1 second") }

        let settings = (
            cluster, node, address, pgdata, pgPort, pgBindir, socketDir, passwordSource,
            path("keepalived-conf", "/etc/keepalived/keepalived.conf"), path("pgbouncer-ini", "/etc/pgbouncer/pgbouncer.ini"),
            p.check { () throws(ValidationProblem) in try TCPPort(int("pgbouncer-port") ?? 6432, field: "--pgbouncer-port") },
            path("pgbouncer-auth-file", "/etc/pgbouncer/userlist.txt"), path("state-dir", "/var/lib/baton"),
            path("baton-executable", "/usr/bin/baton"), path("baton-config", "/etc/baton/baton.yaml")
        )
        let eventCommand: SafePath? = string("event-command").flatMap { text in
            p.check { () throws(ValidationProblem) in
                let path = try SafePath(text, field: "--event-command")
                guard FileManager.default.isExecutableFile(atPath: path.value) else {
                    throw ValidationProblem("--event-command \(Quote.show(text)) is not an executable file")
                }
                return path
            }
        }
        let templates: SafePath? = string("templates-dir").flatMap { t in p.check { () throws(ValidationProblem) in try SafePath(t, field: "--templates-dir") } }
        let kernelWatchdog = KernelWatchdogMode(rawValue: string("kernel-watchdog") ?? "off")
        if kernelWatchdog == nil {
            p.add("--kernel-watchdog must be one of \(KernelWatchdogMode.allCases.map(\.rawValue).joined(separator: ", ")), not \(Quote.show(string("kernel-watchdog") ?? ""))")
        }
        let kernelDevice = path("kernel-watchdog-device", "/dev/watchdog")
        let readOnlyDatabases = list("read-only-databases") ?? []
        for db in readOnlyDatabases where db.isEmpty || db.count > 63 || !db.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) {
            p.add("--read-only-databases: \(Quote.show(db)) is not a database name pgbouncer's [databases] can hold (letters, digits, _ and -)")
        }
        let readOnlySuffix = string("read-only-suffix") ?? "_ro"
        if readOnlySuffix.isEmpty || readOnlySuffix.count > 16 || !readOnlySuffix.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) {
            p.add("--read-only-suffix must be 1 to 16 letters, digits, _ or -, not \(Quote.show(readOnlySuffix))")
        }
        var readOnlyMaximumLag: UInt64 = 16 << 20
        if let text = string("read-only-max-lag") {
            do throws(ValidationProblem) { readOnlyMaximumLag = try NodeHealth.bytes(text) } catch {
                p.add("--read-only-max-lag \(Quote.show(text)) is not a size such as 1048576, 16kB or 16MB")
            }
        }
        let logFormat = LogFormat(rawValue: string("log-format") ?? "text")
        if logFormat == nil {
            p.add("--log-format must be one of \(LogFormat.allCases.map(\.rawValue).joined(separator: ", ")), not \(Quote.show(string("log-format") ?? ""))")
        }
        var apiListen: APIListen? = nil
        if let text = string("api-listen") {
            apiListen = p.check { () throws(ValidationProblem) in try APIListen(parsing: text) }
        } else if let address, IPAddress.parse(address.value) != nil {
            apiListen = APIListen(host: address.value, port: try! TCPPort(8008))
        } else {
            apiListen = APIListen(host: "0.0.0.0", port: try! TCPPort(8008))
        }
        var apiTLS: APITLS? = nil
        let certificate = string("api-tls-certificate").flatMap { c in p.check { () throws(ValidationProblem) in try SafePath(c, field: "--api-tls-certificate") } }
        let key = string("api-tls-key").flatMap { c in p.check { () throws(ValidationProblem) in try SafePath(c, field: "--api-tls-key") } }
        let clientCA = string("api-tls-client-ca").flatMap { c in p.check { () throws(ValidationProblem) in try SafePath(c, field: "--api-tls-client-ca") } }
        switch (certificate, key) {
        case (let certificate?, let key?):
            for (flag, file) in [("--api-tls-certificate", certificate), ("--api-tls-key", key)] + (clientCA.map { [("--api-tls-client-ca", $0)] } ?? [])
            where !FileManager.default.isReadableFile(atPath: file.value) {
                p.add("\(flag) \(file.value) does not exist or is not readable")
            }
            apiTLS = APITLS(certificate: certificate, key: key, clientCA: clientCA)
        case (nil, nil):
            if clientCA != nil { p.add("--api-tls-client-ca needs --api-tls-certificate and --api-tls-key") }
        default:
            p.add("--api-tls-certificate and --api-tls-key go together")
        }
        /// pgBackRest's TLS server (`--backup-tls-*`): all three files or none.
        func backupTLS(_ p: inout ProblemCollector) -> PgBackRest.TLSServer? {
            let flags = ["backup-tls-certificate", "backup-tls-key", "backup-tls-ca"]
            let files = flags.map { flag in string(flag).flatMap { c in p.check { () throws(ValidationProblem) in try SafePath(c, field: "--" + flag) } } }
            let port = int("backup-tls-port").flatMap { n in p.check { () throws(ValidationProblem) in try TCPPort(n, field: "--backup-tls-port") } }
            guard let certificate = files[0], let key = files[1], let ca = files[2] else {
                if files.contains(where: { $0 != nil }) || port != nil {
                    p.add("--backup-tls-certificate, --backup-tls-key and --backup-tls-ca go together (pgBackRest's TLS server, for backups from a standby)")
                }
                return nil
            }
            for (flag, file) in zip(flags, [certificate, key, ca]) where !FileManager.default.isReadableFile(atPath: file.value) {
                p.add("--\(flag) \(file.value) does not exist or is not readable")
            }
            return PgBackRest.TLSServer(certificate: certificate, key: key, ca: ca, port: port ?? PgBackRest.TLSServer.defaultPort)
        }
        var backup: PgBackRest? = nil
        switch string("backup") {
        case nil, "none"?:
            if string("backup-repo") != nil { p.add("--backup-repo needs --backup pgbackrest") }
            for flag in ["backup-tls-certificate", "backup-tls-key", "backup-tls-ca", "backup-tls-port"] where o[flag] != nil {
                p.add("--\(flag) needs --backup pgbackrest --backup-repo PATH")
            }
        case "pgbackrest"?:
            if let repo = string("backup-repo") {
                if let repository = p.check({ () throws(ValidationProblem) in try SafePath(repo, field: "--backup-repo") }), let cluster = settings.0,
                    let stateDirectory = settings.12
                {
                    backup = p.check { () throws(ValidationProblem) in
                        try PgBackRest(
                            repository: repository, stateDirectory: stateDirectory, cluster: cluster,
                            retentionFull: int("backup-retention-full") ?? PgBackRest.defaultRetentionFull,
                            processMax: int("backup-process-max") ?? PgBackRest.defaultProcessMax)
                    }
                    backup?.tls = backupTLS(&p)
                }
            } else {
                p.add("--backup pgbackrest needs --backup-repo PATH: the repository every node reaches (NFS, or one machine's disk)")
            }
        case let other?:
            p.add("--backup must be pgbackrest or none, not \(Quote.show(other))")
        }
        let cloneFrom = CloneSource(rawValue: string("clone-from") ?? "auto")
        if cloneFrom == nil {
            p.add("--clone-from must be one of \(CloneSource.allCases.map(\.rawValue).joined(separator: ", ")), not \(Quote.show(string("clone-from") ?? ""))")
        } else if cloneFrom == .backup, string("backup") != "pgbackrest" {
            p.add("--clone-from backup needs --backup pgbackrest --backup-repo PATH")
        }
        try p.throwIfAny()
        guard let cluster = settings.0, let node = settings.1, let address = settings.2, let pgdata = settings.3, let pgPort = settings.4,
            let pgBindir = settings.5, let socketDir = settings.6, let passwordSource = settings.7, let keepalivedConf = settings.8,
            let pgbouncerIni = settings.9, let pgbouncerPort = settings.10, let authFile = settings.11, let stateDir = settings.12,
            let executable = settings.13, let batonConfig = settings.14
        else { throw ValidationProblems([ValidationProblem("invalid options")]) }
        var validated = BootstrapSettings(
            mode: mode, cluster: cluster, node: node, address: address, consulAddresses: consul, pgdata: pgdata, pgPort: pgPort,
            pgBindir: pgBindir, pgOSUser: pgOSUser, pgSocketDirectory: socketDir, pgListen: pgListen,
            replicationPasswordSource: passwordSource, allowedNetworks: networks, virtualIP: vip, interface: interface,
            virtualRouterID: routerID, keepalivedConf: keepalivedConf, pgbouncerIni: pgbouncerIni, pgbouncerPort: pgbouncerPort,
            pgbouncerAuthFile: authFile, pgbouncerListen: pgbouncerListen, stateDirectory: stateDir, priority: priority,
            location: location, templatesDirectory: templates, forceClone: bool("force-clone"), consulAgent: consulAgent,
            batonExecutable: executable, batonConfig: batonConfig, streamingTimeout: timeout, eventCommand: eventCommand,
            kernelWatchdog: kernelWatchdog ?? .off, kernelWatchdogDevice: kernelDevice ?? (try! SafePath("/dev/watchdog")),
            apiListen: apiListen ?? APIListen(host: "0.0.0.0", port: try! TCPPort(8008)), apiTLS: apiTLS, vrrpUnicast: vrrpUnicast,
            keepalivedPidFile: keepalivedPidFile ?? (try! SafePath("/run/keepalived.pid")))
        validated.maxSlotWalKeepSize = maxSlotWalKeepSize
        validated.backup = backup
        validated.cloneFrom = cloneFrom ?? .auto
        validated.logFormat = logFormat ?? .text
        (validated.readOnlyDatabases, validated.readOnlySuffix, validated.readOnlyMaximumLag) = (readOnlyDatabases, readOnlySuffix, readOnlyMaximumLag)
        return validated
    }
}

extension BootstrapSettings {
    /// This node's Baton config file: the options `baton monitor`, `baton check` and `baton notify`
    /// read (`--config`), in the same format and names as the bootstrap config. No secret is in it: the
    /// password stays in its file or variable.
    public func nodeConfigYAML() -> String {
        var lines = [
            "# Written by `baton bootstrap` for node \(node); the same names as bootstrap's options.",
            "cluster: '\(cluster)'", "node-name: '\(node)'", "address: '\(address)'", "consul: '\(consulAddresses)'",
            "pgdata: '\(pgdata)'", "pg-port: \(pgPort.value)", "pg-bindir: '\(pgBindir)'", "pg-os-user: '\(pgOSUser)'",
            "pg-socket-dir: '\(pgSocketDirectory)'", "pg-listen: '\(pgListen)'", "state-dir: '\(stateDirectory)'",
            "allowed-network: [\(allowedNetworks.map { "'\($0.text)'" }.joined(separator: ", "))]",
            "keepalived-conf: '\(keepalivedConf)'", "pgbouncer-ini: '\(pgbouncerIni)'", "pgbouncer-port: \(pgbouncerPort.value)",
            "pgbouncer-auth-file: '\(pgbouncerAuthFile)'", "priority: \(priority)", "location: '\(location)'",
            "virtual-router-id: \(virtualRouterID)",
        ]
        if case .file(let path) = replicationPasswordSource { lines.append("replication-password-file: '\(path)'") }
        if let virtualIP { lines.append("virtual-ip: '\(virtualIP.text)'") }
        if let interface { lines.append("interface: '\(interface)'") }
        if vrrpUnicast { lines.append("vrrp-unicast: true") }
        lines.append("keepalived-pid-file: '\(keepalivedPidFile)'")
        if let eventCommand { lines.append("event-command: '\(eventCommand)'") }
        lines.append("api-listen: '\(apiListen.text)'")
        if let apiTLS {
            lines.append("api-tls-certificate: '\(apiTLS.certificate)'")
            lines.append("api-tls-key: '\(apiTLS.key)'")
            if let ca = apiTLS.clientCA { lines.append("api-tls-client-ca: '\(ca)'") }
        }
        if logFormat != .text { lines.append("log-format: '\(logFormat.rawValue)'") }
        if !readOnlyDatabases.isEmpty {
            lines.append("read-only-databases: [\(readOnlyDatabases.map { "'\($0)'" }.joined(separator: ", "))]")
            lines.append("read-only-suffix: '\(readOnlySuffix)'")
            lines.append("read-only-max-lag: \(readOnlyMaximumLag)")
        }
        if let backup {
            lines.append("backup: 'pgbackrest'")
            lines.append("backup-repo: '\(backup.repository)'")
            lines.append("backup-retention-full: \(backup.retentionFull)")
            if backup.processMax != PgBackRest.defaultProcessMax { lines.append("backup-process-max: \(backup.processMax)") }
            if let tls = backup.tls {
                lines.append("backup-tls-certificate: '\(tls.certificate)'")
                lines.append("backup-tls-key: '\(tls.key)'")
                lines.append("backup-tls-ca: '\(tls.ca)'")
                if tls.port != PgBackRest.TLSServer.defaultPort { lines.append("backup-tls-port: \(tls.port.value)") }
            }
            if cloneFrom != .auto { lines.append("clone-from: '\(cloneFrom.rawValue)'") }
        }
        if kernelWatchdog != .off {
            lines.append("kernel-watchdog: '\(kernelWatchdog.rawValue)'")
            lines.append("kernel-watchdog-device: '\(kernelWatchdogDevice)'")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
