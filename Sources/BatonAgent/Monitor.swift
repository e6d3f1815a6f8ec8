import BatonSettings
import BatonConsul
import BatonFence
import BatonCore
import BatonPostgres
import BatonSigning
import ConsulAPI
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// What wakes the monitor's loop before its next tick.
enum MonitorWake: Sendable {
    /// Look again: the lock changed hands, PostgreSQL closed the monitor's idle connection, the lease
    /// ran out, an action asked for a quick second look.
    case look
    /// SIGHUP: new node settings (already validated).
    case reload(BootstrapSettings)
    /// Graceful shutdown (SIGTERM).
    case stop
}

/// `baton monitor`: one loop per node that observes its PostgreSQL and the cluster in Consul, decides
/// with ``MonitorDecision`` and carries the decision out (or only logs it with `--observe`).
///
/// It runs as a swift-service-lifecycle service. Its loop's state has one owner — the task that runs
/// ``run()`` — and everything else runs as child tasks of it: the lease (the heartbeat), the watch on
/// the leader key, the death watch on PostgreSQL, SIGHUP, the event command, pgBackRest's TLS server
/// (``BackupServer``) and background work (the checkpoint after a promotion). On graceful shutdown a
/// leading primary stops PostgreSQL before it gives up the lock, so that no replica promotes while it
/// still takes writes.
public struct Monitor: Service {
    let settings: BootstrapSettings
    let client: ConsulClient
    let logger: Logger
    let observeOnly: Bool
    let guardian: any FenceGuard
    let makeDatabase: @Sendable (BootstrapSettings) -> any LocalDatabase
    /// Reads the node's file again (SIGHUP); nil: SIGHUP is not handled.
    let reloadSettings: (@Sendable () throws -> BootstrapSettings)?
    /// The metrics in Prometheus' text format, for `/metrics`.
    let metrics: @Sendable () -> String
    /// Whether to serve the node API.
    let serveAPI: Bool
    /// systemd's notification socket (`Type=notify`, `WatchdogSec`); nil when not run by systemd.
    let systemd: SystemdNotifier?
    /// The daemon's last log lines, for `GET /report`.
    let recentLog: RecentLogLines?

    public init(
        settings: BootstrapSettings, client: ConsulClient, logger: Logger, observeOnly: Bool, guardian: any FenceGuard,
        makeDatabase: @escaping @Sendable (BootstrapSettings) -> any LocalDatabase = { PostgresNode(settings: $0) },
        reloadSettings: (@Sendable () throws -> BootstrapSettings)? = nil, metrics: @escaping @Sendable () -> String = { "" },
        serveAPI: Bool = true, systemd: SystemdNotifier? = nil, recentLog: RecentLogLines? = nil
    ) {
        self.systemd = systemd
        self.recentLog = recentLog
        self.metrics = metrics
        self.serveAPI = serveAPI
        self.settings = settings
        self.client = client
        self.logger = logger
        self.observeOnly = observeOnly
        self.guardian = guardian
        self.makeDatabase = makeDatabase
        self.reloadSettings = reloadSettings
    }

    /// The node API's signer, keyed by the replication password in this node's passfile (bootstrap
    /// wrote it); without one, failsafe requests are neither signed nor granted.
    static func signer(_ settings: BootstrapSettings, logger: Logger) -> NodeAPISigner? {
        guard let text = try? String(contentsOfFile: settings.passfile.value, encoding: .utf8), let password = PostgresFiles.password(fromPassfile: text)
        else {
            logger.warning(
                "Cannot read the replication password from the passfile: failsafe requests are neither signed nor granted (bootstrap writes it)",
                metadata: ["monitor.passfile": "\(settings.passfile.value)"])
            return nil
        }
        return NodeAPISigner(replicationPassword: password, cluster: settings.cluster)
    }

    public func run() async throws {
        let (wakes, wake) = AsyncStream<MonitorWake>.makeStream(bufferingPolicy: .bufferingNewest(8))
        let (jobs, background) = AsyncStream<@Sendable () async -> Void>.makeStream()
        let apiTLS = settings.apiTLS.map { TLSFiles(caFile: $0.clientCA?.value, certFile: $0.certificate.value, keyFile: $0.key.value) } ?? TLSFiles()
        let signer = Self.signer(settings, logger: logger)
        let state = NodeState(node: settings.node, cluster: settings.cluster, signer: signer)
        let lease = Lease(
            client: client, guardian: guardian, node: settings.node, cluster: settings.cluster, stateDirectory: settings.stateDirectory.value,
            logger: logger, apiTLS: apiTLS, signer: signer, sightings: LeaderSightings(), wake: { wake.yield(.look) },
            published: { leading, deadline in
                state.update { v in
                    v.leading = leading
                    v.leaseDeadline = deadline
                }
            })
        let api =
            serveAPI
            ? try await NodeAPI.serve(
                settings: settings, state: state, metrics: metrics,
                // ignored: without Consul, /cluster shows the last snapshot without events
                events: { [client, keys = settings.keys] in (try? await client.list(keys.eventsPrefix).value) ?? [] },
                observe: { [makeDatabase, settings] in
                    // A connection of its own: the loop's is the loop's alone.
                    let database = makeDatabase(settings)
                    defer { database.close() }
                    return await database.observe()
                }, diagnostics: { [settings, recentLog] in await NodeDiagnostics.collect(settings: settings, recentLog: recentLog) }, logger: logger)
            : nil
        let events = settings.eventCommand.map { EventCommand(program: $0.value, cluster: settings.cluster, logger: logger) }
        var loop = MonitorLoop(
            settings: settings, client: client, logger: logger, observeOnly: observeOnly, lease: lease, database: makeDatabase(settings),
            makeDatabase: makeDatabase, events: events, background: background, wake: wake, state: state, apiTLS: apiTLS)
        let conninfo = loop.database.conninfo
        await withDiscardingTaskGroup { drained in
            // Events still queued run after the loop stops; everything else stops with it.
            if let events { drained.addTask { await events.run() } }
            await withDiscardingTaskGroup { group in
                // The lease beats from the start (in observe-only mode too: it never acquires there), and
                // on through the graceful stop, until the lock is released.
                group.addTask { await lease.run() }
                group.addTask { [client, keys = settings.keys, sightings = loop.leaderSightings] in
                    await watchLeaderHolder(client: client, key: keys.leader, sightings: sightings, wake: { wake.yield(.look) })
                }
                if let conninfo { group.addTask { await watchForDeath(conninfo: conninfo, wake: { wake.yield(.look) }) } }
                if let backup = settings.backup, backup.tls != nil, !observeOnly {
                    group.addTask { [logger, osUser = settings.pgOSUser] in await BackupServer(backup: backup, osUser: osUser, logger: logger).run() }
                }
                group.addTask {
                    await withDiscardingTaskGroup { work in
                        for await job in jobs { work.addTask { await job() } }
                    }
                }
                if let systemd, let interval = systemd.watchdogInterval {
                    group.addTask { [logger] in
                        await pingSystemd(systemd, policy: SystemdWatchdogPolicy(interval: interval), state: state, logger: logger)
                    }
                }
                if let reloadSettings, !observeOnly {
                    group.addTask { [logger] in
                        for await _ in await UnixSignalsSequence(trapping: .sighup) {
                            do {
                                wake.yield(.reload(try reloadSettings()))
                            } catch {
                                logger.error("SIGHUP: the config is invalid; keeping the running settings", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                }
                // Ready once the API serves and the loop is about to run (not after the first loop,
                // which may wait minutes for PostgreSQL's crash recovery).
                systemd?.notify("READY=1\nSTATUS=monitoring \(settings.cluster) as \(settings.node)")
                await withGracefulShutdownHandler {
                    await loop.run(wakes)
                } onGracefulShutdown: { [systemd] in
                    systemd?.notify("STOPPING=1")
                    wake.yield(.stop)
                }
                await loop.shutdown()
                background.finish()
                group.cancelAll()
            }
            events?.finish()
        }
        await api?.shutdown()
    }
}

/// Tells systemd the monitor is alive while ``SystemdWatchdogPolicy`` says so; runs until cancelled.
func pingSystemd(_ systemd: SystemdNotifier, policy: SystemdWatchdogPolicy, state: NodeState, logger: Logger) async {
    let startedAt = MonotonicClock.nanoseconds()
    var wedged = false
    while !Task.isCancelled {
        let alive = policy.alive(
            now: MonotonicClock.nanoseconds(), loopRanAt: state.current.loopRanAt, startedAt: startedAt,
            programsRunning: CommandRunner.running.load(ordering: .relaxed))
        if alive {
            systemd.notify("WATCHDOG=1")
        } else if !wedged {
            logger.critical(
                "The monitor's loop has made no progress and waits for no program: no longer telling systemd it is alive, which restarts the monitor",
                metadata: ["monitor.stall_limit": "\(policy.stallLimit)"])
        }
        wedged = !alive
        try? await Task.sleep(for: policy.pingEvery)  // ignored: cancelled, the loop ends
    }
}

/// Wakes the loop each time PostgreSQL closes an idle connection of the monitor's own — it stops or
/// crashes — so that a dead primary is released without waiting for a tick. Runs until cancelled.
func watchForDeath(conninfo: String, wake: @Sendable () -> Void) async {
    while !Task.isCancelled {
        guard let connection = try? await PostgresConnection.connect(conninfo) else {
            // Not running (yet): look again in a second; the loop's own probe covers the meantime.
            try? await Task.sleep(for: .seconds(1))
            continue
        }
        let cancelled = CancellationFlag()
        await withTaskCancellationHandler {
            await connection.waitUntilServerSpeaks { cancelled.isSet }
        } onCancel: {
            cancelled.set()
        }
        connection.close()
        if !Task.isCancelled { wake() }
        try? await Task.sleep(for: .milliseconds(200))
    }
}

/// A flag one task sets and another task or a blocking thread reads.
/// The repository's newest backup as pgBackRest's `info` last said, read again in the monitor's
/// background work when the repository's `backup.info` changed (a backup ended, or was expired) and at
/// least every so often, one read at a time.
final class NewestBackup: Sendable {
    private struct State {
        var value: ArchiveHealth.Backups = .unknown
        var checkedAt: ContinuousClock.Instant?
        var infoChanged: Date?
        var running = false
    }
    private let state = Mutex(State())

    var value: ArchiveHealth.Backups { state.withLock { $0.value } }

    /// A backup this monitor made ended then.
    func record(ended: Double) { state.withLock { $0.value = .newest(ended) } }

    func refresh(every interval: Duration, tool: PgBackRestTool, logger: Logger, background: AsyncStream<@Sendable () async -> Void>.Continuation) {
        let info = tool.settings.repository.value + "/backup/" + tool.settings.stanza + "/backup.info"
        // ignored: a repository not written yet has no backup.info; the interval still brings a read
        let changed = (try? FileManager.default.attributesOfItem(atPath: info)[.modificationDate]) as? Date
        let due = state.withLock { s -> Bool in
            guard !s.running, s.checkedAt.map({ ContinuousClock.now - $0 >= interval }) ?? true || changed != s.infoChanged else { return false }
            s.running = true
            s.infoChanged = changed
            return true
        }
        guard due else { return }
        background.yield { [self] in
            var newest: ArchiveHealth.Backups? = nil
            do {
                newest = try await tool.info().backups.last.map { .newest(Double($0.stopped)) } ?? ArchiveHealth.Backups.none
            } catch {
                logger.warning("Cannot read the backups from pgBackRest; tried again in a while", metadata: ["error": "\(error)"])
            }
            state.withLock { s in
                if let newest { s.value = newest }
                s.checkedAt = .now
                s.running = false
            }
        }
    }
}

/// The leader's scheduled backups (`backup_every`): one at a time, in the monitor's background work.
final class ScheduledBackup: Sendable {
    private let running = Mutex(false)

    /// Starts a backup of `type` unless one runs; `Backups` checks that this node leads and records the
    /// event. The backup made counts as the newest at once (no second one starts before `info` is read).
    func start(
        _ backups: Backups, type: String, newest: NewestBackup, logger: Logger, background: AsyncStream<@Sendable () async -> Void>.Continuation
    ) {
        let starting = running.withLock { r -> Bool in
            guard !r else { return false }
            r = true
            return true
        }
        guard starting else { return }
        background.yield { [self] in
            defer { running.withLock { $0 = false } }
            logger.notice("Starting a scheduled backup", metadata: ["backup.type": "\(type)"])
            do {
                let made = try await backups.backup(type: type) { _ in }
                newest.record(ended: Double(made.stopped))
                logger.notice("Scheduled backup done", metadata: ["backup.label": "\(made.label)"])
            } catch {
                logger.warning("The scheduled backup failed; tried again at the next loop that finds one due", metadata: ["error": "\(error)"])
            }
        }
    }
}

final class CancellationFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
    func clear() { value.withLock { $0 = false } }
}
