import ArgumentParser
import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import Foundation
import Logging
import ServiceLifecycle

struct PgBouncerAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgbouncer-agent",
        abstract: "Keep this node's pgbouncer routed to the primary; hold clients during a switchover.",
        discussion: """
            Watches the leader lock and the nodes' registrations in Consul (blocking queries). When \
            the leader changes it rewrites the host and port of the database lines in pgbouncer.ini's \
            [databases] (the rest of the file stays as written), atomically, then RELOADs pgbouncer \
            through its admin console over the Unix socket, as pgbouncer's OS user. With no promoted \
            leader, or while a switchover stops the primary, pgbouncer is PAUSEd: clients wait \
            instead of failing. SIGTERM stops it; pgbouncer is left as it is.
            """
    )
    @Option(help: "The node's Baton config.") var config = "/etc/baton/baton.yaml"
    @Option(help: "How long a PAUSE may wait for transactions in flight before the remaining connections are killed (seconds).")
    var pauseTimeout: Double = 5

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        guard pauseTimeout > 0, pauseTimeout <= 300 else {
            throw ValidationError("--pause-timeout must be more than 0 and at most 300 seconds")
        }
        let settings = try MonitorCommand.loadOrExit(config, command: "pgbouncer-agent")
        Logs.bootstrap(settings)
        let logger = Logger(label: "baton.pgbouncer-agent")
        let agent = PgBouncerAgent(
            settings: settings, client: try MonitorCommand.daemonClient(settings), logger: logger, pauseBound: .milliseconds(Int64(pauseTimeout * 1000)))
        logger.info("pgbouncer agent starting", metadata: ["agent.node": "\(settings.node)", "agent.ini": "\(settings.pgbouncerIni)"])
        try await Daemon.run(agent, logger: logger)
    }
}
