import ArgumentParser
import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

struct MonitorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor",
        abstract: "Run the node's monitor: hold or watch the leader lock, fail over, follow, fence.",
        discussion: """
            Reads the node's Baton config (written by `baton bootstrap`) and the cluster settings in \
            Consul's `config` key. SIGTERM stops it gracefully: on the leading primary it stops \
            PostgreSQL before releasing the lock. Its watchdog (`baton-watchdog`, started next to it \
            and outliving it) kills PostgreSQL if the monitor dies, hangs or loses Consul while \
            leading. SIGHUP re-reads the node's config. With --observe it decides and logs every \
            action with its reason but takes none.
            """
    )
    @Option(help: "The node's Baton config.") var config = "/etc/baton/baton.yaml"
    @Flag(help: "Decide and log, but take no action.") var observe = false

    func run() async throws {
        // A peer that went away (the watchdog, Consul, PostgreSQL) is an error to handle, not a reason to die.
        signal(SIGPIPE, SIG_IGN)
        let settings = try Self.loadOrExit(config, command: "monitor")
        Logs.bootstrap(settings)
        let logger = Logger(label: "baton.monitor")
        do { try SchedulingPriority.raise() } catch {
            logger.warning("Running at the default priority: under load the lease may run out before it is renewed", metadata: ["error": "\(error)"])
        }
        let client = try Self.daemonClient(settings)
        let state = settings.stateDirectory.value
        let guardian = WatchdogLink(
            WatchdogLink.Configuration(
                executable: Self.watchdogExecutable, stateDirectory: state, dataDirectory: settings.pgdata.value,
                binDirectory: settings.pgBindir.value, trackFile: KeepalivedSettings.trackFilePath(stateDirectory: state),
                legacyTrackFile: KeepalivedSettings.legacyTrackFilePath(stateDirectory: state),
                kernelWatchdog: settings.kernelWatchdog.rawValue, kernelDevice: settings.kernelWatchdogDevice.value),
            logger: logger)
        let path = config
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let monitor = Monitor(
            settings: settings, client: client, logger: logger, observeOnly: observe, guardian: guardian, reloadSettings: { try Self.load(path) },
            metrics: { registry.emitToString() }, systemd: Self.takeSystemdNotifier(),
            recentLog: Logs.recent)
        logger.info("Monitor starting", metadata: ["monitor.node": "\(settings.node)", "monitor.cluster": "\(settings.cluster)", "monitor.observe_only": "\(observe)"])
        try await Daemon.run(monitor, logger: logger)
        logger.info("Monitor stopped")
    }

    /// systemd's notification socket, if the unit is `Type=notify`; the variables are then removed from
    /// the environment, so that the processes the monitor starts (the watchdog, PostgreSQL, which
    /// speaks the same protocol) do not talk to systemd in its name.
    static func takeSystemdNotifier() -> SystemdNotifier? {
        let notifier = SystemdNotifier(environment: ProcessInfo.processInfo.environment)
        for variable in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] { unsetenv(variable) }
        return notifier
    }

    /// `baton-watchdog`, installed next to `baton`.
    static var watchdogExecutable: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("baton-watchdog").path
    }
}

extension MonitorCommand {
    /// The node's settings, or every problem in the file on standard error and exit status 2.
    static func loadOrExit(_ path: String, command: String) throws -> BootstrapSettings {
        do {
            return try load(path)
        } catch let problems as ValidationProblems {
            FileHandle.standardError.write(Data(("baton \(command): \(path):\n" + problems.description + "\n").utf8))
            throw ExitCode(2)
        }
    }

    /// A daemon's Consul client: a call that hangs (a cut link) must not hold its loop past a
    /// heartbeat or two.
    static func daemonClient(_ settings: BootstrapSettings) throws -> ConsulClient {
        var consul = try ConsulConfiguration.resolve(address: settings.consulAddresses)
        consul.requestTimeout = min(consul.requestTimeout, .seconds(2))
        return ConsulClient(consul)
    }

    static func load(_ path: String) throws -> BootstrapSettings {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationProblems([ValidationProblem("cannot read the Baton config \(path)")])
        }
        return try BootstrapSettings.validate(
            mode: .master, options: try BootstrapOption.load(yaml: text, source: path), environment: ProcessInfo.processInfo.environment,
            hostname: "")
    }
}

