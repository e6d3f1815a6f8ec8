import BatonBootstrap
import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// `baton pgbouncer-agent`: keeps this node's pgbouncer routed to the node that holds the leader lock
/// and has promoted, holds clients (PAUSE) while nobody writable leads or a switchover stops the
/// primary, and acknowledges a switchover's pause requests in Consul. The decision is
/// ``PgBouncerRouting/decide(leader:registrations:request:now:)``; this is the I/O around it.
///
/// Every step is idempotent — PAUSE on a paused pgbouncer, RESUME on a running one, a target that is
/// already right — so the agent simply re-applies the decision on every change in Consul and every
/// ``BouncerStatus/refresh`` seconds (every second while something is wrong): a restarted pgbouncer, a
/// lost acknowledgement or a missed change all converge.
public final class PgBouncerAgent: @unchecked Sendable {
    // @unchecked: the loop runs on one task.
    let settings: BootstrapSettings
    let client: ConsulClient
    let logger: Logger
    /// How long a PAUSE may wait for transactions in flight before the remaining connections are killed.
    let pauseBound: Duration
    var keys: ClusterKeys { settings.keys }
    private var admin: PostgresConnection?
    private var lastRouting: PgBouncerRouting?
    private var lastReport: BouncerStatus?
    private var held = false
    private var problem: String?

    public init(settings: BootstrapSettings, client: ConsulClient, logger: Logger, pauseBound: Duration = .seconds(5)) {
        self.settings = settings
        self.client = client
        self.logger = logger
        self.pauseBound = pauseBound
    }

    public func run() async {
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let watchers = [
            Task { [client, keys] in await watchLeaderHolder(client: client, key: keys.leader, wake: wake) },
            Task { [client, keys] in
                for await _ in ConsulWatch(wait: .seconds(30), query: { try await client.list(keys.nodesPrefix, $0) }) { wake.yield() }
            },
            Task { [client, keys] in
                for await _ in ConsulWatch(wait: .seconds(30), query: { try await client.get(keys.pgbouncerPause, $0) }) { wake.yield() }
            },
        ]
        defer { watchers.forEach { $0.cancel() } }
        await runLoop(wakes: wakes, wake: wake, interval: { problem == nil ? .seconds(BouncerStatus.refresh) : .seconds(1) }) { await iterate() }
        admin?.close()
    }

    // MARK: One pass

    func iterate() async {
        let routing: PgBouncerRouting
        do {
            routing = try await decide()
        } catch {
            // Consul unreachable: keep the last good target, and retry soon.
            problem = "cannot read Consul: \(error)"
            logger.warning("Cannot read the cluster; pgbouncer keeps its target", metadata: ["error": "\(error)"])
            return
        }
        if routing != lastRouting { logger.info("Routing", metadata: ["pgbouncer.routing": "\(routing)"]) }
        lastRouting = routing
        var acknowledge: PauseAcknowledgement? = nil
        do {
            switch routing {
            case .untouched(let reason):
                logger.error("Not touching pgbouncer", metadata: ["reason": "\(reason)"])
                problem = reason
            case .hold(_, let ack):
                try await hold()
                acknowledge = ack
                problem = nil
            case .route(let host, let port, let ack):
                try await route(to: host, port: port)
                acknowledge = ack
                problem = nil
            }
        } catch {
            problem = "\(error)"
            logger.warning("Cannot apply the routing to pgbouncer; retrying", metadata: ["error": "\(error)"])
            admin?.close()
            admin = nil
        }
        await report(acknowledge: problem == nil ? acknowledge : nil)
    }

    func decide() async throws -> PgBouncerRouting {
        let leaderPair = try await client.get(keys.leader, .consistent).value
        var registrations: [NodeName: NodeRegistration] = [:]
        for pair in try await client.list(keys.nodesPrefix, .consistent).value {
            do {
                let registration = try NodeRegistration(bytes: pair.value, key: pair.key)
                registrations[registration.name] = registration
            } catch {
                logger.error("Ignoring a malformed node registration", metadata: ["error": "\(error)"])
            }
        }
        var request: PauseRequest? = nil
        if let pair = try await client.get(keys.pgbouncerPause, .consistent).value {
            do { request = try PauseRequest(bytes: pair.value, key: pair.key) } catch {
                logger.error("Ignoring a malformed pause request", metadata: ["error": "\(error)"])
            }
        }
        var leader = AgentLeaderView.none
        if let pair = leaderPair, pair.session != nil {
            do { leader = .held(try NodeName(pair.stringValue, field: "leader")) } catch { leader = .malformed(error.message) }
        }
        return PgBouncerRouting.decide(leader: leader, registrations: registrations, request: request, now: Date().timeIntervalSince1970)
    }

    // MARK: pgbouncer

    /// The admin console over pgbouncer's Unix socket, as pgbouncer's own OS user (its admin user may
    /// log in so without a password).
    func console() async throws -> PostgresConnection {
        if let admin { return admin }
        let connection = try await connectToConsole()
        admin = connection
        return connection
    }

    /// A new connection to the admin console.
    func connectToConsole() async throws -> PostgresConnection {
        let conninfo = ConnInfo.make([
            ("host", settings.pgSocketDirectory.value), ("port", String(settings.pgbouncerPort.value)), ("user", "pgbouncer"),
            ("dbname", "pgbouncer"), ("connect_timeout", "2"),
        ])
        guard let user = getpwnam(settings.pgOSUser) else { throw AgentError("the OS user \(settings.pgOSUser) does not exist") }
        return try await PostgresConnection.connect(conninfo, asUID: user.pointee.pw_uid)
    }

    /// Runs an admin command; `tolerated` is the error that means "already so" (idempotence).
    func command(_ sql: String, tolerating tolerated: String? = nil) async throws {
        do {
            try await console().simpleQuery(sql)
        } catch let error as PostgresError where tolerated.map({ error.message.contains($0) }) ?? false {
            return
        }
    }

    /// PAUSE: new transactions wait, those in flight finish. Bounded: past `pauseBound` the remaining
    /// connections are killed (their clients see one error) so the switchover is never held forever.
    func hold() async throws {
        let connection = try await console()
        let pause = Task { try await connection.simpleQuery("PAUSE") }
        let bound = Task {
            try await Task.sleep(for: pauseBound)
            return true
        }
        let finished = Task {
            _ = try? await pause.value
            bound.cancel()
        }
        if (try? await bound.value) == true {
            logger.warning("PAUSE did not finish in time; killing the remaining connections", metadata: ["pgbouncer.bound": "\(pauseBound)"])
            let side = try await connectToConsole()
            defer { side.close() }
            for row in try await side.simpleQuery("SHOW DATABASES") {
                guard let name = row.first ?? nil, name != "pgbouncer" else { continue }
                _ = try? await side.simpleQuery("KILL \"\(name.replacingOccurrences(of: "\"", with: "\"\""))\"")
            }
        }
        await finished.value
        do {
            try await pause.value
        } catch let error as PostgresError where error.message.contains("already suspended/paused") {}
        if !held { logger.notice("pgbouncer paused") }
        held = true
    }

    /// Points pgbouncer at `host:port` (the file first, atomically, then RELOAD) and lets clients in.
    func route(to host: HostAddress, port: TCPPort) async throws {
        let path = settings.pgbouncerIni.value
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw AgentError("cannot read \(path): \(error.localizedDescription)")
        }
        let wanted = Endpoint(host: host.value, port: port.value)
        if PgBouncerIni.target(text) != wanted {
            let rewritten: String
            do { rewritten = try PgBouncerIni.retarget(text, host: host, port: port) } catch { throw AgentError("\(path): \(error.message)") }
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            let mode = (attributes?[.posixPermissions] as? NSNumber)?.uint16Value ?? 0o644
            let owner = attributes?[.ownerAccountName] as? String
            try AtomicFile.write(rewritten, to: path, mode: mode_t(mode), owner: owner)
            logger.notice("pgbouncer target rewritten", metadata: ["pgbouncer.target": "\(wanted)"])
            try await command("RELOAD")
            // Server connections still open to the old target close as soon as they are released.
            try await command("RECONNECT")
        }
        try await command("RESUME", tolerating: "not paused")
        if held { logger.notice("pgbouncer resumed", metadata: ["pgbouncer.target": "\(wanted)"]) }
        held = false
    }

    // MARK: Consul

    func report(acknowledge: PauseAcknowledgement?) async {
        let target = (try? String(contentsOfFile: settings.pgbouncerIni.value, encoding: .utf8)).flatMap(PgBouncerIni.target)
        let now = Date().timeIntervalSince1970
        var status = BouncerStatus(
            target: target?.description, paused: held, acknowledged: acknowledge ?? lastReport?.acknowledged, problem: problem, time: now)
        if let last = lastReport, last.target == status.target, last.paused == status.paused, last.acknowledged == status.acknowledged,
            last.problem == status.problem, now - last.time < BouncerStatus.refresh
        {
            return
        }
        status.time = now
        do {
            try await client.put(keys.pgbouncerAgent(settings.node), status.json.serializedBytes())
            lastReport = status
        } catch {
            logger.warning("Cannot report to Consul", metadata: ["error": "\(error)"])
        }
    }
}
