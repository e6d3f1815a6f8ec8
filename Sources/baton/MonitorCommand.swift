import ArgumentParser
import BatonAgent
import BatonBootstrap
import BatonConsul
import BatonCore
import Foundation
import Logging

struct MonitorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor",
        abstract: "Run the node's monitor: hold or watch the leader lock, fail over, follow, fence.",
        discussion: """
            Reads the node's Baton config (written by `baton bootstrap`) and the cluster settings in \
            Consul's `config` key. SIGTERM stops it gracefully: on the leading primary it stops \
            PostgreSQL before releasing the lock. A watchdog process stops PostgreSQL if the monitor \
            dies or hangs while leading. With --observe it decides and logs every action with its \
            reason but takes none.
            """
    )
    @Option(help: "The node's Baton config.") var config = "/etc/baton/baton.yaml"
    @Flag(help: "Decide and log, but take no action.") var observe = false

    func run() async throws {
        Logs.bootstrap()
        let logger = Logger(label: "baton.monitor")
        let settings = try Self.loadOrExit(config, command: "monitor")
        let client = try Self.daemonClient(settings)
        var watchdog: Watchdog? = nil
        if !observe {
            let executable = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.resolvingSymlinksInPath().path
            watchdog = try Watchdog(
                executable: executable, pgBindir: settings.pgBindir.value, pgdata: settings.pgdata.value, osUser: settings.pgOSUser,
                logPath: settings.stateDirectory.value + "/watchdog.log")
        }
        let monitor = Monitor(settings: settings, client: client, logger: logger, observeOnly: observe, watchdog: watchdog)
        logger.info("Monitor starting", metadata: ["monitor.node": "\(settings.node)", "monitor.cluster": "\(settings.cluster)", "monitor.observe_only": "\(observe)"])
        let path = config
        Signals.onHangup {
            do {
                if let refusal = monitor.reload(try Self.load(path)) {
                    logger.error("SIGHUP: reload refused", metadata: ["error": "\(refusal)"])
                }
            } catch {
                logger.error("SIGHUP: the config is invalid; keeping the running settings", metadata: ["error": "\(error)"])
            }
        }
        let loop = Task { await monitor.run() }
        await Signals.waitForTermination()
        logger.info("Monitor stopping")
        loop.cancel()
        await loop.value
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

struct WatchdogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watchdog", abstract: "Internal: the monitor's fencing watchdog (reads deadlines on stdin).", shouldDisplay: false)
    @Option var pgBindir: String
    @Option var pgdata: String
    @Option var pgOsUser: String

    func run() throws {
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let fenced = WatchdogLoop.run(pgBindir: pgBindir, pgdata: pgdata, osUser: pgOsUser) { line in
            FileHandle.standardError.write(Data("baton watchdog: \(line)\n".utf8))
        }
        if fenced { throw ExitCode(3) }
    }
}
