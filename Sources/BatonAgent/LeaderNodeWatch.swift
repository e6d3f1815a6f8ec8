import BatonConsul
import BatonCore
import BatonHTTP
import BatonPostgres
import ConsulAPI
import Logging
import Synchronization

/// The pgbouncer agent's watch on the node of the leader it routes to, so that an unplanned failover is
/// a pause for clients, not a stream of errors (issue 26): the lock of a node that died stays held
/// until its fence runs out, and meanwhile every query pgbouncer sends there fails. The watch holds an
/// idle TCP connection to the leader's node API; a dead process or node closes it at once. Then it asks
/// the API whether the node still leads (`/primary`) and, if the API does not answer, whether its
/// PostgreSQL still accepts connections (a monitor restarting is no reason to stop routing).
///
/// It also holds a session on the leader's PostgreSQL (the replication role, database `postgres`, the
/// node's passfile — what pg_rewind uses), pinging it (`SELECT 1`) four times a second so that a machine
/// gone silent is found within about a second. A postmaster killed takes its backends with it, this
/// session's too, so the agent learns of it at once — before the leader's monitor has released
/// the lock and Consul has told the agents — and clients wait from then on instead of failing against
/// a server that refuses them (pgbouncer answers every query that finds no server "cannot connect to
/// server" until it is paused). A PostgreSQL that refuses connections counts as gone whatever the API
/// says: its monitor may not have noticed yet. (A logged-in session, not a bare TCP connection: one
/// that never sent its startup packet, opened while PostgreSQL shuts down, would hold the shutdown up
/// until `authentication_timeout`; a login is told "shutting down" at once.)
///
/// The routing holds clients (``PgBouncerRouting``) while the node is gone, and routes again when it
/// answers or when another node leads.
final class LeaderNodeWatch: Sendable {
    struct Target: Sendable, Equatable {
        var node: NodeName
        var api: NodeAPIAddress
        var postgres: (host: HostAddress, port: TCPPort)
        static func == (a: Target, b: Target) -> Bool {
            a.node == b.node && a.api == b.api && a.postgres.host == b.postgres.host && a.postgres.port == b.postgres.port
        }
    }

    private struct State {
        var target: Target?
        var gone: String?
        /// An emergency PAUSE (`run`'s `pauseNow`) is under way.
        var pausing = false
    }

    private let state = Mutex(State())
    private let transport: CurlTransport
    /// This node's replication passfile (``BootstrapSettings/passfile``).
    private let passfile: SafePath

    private let logger: Logger

    init(transport: CurlTransport, passfile: SafePath, logger: Logger) {
        self.transport = transport
        self.passfile = passfile
        self.logger = logger
    }

    /// The node routed to now (nil: none); a new one is watched afresh.
    func follow(_ target: Target?) {
        state.withLock { s in
            if s.target != target { (s.target, s.gone) = (target, nil) }
        }
    }

    /// The followed node, if it is gone, and how.
    var gone: (node: NodeName, how: String)? {
        state.withLock { s in s.target.flatMap { t in s.gone.map { (t.node, $0) } } }
    }

    private var target: Target? { state.withLock { $0.target } }

    /// Records what the probe found for `target`: whether that changed anything, and whether the node
    /// just went from answering to gone (an emergency PAUSE is then under way until ``pauseDelivered()``).
    private func found(_ how: String?, for target: Target) -> (changed: Bool, wentGone: Bool) {
        state.withLock { s in
            guard s.target == target, s.gone != how else { return (false, false) }
            let wentGone = s.gone == nil
            s.gone = how
            if wentGone { s.pausing = true }
            return (true, wentGone)
        }
    }

    private func pauseDelivered() { state.withLock { $0.pausing = false } }

    /// Returns once no emergency PAUSE is under way (at most `limit`): the agent resumes pgbouncer only
    /// after, so that a PAUSE sent for the old leader never lands after the RESUME for the new one.
    func untilNoPauseUnderWay(limit: Duration = .seconds(3)) async {
        let end = ContinuousClock.now + limit
        while state.withLock({ $0.pausing }), ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(5))  // ignored: cancelled, the agent stops anyway
        }
    }

    /// Runs until cancelled; `wake` when the followed node is found gone or back.
    /// - Parameter pauseNow: called the moment the followed node is found gone, beside `wake`: holds
    ///   pgbouncer's clients at once, without waiting for a busy agent loop to come round.
    func run(wake: @escaping @Sendable () -> Void, pauseNow: @escaping @Sendable () async -> Void = {}) async {
        let report: @Sendable (String?, Target) async -> Void = { [weak self] verdict, target in
            guard let self else { return }
            let (changed, wentGone) = self.found(verdict, for: target)
            guard changed else { return }
            // The loop first: when idle, it pauses at once over the console it holds open; the
            // emergency PAUSE covers a loop busy reading Consul. Whichever lands first holds clients.
            wake()
            if wentGone {
                self.logger.notice("The leader's node is gone; holding clients", metadata: ["leader": "\(target.node)", "how": "\(verdict ?? "")"])
                await pauseNow()
                self.pauseDelivered()
            }
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.watchAPI(report: report) }
            group.addTask { await self.watchPostgres(report: report) }
        }
    }

    /// The idle session on the followed leader's PostgreSQL: when it ends and PostgreSQL refuses new
    /// connections, the node is gone (its API then brings it back, through ``probe(_:)``, once
    /// PostgreSQL answers again).
    private func watchPostgres(report: @Sendable (String?, Target) async -> Void) async {
        // Logins refused in a row while PostgreSQL answers (starting, shutting down, or a passfile that
        // does not let the agent in): each doubles the wait before the next, up to 30 s, so that a
        // wrong password is not a line in PostgreSQL's log five times a second.
        var refusedLogins = 0
        while !Task.isCancelled {
            guard let target, gone == nil else {
                try? await Task.sleep(for: .milliseconds(100))  // ignored: cancelled, the loop ends
                continue
            }
            let postgres = target.postgres
            let conninfo = ConnInfo.make([
                ("host", postgres.host.value), ("port", String(postgres.port.value)), ("user", PostgresFiles.replicationUser),
                ("dbname", "postgres"), ("passfile", passfile.value), ("application_name", "baton-pgbouncer-agent"),
                // A machine that vanished closes nothing: the pings find it (keepalives are the backstop).
                ("keepalives", "1"), ("keepalives_idle", "1"), ("keepalives_interval", "1"), ("keepalives_count", "1"),
            ])
            var connection: PostgresConnection? = nil
            var unanswered = false
            do {
                connection = try await PostgresConnection.connect(conninfo, timeout: Self.connectTimeout)
            } catch let error as PostgresError where error.sqlState == "08001" {
                // Accepted but not answered (a frozen or overloaded machine): not a refusal, so no
                // backoff — the TCP probe below tells whether it is still there, each round.
                unanswered = true
            } catch {
                // Judged by the TCP probe below; said once, since without the session a dead postmaster
                // is seen only once its monitor released the lock.
                if refusedLogins == 0 {
                    logger.warning(
                        "Cannot hold a session on the leader's PostgreSQL; its death will be seen later", metadata: ["leader": "\(target.node)", "error": "\(error)"])
                }
            }
            if let connection {
                refusedLogins = 0
                await holdUntilSilent(connection, target: target)
                connection.close()
                guard self.target == target, gone == nil else { continue }
            }
            // Its refusal alone says it: no need to wait for the API's answer (the API watch, which
            // follows a gone node up, asks it).
            if await TCPProbe.isReachable(host: postgres.host.value, port: postgres.port.value, timeout: .milliseconds(300)) {
                // Ended while PostgreSQL still answers (a backend's crash recovery, a shutdown under
                // way, a server that will not let the agent in): looked at again, not a busy loop.
                if connection == nil, !unanswered { refusedLogins += 1 }
                let wait = min(Duration.milliseconds(200) * (1 << min(refusedLogins, 8)), .seconds(30))
                try? await Task.sleep(for: wait)  // ignored: cancelled, the loop ends
                continue
            }
            await report(Self.refusing(postgres), target)
        }
    }

    /// Holds the session until it ends — at once when the postmaster dies (its backends die with it)
    /// — or the server stops answering: a machine gone from the network closes nothing, and TCP
    /// keepalives find that out only after 2 s, when pgbouncer's own server connections to it fail
    /// (`tcp_user_timeout`) and clients would retry into them. So the session pings every
    /// ``pingEvery`` and lets go when no answer comes within ``pingTimeout``; the caller then tells a
    /// dead node (nothing accepts a connection) from a busy one. Returns also when the target changes,
    /// the node is found gone otherwise, or the task is cancelled.
    private func holdUntilSilent(_ connection: PostgresConnection, target: Target) async {
        let cancelled = CancellationFlag()
        await withTaskCancellationHandler {
            while true {
                let pingAt = ContinuousClock.now + Self.pingEvery
                await connection.waitUntilServerSpeaks { [weak self] in
                    cancelled.isSet || self?.target != target || self?.gone != nil || ContinuousClock.now >= pingAt
                }
                guard !cancelled.isSet, self.target == target, gone == nil else { return }
                // Also after the server spoke unasked: on a closed session the ping fails at once.
                do { try await connection.ping(timeout: Self.pingTimeout) } catch { return }
            }
        } onCancel: {
            cancelled.set()
        }
    }

    /// How often the session on the leader's PostgreSQL is asked whether it still answers, and how long
    /// an answer may take: a silent machine is found 0.7–1.2 s after its last answer (with the TCP probe
    /// that follows), before pgbouncer's own server connections give up on it (`tcp_user_timeout` 2 s).
    static let pingEvery = Duration.milliseconds(250)
    static let pingTimeout = Duration.milliseconds(400)
    /// A login takes longer than a ping (SCRAM); a server that accepts TCP but lets nobody in within
    /// this is looked at again (TCP probe, then a new login) without backing off.
    static let connectTimeout = Duration.milliseconds(700)

    /// The idle connection to the followed leader's node API, and the follow-up of a node found gone.
    private func watchAPI(report: @Sendable (String?, Target) async -> Void) async {
        // When the API went away while PostgreSQL still answered: a monitor restarting, or the first
        // process of a dying node — looked at every 100 ms for two seconds, then every second.
        var apiLostAt: ContinuousClock.Instant? = nil
        while !Task.isCancelled {
            guard let target else {
                try? await Task.sleep(for: .milliseconds(100))  // ignored: cancelled, the loop ends
                continue
            }
            if gone == nil {
                // The connection is held on a thread of its own, which cannot see this task's cancellation.
                let cancelled = CancellationFlag()
                let ending = await withTaskCancellationHandler {
                    await TCPProbe.holdIdle(
                        host: target.api.host.value, port: target.api.port.value, connectTimeout: .milliseconds(500),
                        // Let go once the node is found gone (by the PostgreSQL watch): this loop
                        // then looks at it until it answers again.
                        stillWanted: { [weak self] in !cancelled.isSet && self?.target == target && self?.gone == nil })
                } onCancel: {
                    cancelled.set()
                }
                if ending == .unwanted {
                    apiLostAt = nil
                    continue
                }
                let verdict = await probe(target)
                await report(verdict, target)
                if verdict == nil, ending == .refused {
                    // The API refuses while its PostgreSQL answers: not a busy loop of connections.
                    let since = apiLostAt ?? .now
                    apiLostAt = since
                    try? await Task.sleep(for: ContinuousClock.now - since < .seconds(2) ? .milliseconds(100) : .seconds(1))  // ignored: cancelled, the loop ends
                } else if verdict == nil {
                    apiLostAt = ending == .closed ? .now : nil
                }
            } else {
                // Gone: looked at again five times a second, so that routing resumes as soon as it answers.
                try? await Task.sleep(for: .milliseconds(200))  // ignored: cancelled, the loop ends
                await report(await probe(target), target)
            }
        }
    }

    static func refusing(_ postgres: (host: HostAddress, port: TCPPort)) -> String {
        "its PostgreSQL at \(postgres.host):\(postgres.port) refuses connections (its monitor may not have released the lock yet)"
    }

    /// nil when the node still leads or, its API silent, its PostgreSQL still answers; else how it is gone.
    /// A PostgreSQL that refuses connections is gone even while the API still says the node leads.
    func probe(_ target: Target) async -> String? {
        let request = HTTPRequest(method: "GET", url: target.api.url + "/primary", timeout: .milliseconds(300))
        async let answered = try? await transport.send(request)  // ignored: no answer is asked of PostgreSQL below
        let postgresAnswers = await TCPProbe.isReachable(host: target.postgres.host.value, port: target.postgres.port.value, timeout: .milliseconds(300))
        let answer = await answered
        let postgres = "\(target.postgres.host):\(target.postgres.port)"
        if answer?.status == 200 { return postgresAnswers ? nil : Self.refusing(target.postgres) }
        if let answer { return "its API answers \(answer.status) to /primary: \(answer.text.prefix(200))" }
        return postgresAnswers ? nil : "neither its API nor its PostgreSQL at \(postgres) answers"
    }
}
