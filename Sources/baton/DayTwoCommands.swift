import ArgumentParser
import BatonAgent
import BatonCore
import ConsulAPI
import Foundation

/// Which nodes a restart or reload is for: named ones, or every registered node.
struct NodeSelection: ParsableArguments {
    @Argument(help: "The nodes (registered names).") var nodes: [String] = []
    @Flag(help: "Every registered node: the replicas first, the leader last.") var all = false

    /// The node names given, or every registered node with --all.
    static func resolve(_ names: [String], all: Bool, _ commander: NodeCommander) async throws -> [NodeName] {
        if all {
            guard names.isEmpty else { throw AgentError("give node names or --all, not both") }
            return try await commander.allNodes()
        }
        return try names.map { try NodeName($0) }
    }
}

/// Runs one kind of node command and prints each node's outcome.
func runNodeCommand(_ name: String, _ kind: NodeCommand.Kind, options: NodeOptions, nodes: [String], all: Bool, onlyPending: Bool, timeout: Int) async throws {
    try await reportingErrors(name) {
        let config = try options.load()
        let commander = NodeCommander(config: config, client: try config.client())
        let targets = try await NodeSelection.resolve(nodes, all: all, commander)
        let outcomes = try await commander.run(kind, on: targets, onlyPending: onlyPending, timeout: .seconds(timeout)) { print($0) }
        for (node, outcome) in outcomes { print("\(node): \(outcome.state.rawValue): \(outcome.detail)") }
    }
}

struct RestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart",
        abstract: "Restart PostgreSQL on nodes without a failover.",
        discussion: """
            Each node's monitor restarts its own PostgreSQL, one node at a time. On the primary the leader lock \
            is kept (the lease beats throughout and is proven again before PostgreSQL starts), every pgbouncer \
            holds its clients meanwhile, and the replicas do not take over. With --pending only nodes whose \
            settings wait for a restart (pg_settings.pending_restart) restart.
            """)
    @OptionGroup var node: NodeOptions
    @OptionGroup var selection: NodeSelection
    @Flag(help: "Only where a changed setting waits for a restart.") var pending = false
    @Option(help: "Seconds to wait for each node.") var timeout = 120

    func run() async throws {
        try await runNodeCommand("restart", .restart, options: node, nodes: selection.nodes, all: selection.all, onlyPending: pending, timeout: timeout)
    }
}

struct ReloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload", abstract: "Reload PostgreSQL's configuration on nodes (and report what waits for a restart).")
    @OptionGroup var node: NodeOptions
    @OptionGroup var selection: NodeSelection
    @Option(help: "Seconds to wait for each node.") var timeout = 30

    func run() async throws {
        try await runNodeCommand("reload", .reload, options: node, nodes: selection.nodes, all: selection.all, onlyPending: false, timeout: timeout)
    }
}

struct ReinitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reinit",
        abstract: "Rebuild a replica: its monitor re-clones it from the primary or the backup repository.",
        discussion: """
            With pgBackRest backups (and --clone-from auto or backup) the latest backup is restored over the data directory \
            with --delta: only files that differ are copied. Else the old data directory is moved aside (never deleted) and \
            pg_basebackup copies the primary. Refused for the node that holds the leader lock.
            """)
    @OptionGroup var node: NodeOptions
    @Argument(help: "The replica to rebuild.") var target: String
    @Option(help: "Seconds to wait for the clone.") var timeout = 3600

    func run() async throws {
        try await runNodeCommand("reinit", .reinit, options: node, nodes: [target], all: false, onlyPending: false, timeout: timeout)
    }
}

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Take a node that is gone for good out of the cluster.",
        discussion: """
            Deletes its registration, status, tags and pgbouncer report, frees its keepalived priority (and its \
            unicast peer entry on every node), deregisters its Consul service; the leader drops its replication \
            slot. Refused for the lock holder, and for a node whose monitor runs unless --force.
            """)
    @OptionGroup var node: NodeOptions
    @Argument(help: "The node to remove.") var target: String
    @Flag(help: "Remove it even though its monitor runs.") var force = false
    @Option(help: "Seconds to wait for the leader to drop its replication slot.") var timeout = 15

    func run() async throws {
        try await reportingErrors("remove") {
            let config = try node.load()
            let name = try NodeName(target)
            for line in try await NodeRemoval(config: config, client: try config.client()).remove(name, force: force, timeout: .seconds(timeout)) {
                print(line)
            }
        }
    }
}

struct NodeTagCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Change a node's tags at runtime.", subcommands: [Set.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set NODE's tags: priority=N (0–1000), nofailover=true|false, nosync=true|false.",
            discussion: "Honoured at once by the failover ranking and the synchronous standby choice, shown by `baton status`; no re-bootstrap.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "The node.") var target: String
        @Argument(help: "NAME=VALUE pairs.") var assignments: [String] = []

        func run() async throws {
            try await reportingErrors("node set") {
                let config = try node.load()
                let name = try NodeName(target)
                let tags = try await NodeTagging(config: config, client: try config.client()).set(name, assignments)
                print("\(name): priority=\(tags.priority.map(String.init) ?? "(registered)") nofailover=\(tags.noFailover) nosync=\(tags.noSync)")
            }
        }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Show the cluster's event history: failovers, switchovers, fencing, restarts, configuration changes.")
    @OptionGroup var node: NodeOptions
    @Option(help: "Only events newer than this (e.g. 30m, 1h, 24h).") var since: String?
    @Option(name: .customLong("node"), help: "Only this node's events.") var only: String?
    @Option(help: "Only events of this kind (promote, fence, switchover, restart, config…).") var kind: String?
    @Flag(help: "Keep printing new events until interrupted.") var follow = false
    @Flag(help: "One JSON object per line.") var json = false

    func run() async throws {
        try await reportingErrors("events") {
            let config = try node.load()
            var after: UInt64 = 0
            if let since {
                let age: GoDuration
                do { age = try GoDuration(parsing: since) } catch { throw AgentError("--since \(Quote.show(since)) is not a duration such as 30m or 24h") }
                after = UInt64(max(0, Date().timeIntervalSince1970 * 1e9 - Double(age.nanoseconds)))
            }
            let filterNode = try only.map { try NodeName($0) }
            let history = EventHistory(config: config, client: try config.client())
            var printed: Swift.Set<String> = []
            var index: UInt64 = 0
            var first = true
            repeat {
                let result = try await history.read(sinceNanoseconds: after, node: filterNode, kind: kind, index: index, wait: first ? nil : .seconds(30))
                index = result.index
                for (key, event) in result.events where !printed.contains(key) {
                    printed.insert(key)
                    print(json ? event.json.serialized() : "\(event.time)  \(event.node)  \(event.kind)  \(event.detail)")
                }
                // Followed, each event shows as it comes, also through a pipe.
                fflush(nil)
                first = false
            } while follow
        }
    }
}
