import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `baton pgbouncer-agent`: keeps this node's pgbouncer routed to the node that holds the leader lock
/// and has promoted, holds clients (PAUSE) while nobody writable leads, a switchover stops the primary,
/// or the agent cannot tell who leads, and acknowledges a switchover's pause requests in Consul. The
/// decision is ``PgBouncerRouting/decide(leader:registrations:request:)``; this is the I/O around it.
///
/// Every step is idempotent — PAUSE on a paused pgbouncer, RESUME on a running one, a target that is
/// already right — so the agent simply re-applies the decision on every change in Consul and every
/// ``BouncerStatus/refresh`` seconds (every second while something is wrong): a restarted pgbouncer, a
/// lost acknowledgement or a missed change all converge.
///
/// Cut off from Consul, the agent keeps its target only as long as the leader it routes to could still
/// be leading: past the leader's fence deadline (`fence_timeout`) that primary may have fenced itself
/// and been replaced, so clients are held until the agent can decide again.
///
/// A swift-service-lifecycle service; its state is owned by the task that runs it.
public struct PgBouncerAgent: Service {
    let settings: BootstrapSettings
    let client: ConsulClient
    let logger: Logger
    /// How long a PAUSE may wait for transactions in flight before the remaining connections are killed.
    let pauseBound: Duration

    public init(settings: BootstrapSettings, client: ConsulClient, logger: Logger, pauseBound: Duration = .seconds(5)) {
        self.settings = settings
        self.client = client
        self.logger = logger
        self.pauseBound = pauseBound
    }

    public func run() async throws {
        // true: something changed in Consul, decide afresh; false: the tick, check the leader only.
        let (wakes, wake) = AsyncStream<Bool>.makeStream(bufferingPolicy: .bufferingNewest(4))
        var loop = PgBouncerAgentLoop(settings: settings, client: client, logger: logger, pauseBound: pauseBound)
        let keys = settings.keys
        let leaderNode = loop.leaderNode
        let emergency = EmergencyPause(settings: settings, logger: logger)
        await withDiscardingTaskGroup { group in
            group.addTask {
                await emergency.prepare()
                await leaderNode.run(wake: { wake.yield(true) }, pauseNow: { await emergency.pause() })
            }
            group.addTask { [client] in await watchLeaderHolder(client: client, key: keys.leader, wake: { wake.yield(true) }) }
            group.addTask { [client] in
                for await _ in ConsulWatch(wait: .seconds(30), query: { try await client.list(keys.nodesPrefix, $0) }) { wake.yield(true) }
            }
            group.addTask { [client] in
                for await _ in ConsulWatch(wait: .seconds(30), query: { try await client.get(keys.pgbouncerPause, $0) }) { wake.yield(true) }
            }
            await withGracefulShutdownHandler {
                var iterator = wakes.makeAsyncIterator()
                var full = true
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    await loop.iterate(full: full)
                    let pause = loop.nextInterval()
                    await withTaskGroup(of: Void.self) { tick in
                        tick.addTask {
                            // A tick cancelled because something else woke the loop must not wake it again.
                            do {
                                try await Task.sleep(for: pause)
                                wake.yield(false)
                            } catch {}
                        }
                        full = await iterator.next() ?? true
                        tick.cancelAll()
                    }
                }
            } onGracefulShutdown: {
                wake.yield(false)
            }
            loop.close()
            group.cancelAll()
        }
    }
}

/// The watch's emergency PAUSE, over a console connection of its own (the loop's may be busy with
/// Consul's reads; its next pass finds pgbouncer paused), opened ahead and kept idle: opening one — a
/// thread that takes pgbouncer's OS user, a login — took 2–15 ms after the leader was found gone, in
/// which clients retrying 20 ms after their error reached pgbouncer and met its failed logins to the
/// dead server ("server login has been failing").
final class EmergencyPause: Sendable {
    private let settings: BootstrapSettings
    private let logger: Logger
    private let ready = Mutex<PostgresConnection?>(nil)

    init(settings: BootstrapSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// Opens the connection the next PAUSE uses, unless one is ready.
    func prepare() async {
        guard ready.withLock({ $0 == nil }) else { return }
        // Ignored: without it the next PAUSE opens one of its own.
        guard let connection = try? await PgBouncerAgentLoop.connectToConsole(settings) else { return }
        let spare = ready.withLock { held -> PostgresConnection? in
            guard held == nil else { return connection }
            held = connection
            return nil
        }
        spare?.close()
    }

    /// PAUSE now: over the ready connection, or — none, or it broke (pgbouncer restarted) — a new one.
    func pause() async {
        let prepared = ready.withLock { held -> PostgresConnection? in
            defer { held = nil }
            return held
        }
        if let prepared, await send(over: prepared) {
            await prepare()
            return
        }
        do {
            _ = await send(over: try await PgBouncerAgentLoop.connectToConsole(settings), logging: true)
        } catch {
            logger.warning("Cannot pause pgbouncer for a gone leader", metadata: ["error": "\(error)"])
        }
        await prepare()
    }

    /// Sends PAUSE and closes the connection; whether pgbouncer is paused now (or was already).
    private func send(over console: PostgresConnection, logging: Bool = false) async -> Bool {
        defer { console.close() }
        do {
            _ = try await PgBouncerAgentLoop.pause(over: console, bound: .milliseconds(200))
            return true
        } catch {
            if logging { logger.warning("Cannot pause pgbouncer for a gone leader", metadata: ["error": "\(error)"]) }
            return false
        }
    }
}

/// The agent's loop and its state, owned by one task.
struct PgBouncerAgentLoop {
    let settings: BootstrapSettings
    let client: ConsulClient
    let logger: Logger
    let pauseBound: Duration
    var keys: ClusterKeys { settings.keys }
    private var admin: PostgresConnection?
    /// The console connection is new since the last RELOAD: the pgbouncer behind it may be a restarted
    /// one that read its file before the agent's last rewrite, so the file alone does not say its target.
    private var consoleUnreloaded = false
    private var lastRouting: PgBouncerRouting?
    private var lastReport: BouncerStatus?
    private var lastReportAt: ContinuousClock.Instant?
    private var held = false
    private var problem: String?
    /// The last time the agent could read Consul and decide (its own clock).
    private var decidedAt: ContinuousClock.Instant?
    /// When the last full decision was made, and the leader key it was made from.
    private var fullyDecidedAt: ContinuousClock.Instant?
    private var decidedLeader: [UInt8] = []
    /// The leader's fence deadline as last read: how long a target stays trustworthy without Consul.
    private var fenceAfter = ClusterConfig().fenceAfter.swiftDuration
    /// The cluster's loop_wait as last read: how fresh this node's own report must be.
    private var loopWait = ClusterConfig().loopWait
    /// `query_wait_timeout` while clients are held for a failover, from `pgbouncer_timeout` as last read.
    private var failoverWait = PgBouncerIni.failoverQueryWaitTimeout(ClusterConfig())
    /// pgbouncer's `query_wait_timeout` is lowered to ``failoverWait`` now (a failover hold).
    private var waitBounded = false
    /// The API of the leader routed to: asked whether it still leads when Consul cannot be read.
    private var targetAPI: NodeAPIAddress?
    private var lastFailsafeNote: String?
    private let transport = CurlTransport()
    /// The node of the leader routed to, watched so that its death pauses clients at once.
    let leaderNode: LeaderNodeWatch
    /// Where the read-only aliases should point, as last decided (nil: leave them).
    private var readOnly: Endpoint?
    /// When this agent first saw the pause request that stands (BatonCore's rule).
    private var memory = BouncerAgentMemory()

    init(settings: BootstrapSettings, client: ConsulClient, logger: Logger, pauseBound: Duration) {
        self.settings = settings
        self.client = client
        self.logger = logger
        self.pauseBound = pauseBound
        leaderNode = LeaderNodeWatch(transport: transport, passfile: settings.passfile, logger: logger)
    }

    /// The agent checks every second that the leader it routes to still holds the lock (one small read):
    /// a target is only trusted while Consul confirms it. Cut off, it looks again exactly when the
    /// target stops being trustworthy.
    func nextInterval() -> Duration {
        if problem != nil, let decidedAt, !held {
            let left = decidedAt + fenceAfter - ContinuousClock.now
            if left > .zero { return min(.seconds(1), left + .milliseconds(5)) }
        }
        return .seconds(1)
    }


    mutating func close() {
        admin?.close()
        admin = nil
    }

    // MARK: One pass

    mutating func iterate(full: Bool = true) async {
        // The node routed to is gone (its PostgreSQL or machine died): clients wait from this moment,
        // before the reads of Consul below — a client retrying meanwhile would meet pgbouncer's "cannot
        // connect to server". The full decision then holds too, until another node leads.
        if case .route? = lastRouting, !held, leaderNode.gone != nil {
            do {
                try await hold(acknowledging: false)
                // Idle server connections to the gone node are closed now (a vanished machine's would
                // hang the first query given one until TCP gives up); busy ones when released.
                try await command("RECONNECT")
            } catch {
                logger.warning("Cannot pause pgbouncer for a gone leader", metadata: ["error": "\(error)"])
            }
        }
        // The tick between full decisions: confirm that the leader decided from still holds the lock (a
        // failed read is not ignored: the full decision below meets the same failure and handles it).
        if !full, problem == nil, lastRouting != nil, let decided = fullyDecidedAt, ContinuousClock.now - decided < .seconds(BouncerStatus.refresh),
            let pair = try? await client.get(keys.leader, .consistent), BouncerAgentMemory.leaderIdentity(pair.value) == decidedLeader
        {
            decidedAt = .now
            return
        }
        var routing: PgBouncerRouting
        do {
            routing = try await decide()
            decidedAt = .now
            fullyDecidedAt = decidedAt
        } catch {
            let since = decidedAt.map { ContinuousClock.now - $0 }
            if let since, since < fenceAfter {
                // Consul unreachable for a moment: keep the last good target, and retry soon.
                problem = "cannot read Consul: \(error)"
                logger.warning("Cannot read the cluster; pgbouncer keeps its target", metadata: ["error": "\(error)"])
                return
            }
            // Past the leader's fence deadline: only the primary itself can say it still leads (its lease
            // renewed by failsafe, with Consul out of reach).
            if case .route? = lastRouting, let api = targetAPI, await confirmsLeading(api) {
                problem = "cannot read Consul; \(api.url) confirms it leads (failsafe)"
                if lastFailsafeNote != problem { logger.warning("Cannot read the cluster; the primary confirms it leads: routing stays") }
                lastFailsafeNote = problem
                await report(acknowledge: nil)
                return
            }
            routing = .hold(
                reason: "cannot read Consul for \(since.map { "\($0.millisecondCount) ms" } ?? "ever"): the primary may have fenced itself; clients wait",
                acknowledge: nil)
            logger.warning("Cannot read the cluster past the leader's fence deadline; holding clients", metadata: ["error": "\(error)"])
        }
        if routing != lastRouting { logger.info("Routing", metadata: ["pgbouncer.routing": "\(routing)"]) }
        lastRouting = routing
        var acknowledge: PauseAcknowledgement? = nil
        do {
            switch routing {
            case .untouched(let reason):
                logger.error("Not touching pgbouncer", metadata: ["reason": "\(reason)"])
                problem = reason
            case .hold(let reason, let ack):
                try await hold(acknowledging: ack != nil)
                acknowledge = ack
                problem = decidedAt.map { ContinuousClock.now - $0 < fenceAfter } ?? false ? nil : reason
            case .route(let host, let port, let ack):
                try await route(to: host, port: port)
                acknowledge = ack
                problem = nil
            }
            if let readOnly { try await routeReadOnly(readOnly) }
        } catch {
            problem = "\(error)"
            logger.warning("Cannot apply the routing to pgbouncer; retrying", metadata: ["error": "\(error)"])
            admin?.close()
            admin = nil
        }
        await report(acknowledge: problem == nil ? acknowledge : nil)
    }

    mutating func decide() async throws -> PgBouncerRouting {
        let leaderPair = try await client.get(keys.leader, .consistent).value
        decidedLeader = BouncerAgentMemory.leaderIdentity(leaderPair)
        if let pair = try await client.get(keys.config, .consistent).value, let config = try? ClusterConfig(bytes: pair.value, key: pair.key) {
            fenceAfter = config.fenceAfter.swiftDuration
            loopWait = config.loopWait
            failoverWait = PgBouncerIni.failoverQueryWaitTimeout(config)
        }
        var registrations: [NodeName: NodeRegistration] = [:]
        for pair in try await client.list(keys.nodesPrefix, .consistent).value {
            do {
                let registration = try NodeRegistration(bytes: pair.value, key: pair.key)
                registrations[registration.name] = registration
            } catch {
                logger.error("Ignoring a malformed node registration", metadata: ["error": "\(error)"])
            }
        }
        var pending: PauseRequest? = nil
        if let pair = try await client.get(keys.pgbouncerPause, .consistent).value {
            do { pending = try PauseRequest(bytes: pair.value, key: pair.key) } catch {
                logger.error("Ignoring a malformed pause request", metadata: ["error": "\(error)"])
            }
        }
        let request = memory.standing(pending, at: .now)
        var leader = AgentLeaderView.none
        if let pair = leaderPair, pair.session != nil {
            do { leader = .held(try NodeName(pair.stringValue, field: "leader")) } catch { leader = .malformed(error.message) }
        }
        if case .held(let name) = leader { targetAPI = registrations[name]?.api } else { targetAPI = nil }
        var followed: LeaderNodeWatch.Target? = nil
        if case .held(let name) = leader, let registration = registrations[name], registration.role == .primary, let api = registration.api {
            followed = LeaderNodeWatch.Target(node: name, api: api, postgres: (registration.address, registration.port))
        }
        leaderNode.follow(followed)
        readOnly = try await decideReadOnly(leader: leader, registrations: registrations)
        return PgBouncerRouting.decide(leader: leader, registrations: registrations, request: request, nodeGone: leaderNode.gone)
    }

    /// Where this node's read-only aliases should point (``ReadOnlyRouting``), from this node's own
    /// report (written by the monitor on this machine: its time is this clock's) and the leader's.
    func decideReadOnly(leader: AgentLeaderView, registrations: [NodeName: NodeRegistration]) async throws -> Endpoint? {
        guard !settings.readOnlyDatabases.isEmpty else { return nil }
        func report(_ node: NodeName) async throws -> MemberStatus? {
            try await client.get(keys.status(node), .consistent).value.flatMap { MemberStatus(bytes: $0.value) }
        }
        let me = settings.node
        let mine = try await report(me)
        var holder: NodeName? = nil
        if case .held(let name) = leader { holder = name }
        var leaderPosition: LSN? = nil
        if let holder, holder != me, let primary = try await report(holder), primary.role == "primary" { leaderPosition = primary.position }
        let freshFor = Double(MemberStatus.freshness(loopWait: loopWait).components.seconds) + 2
        let fresh = mine.map { Date().timeIntervalSince1970 - $0.time < freshFor } ?? false
        return ReadOnlyRouting.decide(
            me: me, report: mine, reportFresh: fresh, leader: holder, leaderPosition: leaderPosition, maximumLag: settings.readOnlyMaximumLag,
            registrations: registrations)
    }

    /// Points the read-only aliases at `wanted` when they point elsewhere: RELOAD, then RECONNECT of
    /// each alias (their server connections close as they are released).
    mutating func routeReadOnly(_ wanted: Endpoint) async throws {
        let path = settings.pgbouncerIni.value
        let suffix = settings.readOnlySuffix
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch { throw AgentError("cannot read \(path): \(error.localizedDescription)") }
        guard PgBouncerIni.hasReadOnlyAliases(text, suffix: suffix), PgBouncerIni.readOnlyTarget(text, suffix: suffix) != wanted else { return }
        let host: HostAddress
        let port: TCPPort
        do { (host, port) = (try HostAddress(wanted.host), try TCPPort(wanted.port)) } catch { throw AgentError("read-only target \(wanted): \(error.message)") }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let mode = (attributes?[.posixPermissions] as? NSNumber)?.uint16Value ?? 0o644
        try AtomicFile.write(PgBouncerIni.retargetReadOnly(text, suffix: suffix, host: host, port: port), to: path, mode: mode_t(mode), owner: attributes?[.ownerAccountName] as? String)
        try await command("RELOAD")
        for alias in PgBouncerIni.readOnlyAliases(text, suffix: suffix) { try await command("RECONNECT \(alias)") }
        logger.notice("pgbouncer read-only aliases rewritten", metadata: ["pgbouncer.read_only_target": "\(wanted)"])
    }

    /// Whether the primary's API says it holds the lock with its lease running (`/primary` answers 200).
    func confirmsLeading(_ api: NodeAPIAddress) async -> Bool {
        let request = HTTPRequest(method: "GET", url: api.url + "/primary", timeout: .seconds(1))
        return (try? await transport.send(request))?.status == 200  // no answer is no confirmation
    }

    // MARK: pgbouncer

    /// The admin console over pgbouncer's Unix socket, as pgbouncer's own OS user (its admin user may
    /// log in so without a password).
    mutating func console() async throws -> PostgresConnection {
        if let admin { return admin }
        let connection = try await connectToConsole()
        admin = connection
        consoleUnreloaded = true
        return connection
    }

    /// A new connection to the admin console.
    func connectToConsole() async throws -> PostgresConnection { try await Self.connectToConsole(settings) }

    /// A new connection to the admin console of the pgbouncer `settings` describe.
    static func connectToConsole(_ settings: BootstrapSettings) async throws -> PostgresConnection {
        let conninfo = ConnInfo.make([
            ("host", settings.pgSocketDirectory.value), ("port", String(settings.pgbouncerPort.value)), ("user", "pgbouncer"),
            ("dbname", "pgbouncer"), ("connect_timeout", "2"),
        ])
        guard let user = getpwnam(settings.pgOSUser) else { throw AgentError("the OS user \(settings.pgOSUser) does not exist") }
        return try await PostgresConnection.connect(conninfo, asUID: user.pointee.pw_uid)
    }

    /// Runs an admin command; `tolerated` is the error that means "already so" (idempotence).
    mutating func command(_ sql: String, tolerating tolerated: String? = nil) async throws {
        do {
            try await console().simpleQuery(sql)
        } catch let error as PostgresError where tolerated.map({ error.message.contains($0) }) ?? false {
            return
        }
    }

    /// How pgbouncer answered a PAUSE.
    enum PauseAnswer: Equatable {
        /// Paused: every server connection released.
        case paused
        /// It was paused already.
        case alreadyPaused
        /// No answer within the bound: paused, with transactions still in flight (on a gone node they
        /// never finish). The bounded query closed the connection.
        case inFlight
    }

    /// Sends PAUSE over `console`, waiting at most `bound` for the answer. pgbouncer is paused when this
    /// returns; an error it throws means it may not be.
    static func pause(over console: PostgresConnection, bound: Duration) async throws -> PauseAnswer {
        do {
            try await console.simpleQuery("PAUSE", timeout: bound)
            return .paused
        } catch let error as PostgresError where error.message.contains("already suspended/paused") {
            return .alreadyPaused
        } catch let error as PostgresError where error.sqlState == "57014" {
            return .inFlight
        }
    }

    /// PAUSE: new transactions wait, those in flight finish. pgbouncer holds new queries from the moment
    /// it takes the command, but answers it only once every server connection is released — never, for
    /// one whose server died silently (a machine gone from the network), until TCP gives up. So the agent
    /// waits for that answer only when a switchover asked for it (`acknowledging`: the old primary stops
    /// once every pgbouncer says its transactions finished), and then at most `pauseBound`, after which it
    /// asks pgbouncer to kill what remains (their clients see one error; pgbouncer 1.18 refuses while
    /// paused, and those connections end with their server). For a failover it waits a moment at most:
    /// nothing in flight on a dead server will finish, and the agent must be free to route clients to
    /// the next leader the moment it leads. Either way pgbouncer stays paused until the agent resumes it.
    mutating func hold(acknowledging: Bool) async throws {
        let connection = try await console()
        let bound = acknowledging ? pauseBound : .milliseconds(200)
        if try await Self.pause(over: connection, bound: bound) == .inFlight {
            admin = nil  // the bounded query closed the console; pgbouncer stays paused
            if acknowledging {
                logger.warning("PAUSE did not finish in time; killing the remaining connections", metadata: ["pgbouncer.bound": "\(bound)"])
                try await killRemainingConnections()
            } else {
                logger.info("Paused; transactions in flight on the old leader are left to end with it")
            }
        }
        if !held { logger.notice("pgbouncer paused") }
        held = true
        if !acknowledging, !waitBounded {
            // Clients wait for the next primary at most pgbouncer_timeout, then fail with pgbouncer's
            // "query_wait_timeout" instead of waiting its two minutes (a switchover's pause is bounded by
            // its own timeout). The file's value is back with the next RELOAD, or set back by `route`.
            do {
                try await console().simpleQuery("SET query_wait_timeout = \(failoverWait)")
                waitBounded = true
            } catch {
                logger.warning("Cannot bound how long held clients wait (query_wait_timeout); they wait pgbouncer's own", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Whether the pgbouncer behind a new console connection, its file already pointing at `wanted`,
    /// must still RELOAD (``PgBouncerIni/reloadNeeded(served:wanted:readOnlySuffix:)``).
    mutating func reloadNeeded(toRouteTo wanted: Endpoint) async throws -> Bool {
        let rows = try await console().simpleQuery("SHOW DATABASES")
        let served = rows.compactMap { row in
            row.first.flatMap { $0 }.map { name in
                PgBouncerIni.ServedDatabase(name: name, host: row.count > 1 ? row[1] : nil, port: row.count > 2 ? row[2].flatMap { Int($0) } : nil)
            }
        }
        return PgBouncerIni.reloadNeeded(served: served, wanted: wanted, readOnlySuffix: settings.readOnlySuffix)
    }

    /// KILL of every database's connections, for a PAUSE that did not finish in time.
    func killRemainingConnections() async throws {
        let side = try await connectToConsole()
        defer { side.close() }
        for row in try await side.simpleQuery("SHOW DATABASES", timeout: .seconds(2)) {
            guard let name = row.first ?? nil, name != "pgbouncer" else { continue }
            do {
                try await side.simpleQuery("KILL \"\(name.replacingOccurrences(of: "\"", with: "\"\""))\"", timeout: .seconds(2))
            } catch {
                logger.warning("pgbouncer does not kill the remaining connections", metadata: ["pgbouncer.database": "\(name)", "error": "\(error)"])
                return
            }
        }
    }

    /// Points pgbouncer at `host:port` (the file first, atomically, then RELOAD) and lets clients in.
    /// A new console connection is RELOADed too: a pgbouncer restarted while the agent rewrote the file
    /// may have read the old target.
    mutating func route(to host: HostAddress, port: TCPPort) async throws {
        let path = settings.pgbouncerIni.value
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw AgentError("cannot read \(path): \(error.localizedDescription)")
        }
        let wanted = Endpoint(host: host.value, port: port.value)
        let suffix = settings.readOnlySuffix
        let rewrite = PgBouncerIni.target(text, readOnlySuffix: suffix) != wanted
        if rewrite {
            let rewritten: String
            do { rewritten = try PgBouncerIni.retarget(text, host: host, port: port, readOnlySuffix: suffix) } catch { throw AgentError("\(path): \(error.message)") }
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            let mode = (attributes?[.posixPermissions] as? NSNumber)?.uint16Value ?? 0o644
            let owner = attributes?[.ownerAccountName] as? String
            try AtomicFile.write(rewritten, to: path, mode: mode_t(mode), owner: owner)
            logger.notice("pgbouncer target rewritten", metadata: ["pgbouncer.target": "\(wanted)"])
        }
        _ = try await console()  // connects first when needed, which marks the console unreloaded
        // A new console: the agent before this one may have left query_wait_timeout lowered.
        let restoreWait = waitBounded || consoleUnreloaded
        if consoleUnreloaded, !rewrite, try await !reloadNeeded(toRouteTo: wanted) { consoleUnreloaded = false }
        if rewrite || consoleUnreloaded {
            try await command("RELOAD")  // the file's query_wait_timeout too
            // Server connections still open to the old target close as soon as they are released.
            try await command("RECONNECT")
            consoleUnreloaded = false
        } else if restoreWait {
            try await command("SET query_wait_timeout = \(PgBouncerIni.queryWaitTimeout(text))")
        }
        waitBounded = false
        await leaderNode.untilNoPauseUnderWay()
        try await command("RESUME", tolerating: "not paused")
        if held { logger.notice("pgbouncer resumed", metadata: ["pgbouncer.target": "\(wanted)"]) }
        held = false
    }

    // MARK: Consul

    mutating func report(acknowledge: PauseAcknowledgement?) async {
        let suffix = settings.readOnlySuffix
        let target = (try? String(contentsOfFile: settings.pgbouncerIni.value, encoding: .utf8)).flatMap { PgBouncerIni.target($0, readOnlySuffix: suffix) }
        let now = Date().timeIntervalSince1970
        var status = BouncerStatus(
            target: target?.description, paused: held, acknowledged: acknowledge ?? lastReport?.acknowledged, problem: problem, time: now)
        if let last = lastReport, last.target == status.target, last.paused == status.paused, last.acknowledged == status.acknowledged,
            last.problem == status.problem, let at = lastReportAt, ContinuousClock.now - at < .seconds(BouncerStatus.refresh)
        {
            return
        }
        status.time = now
        do {
            try await client.put(keys.pgbouncerAgent(settings.node), status.json.serializedBytes())
            lastReport = status
            lastReportAt = .now
        } catch {
            logger.warning("Cannot report to Consul", metadata: ["error": "\(error)"])
        }
    }
}
