import ArgumentParser
import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonCore
import BatonFence
import BatonPostgres
import Foundation

/// Where a runtime command finds its cluster: the node's Baton config, or explicit flags.
struct NodeOptions: ParsableArguments {
    @Option(help: "The node's Baton config (written by `baton bootstrap`, default /etc/baton/baton.yaml if it exists).")
    var config: String?
    @Option(help: "Cluster name (overrides the config).") var cluster: String?
    @Option(help: "Consul HTTP address(es) (overrides the config).") var consul: String?

    var path: String? { config ?? (FileManager.default.fileExists(atPath: "/etc/baton/baton.yaml") ? "/etc/baton/baton.yaml" : nil) }

    func load() throws -> NodeConfig {
        try NodeConfig.load(path: path, cluster: cluster, consul: consul)
    }

    /// How to reach this node's PostgreSQL over its socket (from the node's Baton config), if there is one.
    func localPostgres() throws -> String? {
        guard let path else { return nil }
        let settings: BootstrapSettings
        do { settings = try MonitorCommand.load(path) } catch { throw AgentError("\(path): \(error)") }
        return ConnInfo.make([
            ("host", settings.pgSocketDirectory.value), ("port", String(settings.pgPort.value)), ("user", "postgres"), ("dbname", "postgres"),
            ("connect_timeout", "3"), ("application_name", "baton-config"),
        ])
    }
}

/// Runs `body`, turning Baton's errors into a message on stderr and an exit status.
func reportingErrors(_ command: String, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as AgentError {
        FileHandle.standardError.write(Data("baton \(command): \(error.description)\n".utf8))
        throw ExitCode(1)
    } catch let problem as ValidationProblem {
        FileHandle.standardError.write(Data("baton \(command): \(problem.message); nothing was written\n".utf8))
        throw ExitCode(2)
    }
}

struct NotifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "keepalived's notify hook: record this node's VRRP state in Consul.",
        discussion: """
            keepalived calls it as `baton notify --config FILE TYPE NAME STATE PRIORITY`. The state is \
            written to keepalived/nodes with check-and-set; keepalived runs notify scripts concurrently, \
            so each notification carries the order keepalived raised it in (its process's start time and \
            PID) and a late, older one never overwrites a newer state. Wrong or missing arguments: an \
            error, exit 2, nothing written.
            """
    )
    @OptionGroup var node: NodeOptions
    @Argument(help: "INSTANCE or GROUP.") var type: String?
    @Argument(help: "The VRRP instance or group name.") var name: String?
    @Argument(help: "MASTER, BACKUP, FAULT, STOP or DELETED.") var state: String?
    @Argument(help: "The instance's priority.") var priority: String?

    func run() async throws {
        let sequence = Notify.ownSequence()
        try await reportingErrors("notify") {
            let notification = try VRRPNotification(arguments: [type, name, state, priority].compactMap { $0 }, sequence: sequence)
            let config = try node.load()
            // Kept first, so that the monitor delivers it if Consul cannot be reached now (a node cut off
            // — the very moment keepalived changes state). Only a newer notification replaces it.
            // ignored: without the node's full file (an older one) nothing is kept; Consul is still told below
            if let path = node.path, let settings = try? MonitorCommand.load(path) {
                let spool = KeepalivedSettings.lastNotificationPath(stateDirectory: settings.stateDirectory.value)
                // ignored: a missing or unreadable kept notification is replaced
                let kept = (try? String(contentsOfFile: spool, encoding: .utf8)).flatMap { try? VRRPNotification(spool: $0) }
                if (kept?.sequence ?? 0) < notification.sequence {
                    do { try AtomicFile.write(notification.spoolText, to: spool, mode: 0o644) } catch {
                        FileHandle.standardError.write(Data("baton notify: cannot keep the notification in \(spool): \(error)\n".utf8))
                    }
                }
            }
            let recorded = try await Notify(config: config, client: try config.client()).record(notification)
            print(recorded ? "recorded \(notification.state) for \(config.node?.value ?? "?")" : "ignored: a newer VRRP state is already recorded")
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the cluster: nodes, roles, leader, VRRP states, events.")
    @OptionGroup var node: NodeOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        try await reportingErrors("status") {
            let config = try node.load()
            let view = try await StatusReader(config: config, client: try config.client()).read()
            print(json ? view.json.serialized() : view.table(), terminator: json ? "\n" : "")
        }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Show or change the cluster-wide settings in Consul.", subcommands: [Show.self, Set.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the effective settings (defaults included) and the cluster's PostgreSQL parameters.")
        @OptionGroup var node: NodeOptions
        func run() async throws {
            try await reportingErrors("config show") {
                let config = try node.load()
                let settings = ClusterSettings(config: config, client: try config.client())
                for (key, value) in try await settings.show().entries { print("\(key) = \(value)") }
                let parameters = try await settings.parameters()
                for name in parameters.values.keys.sorted() { print("postgresql.\(name) = \(parameters.values[name]!)") }
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change settings: NAME=VALUE… and postgresql.NAME=VALUE… (all or nothing, check-and-set).",
            discussion: """
                Settings: \(ClusterConfig.keys.joined(separator: ", ")). postgresql.NAME=VALUE sets a PostgreSQL parameter \
                on every node (in baton-parameters.conf, included before baton.conf): the value is checked against this \
                node's running PostgreSQL (pg_settings: type, range, units, allowed values) before anything is stored; \
                every monitor applies it and reloads. A parameter that needs a restart shows as pending in `baton status` \
                until `baton restart --all --pending`. Parameters Baton sets itself are refused, with the reason.
                """)
        @OptionGroup var node: NodeOptions
        @Option(name: .customLong("unset"), help: "Remove postgresql.NAME (PostgreSQL's own default or postgresql.conf applies again). Repeatable.")
        var unset: [String] = []
        @Argument(help: "NAME=VALUE pairs.") var assignments: [String] = []
        func run() async throws {
            try await reportingErrors("config set") {
                let config = try node.load()
                guard !assignments.isEmpty || !unset.isEmpty else { throw AgentError("nothing to set: give NAME=VALUE pairs or --unset postgresql.NAME") }
                // The node's PostgreSQL is looked up only when a postgresql.* value is to be checked.
                let stored = try await ClusterSettings(config: config, client: try config.client()).set(assignments, unset: unset) { name in
                    guard let conninfo = try node.localPostgres() else {
                        throw AgentError("postgresql.* values are checked against the node's running PostgreSQL: give the node's --config")
                    }
                    return try await PostgresSettingsCatalog(conninfo: conninfo).definition(name)
                }
                for (key, value) in stored.config.entries { print("\(key) = \(value)") }
                for name in stored.parameters.values.keys.sorted() { print("postgresql.\(name) = \(stored.parameters.values[name]!)") }
                if !stored.needRestart.isEmpty {
                    print("\(stored.needRestart.joined(separator: ", ")) take(s) effect after a restart: `baton restart --all --pending`")
                }
            }
        }
    }
}

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "keepalived's track script: exit 0 only on the node that holds the leader lock and runs a writable primary.",
        discussion: "Reads the monitor's state file in --state-dir (from the node's Baton config); answers in milliseconds.")
    @Option(help: "The node's Baton config.") var config = "/etc/baton/baton.yaml"
    @Option(help: "Baton's state directory (overrides the config).") var stateDir: String?
    @Flag(help: "Say why, on stdout.") var verbose = false
    @Flag(help: """
        keepalived's track script beside its tracked file: pass on every node whose monitor is alive, unless the \
        tracked file says this node leads — then only with a live lease. The file decides the VIP at once.
        """)
    var besideTrackFile = false

    func run() throws {
        var directory = stateDir
        if directory == nil, let text = try? String(contentsOfFile: config, encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("state-dir:") {
                directory = line.dropFirst("state-dir:".count).trimmingCharacters(in: CharacterSet(charactersIn: " '\""))
            }
        }
        let stateDirectory = directory ?? "/var/lib/baton"
        // ignored: a missing or unreadable file is judged as such below
        let state = try? String(contentsOfFile: CheckState.path(stateDirectory: stateDirectory), encoding: .utf8)
        if besideTrackFile {
            let tracked = [KeepalivedSettings.trackFilePath(stateDirectory: stateDirectory), KeepalivedSettings.legacyTrackFilePath(stateDirectory: stateDirectory)]
                .map { try? String(contentsOfFile: $0, encoding: .utf8) }  // ignored: as above
            if let why = CheckState.besideTrackFile(state, trackFiles: tracked, now: MonotonicClock.nanoseconds(), boot: MonotonicClock.bootID()) {
                if verbose { print("fail: \(why)") }
                throw ExitCode(1)
            }
            if verbose { print("pass: the monitor is alive") }
            return
        }
        let verdict = CheckState.verdict(state, now: MonotonicClock.nanoseconds(), boot: MonotonicClock.bootID())
        switch verdict {
        case .primary:
            if verbose { print("primary") }
        case .notPrimary(let why):
            if verbose { print("not primary: \(why)") }
            throw ExitCode(1)
        }
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Pause automatic failover cluster-wide (maintenance: PostgreSQL upgrades, Consul work).")
    @OptionGroup var node: NodeOptions
    @Option(help: "Why, shown by `baton status`.") var reason = "maintenance"

    func run() async throws {
        try await reportingErrors("pause") {
            let config = try node.load()
            try await Maintenance(config: config, client: try config.client()).pause(reason: reason)
            print("automatic failover paused for cluster \(config.cluster)")
        }
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume automatic failover.")
    @OptionGroup var node: NodeOptions

    func run() async throws {
        try await reportingErrors("resume") {
            let config = try node.load()
            try await Maintenance(config: config, client: try config.client()).resume()
            print("automatic failover resumed for cluster \(config.cluster)")
        }
    }
}

struct SwitchoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Planned change of primary: the leader stops cleanly and NODE takes over.",
        discussion: """
            Refused, with the reason, unless NODE is a healthy standby within maximum_lag_on_failover of the leader that \
            failover could promote (not nofailover; in synchronous mode the synchronous standby). --check says whether it \
            would be, changing nothing (exit status 0: it would go ahead, 1: refused). --at TIME schedules it             (ISO 8601 with a zone, such as 2026-12-24T03:00:00Z or 2026-12-24T04:00:00+01:00; at most 30 days             ahead): the leader asks for it when the time comes, checked again then; `baton status` lists it,             --cancel removes it.
            """)
    @OptionGroup var node: NodeOptions
    @Option(help: "The standby that becomes the primary.") var to: String?
    @Option(help: "Seconds to wait for the handover.") var timeout = 60
    @Flag(help: "Only say whether the switchover would be asked for, and why not; change nothing.") var check = false
    @Option(help: "Schedule it for this time (ISO 8601 with a zone) instead of now.") var at: String?
    @Flag(help: "Remove the scheduled switchover.") var cancel = false

    func validate() throws {
        if cancel {
            guard to == nil, at == nil, !check else { throw ValidationError("--cancel takes no --to, --at or --check") }
        } else {
            guard to != nil else { throw ValidationError("--to NODE is required (or --cancel)") }
            if at != nil, check { throw ValidationError("--check says whether a switchover now would be asked for; give --at or --check") }
        }
    }

    /// `text` as seconds since 1970: ISO 8601 with a zone (Z or ±hh:mm), whole seconds or fractions.
    static func parseTime(_ text: String) throws -> Int64 {
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970) }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970) }
        throw AgentError("--at \(Quote.show(text)) is not an ISO 8601 time with a zone, such as 2026-12-24T03:00:00Z")
    }

    func run() async throws {
        try await reportingErrors("switchover") {
            let config = try node.load()
            let takeover = Takeover(config: config, client: try config.client())
            if cancel {
                guard let removed = try await takeover.cancelScheduled() else { throw AgentError("no switchover is scheduled") }
                print("cancelled the switchover to \(removed.to) scheduled at \(removed.atText)")
                return
            }
            let target = try NodeName(to ?? "")
            if let at {
                let schedule = try await takeover.schedule(to: target, at: try Self.parseTime(at), now: Int64(Date().timeIntervalSince1970))
                print("scheduled: \(schedule.from) hands over to \(schedule.to) at \(schedule.atText), checked again then (`baton switchover --cancel` removes it)")
                return
            }
            if check {
                if let refusal = try await takeover.checkSwitchover(to: target) {
                    print("switchover to \(target) would be refused: \(refusal)")
                    throw ExitCode(1)
                }
                print("switchover to \(target) would be asked for: it is a healthy standby failover could promote, within the lag limit")
                return
            }
            let took = try await takeover.switchover(to: target, timeout: .seconds(timeout))
            print("\(target) is the primary (switchover took \(took.millisecondCount) ms)")
        }
    }
}

struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "What would happen if the primary died now: who would take over, the ranking, and why each other node would not.",
        discussion: "The same ranking the monitors decide with, from the same reports. Changes nothing.")
    @OptionGroup var node: NodeOptions
    @Flag(help: "Print JSON instead of text.") var json = false

    func run() async throws {
        try await reportingErrors("explain") {
            let config = try node.load()
            let explanation = try await Takeover(config: config, client: try config.client()).explain()
            print(json ? explanation.json.serialized() : explanation.text, terminator: json ? "\n" : "")
        }
    }
}

struct FailoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Manual failover when no primary holds the lock: promote NODE.",
        discussion: "Promoting a standby that may lack commits (not the most advanced, over the lag limit) needs --allow-data-loss.")
    @OptionGroup var node: NodeOptions
    @Option(help: "The standby to promote.") var to: String
    @Flag(help: "Promote it even if it may lack acknowledged commits.") var allowDataLoss = false
    @Option(help: "Seconds to wait for the promotion.") var timeout = 60

    func run() async throws {
        try await reportingErrors("failover") {
            let config = try node.load()
            let took = try await Takeover(config: config, client: try config.client()).failover(
                to: try NodeName(to), allowDataLoss: allowDataLoss, timeout: .seconds(timeout))
            print("\(to) is the primary (failover took \(took.millisecondCount) ms)")
        }
    }
}

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Collect what a bug report needs into one archive: status, explain, config, events, Consul's keys, and each node's monitor log, pg_controldata and PostgreSQL log.",
        discussion: """
            Run it on a node, as root (it signs its requests to the other nodes' APIs with the \
            replication password in this node's passfile). Secrets are removed: passwords in \
            values, conninfo and URLs. Each item collected, or why not, is listed. Changes nothing.
            """)
    @OptionGroup var node: NodeOptions
    @Option(help: "The archive to write (default ./baton-report-CLUSTER-TIME.tar.gz).") var output: String?

    func run() async throws {
        try await reportingErrors("report") {
            // Everything it writes, the archive too, is for its owner only.
            umask(0o077)
            let config = try node.load()
            let settings = try node.path.map { path in
                do { return try MonitorCommand.load(path) } catch { throw AgentError("\(path): \(error)") }
            }
            let stamp = rfc3339Now().replacingOccurrences(of: ":", with: "")
            let name = "baton-report-\(config.cluster)-\(stamp)"
            let archive = output ?? FileManager.default.currentDirectoryPath + "/" + name + ".tar.gz"
            guard archive.hasSuffix(".tar.gz") || archive.hasSuffix(".tgz") else { throw AgentError("--output must end in .tar.gz or .tgz") }
            let work = NSTemporaryDirectory() + "baton-report-" + UUID().uuidString.prefix(8)
            defer { try? FileManager.default.removeItem(atPath: work) }  // ignored: a temporary directory left behind
            print("Collecting for cluster \(config.cluster):")
            let report = BugReport(config: config, client: try config.client(), settings: settings, version: Baton.configuration.version)
            let missing = try await report.collect(into: work + "/" + name) { print($0) }
            let tar = try await CommandRunner().run("/bin/tar", ["-czf", archive, "-C", work, name])
            guard tar.succeeded else { throw AgentError("tar could not write \(archive): \(tar.output)") }
            chmod(archive, 0o600)
            let size = (try? FileManager.default.attributesOfItem(atPath: archive)[.size] as? Int) ?? 0
            print("Wrote \(archive) (\(size) bytes)" + (missing > 0 ? "; \(missing) item(s) could not be collected, see above" : ""))
        }
    }
}
