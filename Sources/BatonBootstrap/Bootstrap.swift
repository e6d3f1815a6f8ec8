import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import BatonSettings
import Foundation

/// Why a bootstrap stopped, in words that say what to do next.
public struct BootstrapError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What a finished bootstrap did.
public struct BootstrapOutcome: Sendable {
    public var steps: [BootstrapStep]
    /// Whether anything changed (a rerun on a finished node changes nothing).
    public var changed: Bool
    public var keepalivedPriority: Int?
}

/// `baton bootstrap`: observes, plans with ``BootstrapPlanner``, then carries out each step. Every step
/// checks before it acts, so a rerun after a failure at any step finishes the job and a rerun on a
/// finished node changes nothing.
public final class Bootstrap {
    let settings: BootstrapSettings
    let client: ConsulClient
    let control: PostgresControl
    let report: (String) -> Void
    let environment: [String: String]
    private var changed = false
    private var priority: Int?
    private var primary: NodeRegistration?

    public init(settings: BootstrapSettings, client: ConsulClient, environment: [String: String], report: @escaping (String) -> Void) {
        self.settings = settings
        self.client = client
        self.environment = environment
        self.report = report
        self.control = PostgresControl(binDirectory: settings.pgBindir.value, dataDirectory: settings.pgdata.value, osUser: settings.pgOSUser)
    }

    var keys: ClusterKeys { settings.keys }
    var pgOwner: String { settings.pgOSUser }

    public func run(dryRun: Bool) async throws -> BootstrapOutcome {
        let templates = try loadTemplates()
        let password = try readPassword()
        if let agent = settings.consulAgent {
            if dryRun {
                report("would: \(BootstrapStep.configureConsulAgent)")
                report("would: \(BootstrapStep.startConsulAgent): \(agent.startCommand.joined(separator: " "))")
            } else {
                try await ConsulAgentSetup(settings: settings, agent: agent, report: note).run()
            }
        }
        do {
            _ = try await client.leader()
        } catch let error as ConsulError {
            throw BootstrapError("\(error.message)")
        }
        let observation = try await observe()
        let steps: [BootstrapStep]
        do { steps = try BootstrapPlanner.plan(observation) } catch { throw BootstrapError(error.message) }
        if dryRun {
            report("bootstrap plan for node \(settings.node) of cluster \(settings.cluster) (--dry-run: nothing is changed):")
            for (i, step) in steps.enumerated() { report("  \(i + 1). \(step)") }
            return BootstrapOutcome(steps: steps, changed: false, keepalivedPriority: nil)
        }
        for step in steps { try await execute(step, password: password, templates: templates) }
        report(
            changed
                ? "node \(settings.node) is bootstrapped (\(observation.creating ? "primary" : "standby") of cluster \(settings.cluster))"
                : "node \(settings.node) was already bootstrapped: nothing changed")
        return BootstrapOutcome(steps: steps, changed: changed, keepalivedPriority: priority)
    }

    private func note(_ text: String) { report(text) }

    private func did(_ step: BootstrapStep, changed: Bool, _ detail: String = "") {
        if changed { self.changed = true }
        report((changed ? "done: " : "unchanged: ") + step.description + (detail.isEmpty ? "" : " — \(detail)"))
    }

    // MARK: Observation

    func observe() async throws -> BootstrapObservation {
        let claim = try await readClaim()?.claim
        let dataDirectory = try await control.inspect()
        let running = try await control.isRunning()
        let primary = try await registeredPrimary()
        self.primary = primary
        let creating: Bool
        if case .master = settings.mode { creating = true } else { creating = false }
        return BootstrapObservation(
            node: settings.node, cluster: settings.cluster, creating: creating, claim: claim, dataDirectory: dataDirectory,
            postgresRunning: running, primary: primary, forceClone: settings.forceClone, keepalivedWanted: settings.virtualIP != nil,
            backupWanted: settings.backup != nil)
    }

    func readClaim() async throws -> (claim: ClusterClaim, index: UInt64)? {
        guard let pair = try await client.get(keys.initialize, .consistent).value else { return nil }
        do { return (try ClusterClaim(bytes: pair.value, key: keys.initialize), pair.modifyIndex) } catch { throw BootstrapError(error.message) }
    }

    /// Every registration is validated: a malformed or hostile one is an error, never a config line.
    func registrations() async throws -> [NodeRegistration] {
        var found: [NodeRegistration] = []
        for pair in try await client.list(keys.nodesPrefix, .consistent).value {
            do { found.append(try NodeRegistration(bytes: pair.value, key: pair.key)) } catch {
                throw BootstrapError("\(error.message); nothing was changed")
            }
        }
        return found
    }

    func registeredPrimary() async throws -> NodeRegistration? {
        let primaries = try await registrations().filter { $0.role == .primary }
        guard primaries.count <= 1 else {
            throw BootstrapError("Consul registers several primaries (\(primaries.map(\.name.value).joined(separator: ", "))); fix nodes/* first")
        }
        return primaries.first
    }

    // MARK: Inputs

    struct Templates {
        var keepalived: Template?
        var pgbouncer: Template
    }

    func loadTemplates() throws -> Templates {
        let directory = try TemplateLocator.directory(explicit: settings.templatesDirectory?.value)
        func load(_ relative: String) throws -> Template {
            let path = directory + "/" + relative
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw BootstrapError("cannot read the template \(path); reinstall Baton or point --templates-dir at its templates")
            }
            return Template(text: text, source: path)
        }
        return Templates(
            keepalived: settings.virtualIP == nil ? nil : try load("keepalived/keepalived.conf.template"),
            pgbouncer: try load("pgbouncer/pgbouncer.ini.template"))
    }

    func readPassword() throws -> String {
        let raw: String
        switch settings.replicationPasswordSource {
        case .file(let path):
            guard let text = try? String(contentsOfFile: path.value, encoding: .utf8) else {
                throw BootstrapError("cannot read the replication password file \(path.value)")
            }
            raw = text
        case .environment(let name):
            raw = environment[name] ?? ""
        }
        do { return try PostgresFiles.validatePassword(raw, source: settings.replicationPasswordSource.description) } catch {
            throw BootstrapError(error.message)
        }
    }

    // MARK: Steps

    func execute(_ step: BootstrapStep, password: String, templates: Templates) async throws {
        switch step {
        case .claimCluster:
            let claim = ClusterClaim(node: settings.node, systemIdentifier: nil)
            if try await client.put(keys.initialize, claim.json.serializedBytes(), mode: .cas(0)) {
                // The cluster's first PostgreSQL parameter: a node gone for good cannot fill the primary's disk.
                let parameters = PostgresParameters(["max_slot_wal_keep_size": settings.maxSlotWalKeepSize])
                _ = try await client.put(keys.postgresql, parameters.json.serializedBytes(), mode: .cas(0))
                did(step, changed: true)
            } else if let existing = try await readClaim(), existing.claim.node == settings.node {
                did(step, changed: false)
            } else {
                let other = try await readClaim()?.claim.node.value ?? "another node"
                throw BootstrapError("cluster \(settings.cluster) was created by node \(other) a moment ago; nothing was changed. Run `baton bootstrap --join` on this node")
            }

        case .initdb:
            try prepareDataDirectory()
            try await control.initdb()
            did(step, changed: true)

        case .adopt:
            did(step, changed: false)

        case .moveDataDirectoryAside:
            if try await control.isRunning() {
                throw BootstrapError("PostgreSQL runs on \(settings.pgdata.value); stop it before --force-clone moves the directory aside")
            }
            let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
            let target = settings.pgdata.value + ".baton-moved-" + stamp
            try FileManager.default.moveItem(atPath: settings.pgdata.value, toPath: target)
            did(step, changed: true, "moved to \(target)")

        case .clone(let from):
            guard let primary else { throw BootstrapError("the primary \(from) is no longer registered; rerun bootstrap") }
            try writePassfile(password)
            try await ensureSlot(on: primary)
            try prepareDataDirectory()
            let conninfo = ConnInfo.make([
                ("host", primary.address.value), ("port", String(primary.port.value)), ("user", PostgresFiles.replicationUser),
                ("passfile", settings.passfile.value), ("application_name", settings.node.value), ("connect_timeout", "5"),
            ])
            let how: String
            do {
                how = try await control.clone(
                    conninfo: conninfo, slot: settings.node.slotName,
                    backup: settings.backup.map { PgBackRestTool(settings: $0, osUser: settings.pgOSUser) }, source: settings.cloneFrom)
            } catch {
                // Leave an empty directory behind, not half a copy, so a rerun clones afresh.
                try? FileManager.default.removeItem(atPath: settings.pgdata.value)
                throw BootstrapError(
                    "\(error) — check that \(primary.name) (\(primary.address):\(primary.port)) accepts replication from \(settings.address) (--allowed-network on the primary) and that the replication password matches")
            }
            did(step, changed: true, how)

        case .reuseStandby:
            did(step, changed: false)

        case .configurePostgres(let upstreamName):
            var any = try writePassfile(password)
            var upstream: PostgresFiles.Upstream? = nil
            if upstreamName != nil, let primary {
                upstream = PostgresFiles.Upstream(
                    host: primary.address, port: primary.port, slot: settings.node.slotName, passfile: settings.passfile,
                    applicationName: settings.node)
            }
            let data = settings.pgdata.value
            let conf = PostgresFiles.settings(
                port: settings.pgPort, listen: settings.pgListen, socketDirectory: settings.pgSocketDirectory, upstream: upstream,
                archive: settings.backup)
            if try AtomicFile.write(conf, to: data + "/" + PostgresFiles.settingsFile, mode: 0o600, owner: pgOwner) { any = true }
            let postgresql = (try? String(contentsOfFile: data + "/postgresql.conf", encoding: .utf8)) ?? ""
            if try AtomicFile.write(PostgresFiles.withInclude(postgresql), to: data + "/postgresql.conf", mode: 0o600, owner: pgOwner) { any = true }
            let hba = (try? String(contentsOfFile: data + "/pg_hba.conf", encoding: .utf8)) ?? ""
            let hbaText = PostgresFiles.withManagedBlock(hba, lines: PostgresFiles.hbaLines(allowedNetworks: settings.allowedNetworks))
            if try AtomicFile.write(hbaText, to: data + "/pg_hba.conf", mode: 0o600, owner: pgOwner) { any = true }
            let ident = (try? String(contentsOfFile: data + "/pg_ident.conf", encoding: .utf8)) ?? ""
            let identText = PostgresFiles.withManagedBlock(ident, lines: PostgresFiles.identLines(osUsers: [pgOwner, currentUser()]))
            if try AtomicFile.write(identText, to: data + "/pg_ident.conf", mode: 0o600, owner: pgOwner) { any = true }
            if upstream != nil, !FileManager.default.fileExists(atPath: data + "/standby.signal") {
                try AtomicFile.write("", to: data + "/standby.signal", mode: 0o600, owner: pgOwner)
                any = true
            }
            try AtomicFile.ensureDirectory(settings.pgSocketDirectory.value, mode: 0o2775, owner: pgOwner)
            did(step, changed: any)

        case .configureBackup:
            guard let backup = settings.backup else { return }
            var any = false
            for directory in [backup.repository.value, backup.workDirectory.value, backup.workDirectory.value + "/log", backup.workDirectory.value + "/lock"]
            where !FileManager.default.fileExists(atPath: directory) {
                try AtomicFile.ensureDirectory(directory, mode: 0o750, owner: pgOwner)
                any = true
            }
            let text = backup.configuration(
                pgdata: settings.pgdata, port: settings.pgPort, socketDirectory: settings.pgSocketDirectory, osUser: settings.pgOSUser,
                address: settings.address)
            if try AtomicFile.write(text, to: backup.configFile.value, mode: 0o640, owner: pgOwner) { any = true }
            did(step, changed: any, "\(backup.configFile.value), repository \(backup.repository.value)")

        case .createBackupStanza:
            guard let backup = settings.backup else { return }
            do {
                try await PgBackRestTool(settings: backup, osUser: settings.pgOSUser).createStanza()
            } catch {
                throw BootstrapError(
                    "\(error) — check that \(settings.pgOSUser) can write \(backup.repository.value) and that pgBackRest is installed (\(backup.executable.value)); rerun bootstrap when fixed")
            }
            did(step, changed: true, "stanza \(backup.stanza)")

        case .startPostgres:
            if try await control.isRunning() {
                try await control.reload()
                did(.reloadPostgres, changed: false)
            } else {
                try await control.start(logFile: settings.postgresLog)
                did(step, changed: true, "log in \(settings.postgresLog)")
            }

        case .reloadPostgres:
            try await control.reload()
            let pending = try await withLocalConnection { try await $0.query("SELECT name FROM pg_settings WHERE pending_restart") }
            did(step, changed: false, pending.isEmpty ? "" : "restart PostgreSQL to apply \(pending.compactMap { $0[0] }.joined(separator: ", "))")

        case .ensureReplicationRole:
            try await ensureReplicationRole(password)

        case .recordSystemIdentifier:
            guard case .cluster(let id, _) = try await control.inspect().kind else {
                throw BootstrapError("the data directory has no system identifier after initialisation")
            }
            guard let current = try await readClaim() else {
                throw BootstrapError("the initialize key of cluster \(settings.cluster) vanished; rerun bootstrap")
            }
            let claim = current.claim
            let index = current.index
            if claim.systemIdentifier == id {
                did(step, changed: false)
            } else if claim.systemIdentifier == nil, claim.node == settings.node {
                let updated = ClusterClaim(node: settings.node, systemIdentifier: id)
                guard try await client.put(keys.initialize, updated.json.serializedBytes(), mode: .cas(index)) else {
                    throw BootstrapError("the initialize key changed while recording the system identifier; rerun bootstrap")
                }
                did(step, changed: true, id)
            } else {
                throw BootstrapError("the initialize key records another system identifier (\(claim.systemIdentifier ?? "none")) than this data directory's (\(id))")
            }

        case .waitForStreaming(let from):
            try await waitForStreaming(from: from)
            did(step, changed: false)

        case .allocatePriority:
            let (value, wrote) = try await PriorityAllocator(client: client, key: keys.keepalivedNodes).allocate(settings.node)
            priority = value
            did(step, changed: wrote, "priority \(value)")

        case .register(let role, let upstream):
            let bytes = settings.registration(role: role, upstream: upstream).json.serializedBytes()
            if try await client.get(keys.node(settings.node), .consistent).value?.value == bytes {
                did(step, changed: false)
            } else {
                try await client.put(keys.node(settings.node), bytes)
                did(step, changed: true)
            }

        case .writeKeepalived(let state):
            guard let template = templates.keepalived, let vip = settings.virtualIP, let interface = settings.interface else { return }
            let priority = try await currentPriority()
            var text: String
            do {
                text = try KeepalivedSettings(
                    cluster: settings.cluster, node: settings.node, initialState: state, interface: interface,
                    virtualRouterID: settings.virtualRouterID, priority: priority, virtualIP: vip, batonExecutable: settings.batonExecutable,
                    batonConfig: settings.batonConfig, trackFile: try SafePath(KeepalivedSettings.trackFilePath(stateDirectory: settings.stateDirectory.value))
                ).render(template)
                if settings.vrrpUnicast {
                    // The nodes registered so far; every monitor adds later ones to its own file.
                    let peers = try await registrations().filter { $0.name != settings.node }.map(\.address)
                    text = try KeepalivedUnicast.apply(to: text, source: settings.address, peers: peers)
                }
            } catch let error as ValidationProblem { throw BootstrapError(error.message) }
            did(step, changed: try AtomicFile.write(text, to: settings.keepalivedConf.value, mode: 0o644), settings.keepalivedConf.value)

        case .skipKeepalived:
            report("skipped: keepalived.conf (no --virtual-ip given)")

        case .writePgBouncer(let target):
            let host = target == settings.node ? settings.address : (primary?.address ?? settings.address)
            let port = target == settings.node ? settings.pgPort : (primary?.port ?? settings.pgPort)
            let directory = (settings.pgbouncerIni.value as NSString).deletingLastPathComponent
            let text = try renderPgBouncer(host: host, port: port, directory: directory, template: templates.pgbouncer)
            did(step, changed: try AtomicFile.write(text, to: settings.pgbouncerIni.value, mode: 0o644), settings.pgbouncerIni.value)

        case .writeNodeConfig:
            let text = settings.nodeConfigYAML()
            did(step, changed: try AtomicFile.write(text, to: settings.batonConfig.value, mode: 0o640), settings.batonConfig.value)

        case .configureConsulAgent, .startConsulAgent:
            break  // done before observation: Consul must answer first
        }
    }

    // MARK: Helpers

    /// pgbouncer.ini from its template, with the read-only aliases the node's settings ask for (pointed
    /// at the primary until the agent decides).
    func renderPgBouncer(host: HostAddress, port: TCPPort, directory: String, template: Template) throws -> String {
        do {
            let text = try PgBouncerSettings(
                node: settings.node, primaryHost: host, primaryPort: port, listenAddress: settings.pgbouncerListen,
                listenPort: settings.pgbouncerPort, socketDirectory: settings.pgSocketDirectory, authFile: settings.pgbouncerAuthFile,
                adminUser: "pgbouncer", logFile: try SafePath(directory + "/pgbouncer.log"), pidFile: try SafePath(directory + "/pgbouncer.pid")
            ).render(template)
            return PgBouncerIni.addingReadOnlyAliases(text, databases: settings.readOnlyDatabases, suffix: settings.readOnlySuffix, host: host, port: port)
        } catch {
            throw BootstrapError(error.message)
        }
    }

    func currentUser() -> String {
        guard let entry = getpwuid(getuid()) else { return "root" }
        return String(cString: entry.pointee.pw_name)
    }

    func prepareDataDirectory() throws {
        let parent = (settings.pgdata.value as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: parent) { try AtomicFile.ensureDirectory(parent, mode: 0o755, owner: pgOwner) }
        try AtomicFile.ensureDirectory(settings.pgdata.value, mode: 0o700, owner: pgOwner)
        try AtomicFile.ensureDirectory(settings.stateDirectory.value, mode: 0o700, owner: pgOwner)
    }

    @discardableResult
    func writePassfile(_ password: String) throws -> Bool {
        try AtomicFile.ensureDirectory(settings.stateDirectory.value, mode: 0o700, owner: pgOwner)
        return try AtomicFile.write(PostgresFiles.passfile(password: password), to: settings.passfile.value, mode: 0o600, owner: pgOwner)
    }

    var localConninfo: String {
        ConnInfo.make([
            ("host", settings.pgSocketDirectory.value), ("port", String(settings.pgPort.value)), ("user", "postgres"), ("dbname", "postgres"),
            ("connect_timeout", "5"), ("application_name", "baton-bootstrap"),
        ])
    }

    func withLocalConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection: PostgresConnection
        do { connection = try await PostgresConnection.connect(localConninfo) } catch {
            throw BootstrapError("cannot connect to the local PostgreSQL over \(settings.pgSocketDirectory.value): \(error)")
        }
        defer { connection.close() }
        return try await body(connection)
    }

    func replicatorConninfo(_ host: HostAddress, _ port: TCPPort) -> String {
        ConnInfo.make([
            ("host", host.value), ("port", String(port.value)), ("user", PostgresFiles.replicationUser), ("dbname", "postgres"),
            ("passfile", settings.passfile.value), ("connect_timeout", "5"), ("application_name", "baton-bootstrap"),
        ])
    }

    func ensureReplicationRole(_ password: String) async throws {
        let step = BootstrapStep.ensureReplicationRole
        let user = PostgresFiles.replicationUser
        var changedRole = false
        try await withLocalConnection { db in
            let exists = try await db.scalar("SELECT rolreplication AND rolcanlogin FROM pg_roles WHERE rolname = $1", [user])
            var passwordWorks = false
            if exists == "t" {
                // The passfile holds the password; if it logs in, the role already has it.
                if let probe = try? await PostgresConnection.connect(replicatorConninfo(settings.address, settings.pgPort)) {
                    probe.close()
                    passwordWorks = true
                }
            }
            if exists != "t" || !passwordWorks {
                let verifier = try await db.scramVerifier(password: password, role: user)
                guard verifier.hasPrefix("SCRAM-SHA-256$"), !verifier.contains("'") else { throw BootstrapError("libpq returned an unexpected verifier") }
                let verb = exists == nil ? "CREATE" : "ALTER"
                try await db.query("\(verb) ROLE \(user) WITH REPLICATION LOGIN PASSWORD '\(verifier)'")
                changedRole = true
            }
            // pg_rewind connects as this role to the source server and needs these functions; a CHECKPOINT
            // on a freshly promoted source makes its new timeline visible to pg_rewind.
            if try await db.scalar("SELECT pg_has_role($1, 'pg_checkpoint', 'MEMBER')", [user]) != "t" {
                try await db.query("GRANT pg_checkpoint TO \(user)")
                changedRole = true
            }
            for function in [
                "pg_catalog.pg_ls_dir(text, boolean, boolean)", "pg_catalog.pg_stat_file(text, boolean)",
                "pg_catalog.pg_read_binary_file(text)", "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
            ] {
                if try await db.scalar("SELECT has_function_privilege($1, $2, 'EXECUTE')", [user, function]) != "t" {
                    try await db.query("GRANT EXECUTE ON FUNCTION \(function) TO \(user)")
                    changedRole = true
                }
            }
        }
        did(step, changed: changedRole)
    }

    func ensureSlot(on primary: NodeRegistration) async throws {
        let connection: PostgresConnection
        do { connection = try await PostgresConnection.connect(replicatorConninfo(primary.address, primary.port)) } catch {
            throw BootstrapError(
                "cannot connect to the primary \(primary.name) at \(primary.address):\(primary.port) as \(PostgresFiles.replicationUser): \(error). Check --allowed-network on the primary and the replication password"
            )
        }
        defer { connection.close() }
        let slot = settings.node.slotName
        if try await connection.scalar("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [slot]) == nil {
            try await connection.query("SELECT pg_create_physical_replication_slot($1, true)", [slot])
            report("done: created replication slot \(slot) on \(primary.name)")
            changed = true
        }
    }

    func waitForStreaming(from primary: NodeName) async throws {
        let deadline = ContinuousClock.now + .seconds(settings.streamingTimeout)
        var last = "no answer"
        while ContinuousClock.now < deadline {
            do {
                let rows = try await withLocalConnection { try await $0.query("SELECT status FROM pg_stat_wal_receiver") }
                if rows.first?.first == "streaming" { return }
                last = rows.first?.first.flatMap { $0 } ?? "no WAL receiver"
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw BootstrapError(
            "this standby does not stream from \(primary) after \(settings.streamingTimeout) s (last seen: \(last)); see \(settings.postgresLog)")
    }

    func currentPriority() async throws -> Int {
        if let priority { return priority }
        let value = try await client.get(keys.keepalivedNodes, .consistent).value?.value
        do {
            guard let p = try KeepalivedNodes(bytes: value, key: keys.keepalivedNodes).node(settings.node)?.priority else {
                throw BootstrapError("this node has no keepalived priority yet; rerun bootstrap")
            }
            return p
        } catch let problem as ValidationProblem { throw BootstrapError(problem.message) }
    }
}

/// Takes a keepalived priority in `keepalived/nodes` with a check-and-set loop, so that concurrent
/// joins never take the same one.
public struct PriorityAllocator: Sendable {
    public let client: ConsulClient
    public let key: String

    public init(client: ConsulClient, key: String) {
        self.client = client
        self.key = key
    }

    /// - Returns: the node's priority, and whether this call wrote it.
    public func allocate(_ node: NodeName) async throws -> (Int, Bool) {
        for attempt in 0..<100 {
            let pair = try await client.get(key, .consistent).value
            let current: KeepalivedNodes
            do { current = try KeepalivedNodes(bytes: pair?.value, key: key) } catch { throw BootstrapError("\(error.message); nothing was changed") }
            let allocation: (priority: Int, updated: KeepalivedNodes?)
            do { allocation = try current.allocating(node) } catch { throw BootstrapError(error.message) }
            guard let updated = allocation.updated else { return (allocation.priority, false) }
            if try await client.put(key, updated.json.serializedBytes(), mode: .cas(pair?.modifyIndex ?? 0)) {
                return (allocation.priority, true)
            }
            // Another node won this round: back off a little, at random, and read again.
            try await Task.sleep(for: .milliseconds(Int64.random(in: 5...(20 + Int64(attempt) * 5))))
        }
        throw BootstrapError("could not take a keepalived priority after 100 check-and-set attempts; too many nodes are joining at once, retry")
    }
}

/// Finds the directory holding `keepalived/` and `pgbouncer/` templates.
public enum TemplateLocator {
    public static func directory(explicit: String?) throws -> String {
        let marker = "pgbouncer/pgbouncer.ini.template"
        if let explicit {
            guard FileManager.default.fileExists(atPath: explicit + "/" + marker) else {
                throw BootstrapError("--templates-dir \(explicit) has no \(marker)")
            }
            return explicit
        }
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["BATON_TEMPLATES"] { candidates.append(env) }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            candidates.append(dir.path)
            candidates.append(dir.appendingPathComponent("share/baton").path)
            dir = dir.deletingLastPathComponent()
        }
        candidates += ["/usr/local/share/baton", "/usr/share/baton", FileManager.default.currentDirectoryPath]
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0 + "/" + marker) }) else {
            throw BootstrapError("cannot find Baton's templates (\(marker)); install them in /usr/share/baton or give --templates-dir")
        }
        return found
    }
}
