import ArgumentParser
import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import Foundation

struct BootstrapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bootstrap",
        abstract: "Create a cluster (--master) or join one (--join ADDR…).",
        discussion: """
            Every option can also be set in the YAML file given with --config, under the same name \
            (e.g. `pg-port: 5433`); flags override the file. The replication password comes from \
            --replication-password-file or BATON_REPLICATION_PASSWORD, never from a flag. Safe to rerun: \
            a finished node is left unchanged, and a failed run is finished by the next one.
            """
    )

    @Flag(help: "Create the cluster on this node (its first primary).") var master = false
    @Option(help: "Join the cluster through these Consul addresses (comma-separated; one reachable is enough).") var join: String?
    @Option(help: "YAML file with options (keys are the option names without dashes in front).") var config: String?
    @Flag(help: "Print the plan and change nothing.") var dryRun = false

    @Option(help: "Cluster name (default main).") var cluster: String?
    @Option(help: "This node's name (default: the host name).") var nodeName: String?
    @Option(help: "This node's address as the other nodes reach it.") var address: String?
    @Option(help: "Consul HTTP address(es) (default 127.0.0.1:8500, or the --join addresses).") var consul: String?
    @Option(help: "PostgreSQL data directory (default /var/lib/postgresql/15/baton).") var pgdata: String?
    @Option(help: "PostgreSQL port (default 5432).") var pgPort: Int?
    @Option(help: "PostgreSQL programs (default /usr/lib/postgresql/15/bin).") var pgBindir: String?
    @Option(help: "OS user PostgreSQL runs as when Baton runs as root (default postgres).") var pgOsUser: String?
    @Option(help: "PostgreSQL's Unix socket directory (default /var/run/postgresql).") var pgSocketDir: String?
    @Option(help: "PostgreSQL listen_addresses (default *).") var pgListen: String?
    @Option(help: "File holding the replication role's password.") var replicationPasswordFile: String?
    @Option(help: "Networks the replicas connect from (CIDR, comma-separated; default this node's address).") var allowedNetwork: String?
    @Option(help: "The virtual IP keepalived moves to the primary (CIDR, e.g. 198.18.0.100/24).") var virtualIp: String?
    @Option(help: "The network interface carrying the virtual IP.") var interface: String?
    @Option(help: "keepalived virtual_router_id, 1-255 (default 51).") var virtualRouterId: Int?
    @Option(help: "Where to write keepalived.conf (default /etc/keepalived/keepalived.conf).") var keepalivedConf: String?
    @Option(help: "Where to write pgbouncer.ini (default /etc/pgbouncer/pgbouncer.ini).") var pgbouncerIni: String?
    @Option(help: "pgbouncer's port (default 6432).") var pgbouncerPort: Int?
    @Option(help: "pgbouncer's auth_file (default /etc/pgbouncer/userlist.txt).") var pgbouncerAuthFile: String?
    @Option(help: "pgbouncer's listen_addr (default *).") var pgbouncerListen: String?
    @Option(help: "Baton's state directory: passfile, PostgreSQL log (default /var/lib/baton).") var stateDir: String?
    @Option(help: "Failover priority, 0 = never promoted automatically (default 100).") var priority: Int?
    @Option(help: "The node's location, repmgr-style (default default).") var location: String?
    @Option(help: "A program the monitor runs with each event: KIND NODE TIME DETAIL (no shell).") var eventCommand: String?
    @Option(help: "Directory holding keepalived/ and pgbouncer/ templates.") var templatesDir: String?
    @Flag(help: "keepalived reaches its peers by unicast (the other nodes' addresses, kept up to date by the monitor), not multicast.")
    var vrrpUnicast = false
    @Option(help: "keepalived's PID file: the monitor reloads keepalived (SIGHUP) when the unicast peers change (default /run/keepalived.pid).")
    var keepalivedPidFile: String?
    @Option(help: "max_slot_wal_keep_size for the whole cluster, set by the node that creates it (default 8GB; -1: no limit). Later: `baton config set postgresql.max_slot_wal_keep_size=…`.")
    var maxSlotWalKeepSize: String?
    @Flag(help: "Move a data directory that cannot be reused aside (never deleted) and clone afresh.") var forceClone = false
    @Flag(help: "Configure and start a Consul server agent on this (first) node.") var consulCreate = false
    @Option(help: "Configure and start a Consul agent joining these addresses (comma-separated).") var consulJoin: String?
    @Option(help: "Seconds to wait for a new standby to stream (default 120).") var streamingTimeout: Int?
    @Option(help: "Where to write this node's Baton config for monitor and hooks (default: --config's path, else /etc/baton/baton.yaml).")
    var batonConfig: String?
    @Option(help: "The baton binary keepalived's check and notify hooks run (default /usr/bin/baton).")
    var batonExecutable: String?
    @Option(help: "Also use the kernel's watchdog device, which resets a frozen machine: off, automatic or required (default off).")
    var kernelWatchdog: String?
    @Option(help: "The kernel watchdog device (default /dev/watchdog; `modprobe softdog` provides one).") var kernelWatchdogDevice: String?
    @Option(help: "How the monitor and the pgbouncer agent log: text (logfmt) or json (one object a line) (default text).") var logFormat: String?
    @Option(help: "Databases that get a read-only alias DB_ro in this node's pgbouncer, served by this node's standby while it streams with little lag, else by the primary (comma-separated).")
    var readOnlyDatabases: String?
    @Option(help: "The read-only aliases' suffix (default _ro).") var readOnlySuffix: String?
    @Option(help: "How far behind the primary this node's standby may be and still serve the read-only aliases (default 16MB).")
    var readOnlyMaxLag: String?
    @Option(help: "Back up with pgBackRest: pgbackrest (archiving on the primary, `baton backup`) or none (default none).") var backup: String?
    @Option(help: "The pgBackRest repository every node reaches (an absolute path: NFS, or one machine's disk).") var backupRepo: String?
    @Option(help: "Full backups pgBackRest keeps (default 2); older ones and the WAL only they need are expired.") var backupRetentionFull: Int?
    @Option(help: "Processes pgBackRest copies and compresses files with in a backup or restore (default 1, at most 32).") var backupProcessMax: Int?
    @Option(help: "This node's certificate for pgBackRest's TLS server and as its client (CN the cluster's name, the node's address as a DNS subjectAltName): lets `baton backup --from-standby` reach the primary.")
    var backupTlsCertificate: String?
    @Option(help: "The key of --backup-tls-certificate (readable by the postgres user).") var backupTlsKey: String?
    @Option(help: "The CA that signed every node's --backup-tls-certificate.") var backupTlsCa: String?
    @Option(help: "The port of pgBackRest's TLS server on the node's address (default 8432).") var backupTlsPort: Int?
    @Option(help: "Where a new replica's data comes from: backup (the repository), primary (pg_basebackup) or auto (the repository when it holds a backup the archive carries on from; default).")
    var cloneFrom: String?
    @Option(help: "Where the monitor's HTTP API listens, HOST:PORT (default this node's address, port 8008).") var apiListen: String?
    @Option(help: "The HTTP API's TLS certificate (PEM); with --api-tls-key it serves HTTPS.") var apiTlsCertificate: String?
    @Option(help: "The HTTP API's TLS private key (PEM).") var apiTlsKey: String?
    @Option(help: "Verify client certificates against this CA (PEM): only clients it signed may connect.") var apiTlsClientCa: String?

    func validate() throws {
        guard master != (join != nil) else { throw ValidationError("give exactly one of --master or --join ADDR[,ADDR…]") }
    }

    func flagValues() -> [String: RawValue] {
        var values: [String: RawValue] = [:]
        func set(_ key: String, _ v: String?) { if let v { values[key] = .string(v) } }
        func set(_ key: String, _ v: Int?) { if let v { values[key] = .int(v) } }
        func list(_ key: String, _ v: String?) { if let v { values[key] = .list(v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) } }
        set("cluster", cluster); set("node-name", nodeName); set("address", address); set("consul", consul); set("pgdata", pgdata)
        set("pg-port", pgPort); set("pg-bindir", pgBindir); set("pg-os-user", pgOsUser); set("pg-socket-dir", pgSocketDir)
        set("pg-listen", pgListen); set("replication-password-file", replicationPasswordFile); list("allowed-network", allowedNetwork)
        set("virtual-ip", virtualIp); set("interface", interface); set("virtual-router-id", virtualRouterId)
        set("keepalived-conf", keepalivedConf); set("pgbouncer-ini", pgbouncerIni); set("pgbouncer-port", pgbouncerPort)
        set("pgbouncer-auth-file", pgbouncerAuthFile); set("pgbouncer-listen", pgbouncerListen); set("state-dir", stateDir)
        set("priority", priority); set("location", location); set("event-command", eventCommand); set("templates-dir", templatesDir); list("consul-join", consulJoin)
        set("streaming-timeout", streamingTimeout); set("baton-config", batonConfig); set("baton-executable", batonExecutable)
        set("kernel-watchdog", kernelWatchdog); set("kernel-watchdog-device", kernelWatchdogDevice)
        set("api-listen", apiListen); set("api-tls-certificate", apiTlsCertificate); set("api-tls-key", apiTlsKey)
        set("api-tls-client-ca", apiTlsClientCa); set("keepalived-pid-file", keepalivedPidFile)
        set("max-slot-wal-keep-size", maxSlotWalKeepSize); set("log-format", logFormat)
        list("read-only-databases", readOnlyDatabases); set("read-only-suffix", readOnlySuffix); set("read-only-max-lag", readOnlyMaxLag)
        set("backup", backup); set("backup-repo", backupRepo); set("backup-retention-full", backupRetentionFull); set("backup-process-max", backupProcessMax); set("clone-from", cloneFrom)
        set("backup-tls-certificate", backupTlsCertificate); set("backup-tls-key", backupTlsKey); set("backup-tls-ca", backupTlsCa); set("backup-tls-port", backupTlsPort)
        if vrrpUnicast { values["vrrp-unicast"] = .bool(true) }
        if forceClone { values["force-clone"] = .bool(true) }
        if consulCreate { values["consul-create"] = .bool(true) }
        return values
    }

    func run() async throws {
        Logs.bootstrap()
        var options: [String: RawValue] = [:]
        do {
            if let config {
                guard let text = try? String(contentsOfFile: config, encoding: .utf8) else {
                    throw ValidationProblems([ValidationProblem("cannot read the config file \(config)")])
                }
                options = try BootstrapOption.load(yaml: text, source: config)
                options["baton-config"] = options["baton-config"] ?? .string(URL(fileURLWithPath: config).standardizedFileURL.path)
            }
            options.merge(flagValues()) { _, flag in flag }
            if options["baton-executable"] == nil {
                options["baton-executable"] = .string(URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.resolvingSymlinksInPath().path)
            }
            let mode: BootstrapMode = master ? .master : .join(join!.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let environment = ProcessInfo.processInfo.environment
            let settings = try BootstrapSettings.validate(
                mode: mode, options: options, environment: environment, hostname: ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "")
            let consulConfiguration: ConsulConfiguration
            do { consulConfiguration = try ConsulConfiguration.resolve(address: settings.consulAddresses) } catch {
                throw ValidationProblems([ValidationProblem(error.message)])
            }
            let bootstrap = Bootstrap(settings: settings, client: ConsulClient(consulConfiguration), environment: environment) { print($0) }
            _ = try await bootstrap.run(dryRun: dryRun)
        } catch let problems as ValidationProblems {
            FileHandle.standardError.write(Data(("baton bootstrap: nothing was changed:\n" + problems.problems.map { "  - \($0.message)" }.joined(separator: "\n") + "\n").utf8))
            throw ExitCode(2)
        } catch let error as BootstrapError {
            FileHandle.standardError.write(Data("baton bootstrap: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
    }
}
