import BatonCore
import ConsulAPI
import Testing

@Suite("pgbouncer routing")
struct PgBouncerRoutingTests {
    static let pg1 = try! NodeName("pg1")
    static let pg2 = try! NodeName("pg2")

    func registrations(primary: NodeName?) -> [NodeName: NodeRegistration] {
        var all: [NodeName: NodeRegistration] = [:]
        for (i, name) in [Self.pg1, Self.pg2].enumerated() {
            all[name] = NodeRegistration(
                name: name, address: try! HostAddress("198.18.0.\(i + 1)"), port: try! TCPPort(5432), role: name == primary ? .primary : .standby,
                upstream: nil, priority: 100, location: "default")
        }
        return all
    }

    @Test func routesOnlyToALeaderThatHasPromoted() throws {
        #expect(
            PgBouncerRouting.decide(leader: .held(Self.pg1), registrations: registrations(primary: Self.pg1), request: nil)
                == .route(host: try HostAddress("198.18.0.1"), port: try TCPPort(5432), acknowledge: nil))
        // pg2 took the lock but has not promoted yet: hold clients, do not route to a standby.
        guard case .hold = PgBouncerRouting.decide(leader: .held(Self.pg2), registrations: registrations(primary: Self.pg1), request: nil) else {
            Issue.record("a leader that has not promoted must not be routed to")
            return
        }
        guard case .hold(_, nil) = PgBouncerRouting.decide(leader: .none, registrations: registrations(primary: Self.pg1), request: nil) else {
            Issue.record("no leader: hold clients, never stay on the old primary")
            return
        }
    }

    @Test("a leader whose node is gone holds clients until another leads; a gone node that does not lead changes nothing")
    func aGoneLeaderHoldsClients() throws {
        let primary = registrations(primary: Self.pg1)
        let gone = (node: Self.pg1, how: "neither its API nor its PostgreSQL answers")
        guard case .hold(let reason, nil) = PgBouncerRouting.decide(leader: .held(Self.pg1), registrations: primary, request: nil, nodeGone: gone) else {
            Issue.record("a dead leader's node must not be routed to while it still holds the lock")
            return
        }
        #expect(reason.contains("pg1 is gone") && reason.contains("neither its API"))
        #expect(
            PgBouncerRouting.decide(leader: .held(Self.pg1), registrations: primary, request: nil, nodeGone: (Self.pg2, "gone"))
                == .route(host: try HostAddress("198.18.0.1"), port: try TCPPort(5432), acknowledge: nil))
        #expect(
            PgBouncerRouting.decide(leader: .held(Self.pg2), registrations: registrations(primary: Self.pg2), request: nil, nodeGone: gone)
                == .route(host: try HostAddress("198.18.0.2"), port: try TCPPort(5432), acknowledge: nil), "the next leader is routed to at once")
    }

    @Test func badDataInConsulLeavesPgBouncerAlone() {
        for (leader, registrations) in [
            (AgentLeaderView.malformed("not a node name"), registrations(primary: Self.pg1)),
            (.held(try! NodeName("pg9")), registrations(primary: Self.pg1)),  // an unknown node
        ] {
            guard case .untouched = PgBouncerRouting.decide(leader: leader, registrations: registrations, request: nil) else {
                Issue.record("\(leader): pgbouncer must be left as it is")
                continue
            }
        }
    }

    @Test func aSwitchoverPausesUntilTheNewPrimaryLeadsThenResumesThere() throws {
        let request = PauseRequest(id: "abc-1", from: Self.pg1, to: Self.pg2, timeout: .seconds(65))
        let before = registrations(primary: Self.pg1)
        #expect(
            PgBouncerRouting.decide(leader: .held(Self.pg1), registrations: before, request: request)
                == .hold(reason: "switchover from pg1 to pg2: clients wait", acknowledge: PauseAcknowledgement(id: "abc-1", phase: .paused)))
        guard case .hold(_, let ack) = PgBouncerRouting.decide(leader: .none, registrations: before, request: request) else {
            Issue.record("between the release and the promotion, clients wait")
            return
        }
        #expect(ack == PauseAcknowledgement(id: "abc-1", phase: .paused))
        #expect(
            PgBouncerRouting.decide(leader: .held(Self.pg2), registrations: registrations(primary: Self.pg2), request: request)
                == .route(host: try HostAddress("198.18.0.2"), port: try TCPPort(5432), acknowledge: PauseAcknowledgement(id: "abc-1", phase: .resumed)))
        // A request left behind by a monitor that died is void after its timeout: the agent no longer
        // passes it.
        #expect(
            PgBouncerRouting.decide(leader: .held(Self.pg1), registrations: before, request: nil)
                == .route(host: try HostAddress("198.18.0.1"), port: try TCPPort(5432), acknowledge: nil))
    }

    @Test func theMonitorWaitsForLiveAgentsOnly() {
        let request = PauseRequest(id: "r1", from: Self.pg1, to: Self.pg2, timeout: .seconds(65))
        let paused = PauseAcknowledgement(id: "r1", phase: .paused)
        let agents: [NodeName: BouncerStatus] = [
            Self.pg1: BouncerStatus(target: "a:1", paused: true, acknowledged: paused, problem: nil, time: 50),
            Self.pg2: BouncerStatus(target: "a:1", paused: false, acknowledged: nil, problem: nil, time: 50),
            try! NodeName("pg3"): BouncerStatus(target: "a:1", paused: false, acknowledged: nil, problem: nil, time: 1),  // silent for long
        ]
        let outcome = request.acknowledgements(agents, phase: .paused, live: { $0 != (try! NodeName("pg3")) })
        #expect(outcome.acknowledged == [Self.pg1])
        #expect(outcome.awaited == [Self.pg2])
    }

    @Test func recordsRoundTripAndBadOnesAreRefused() throws {
        let request = PauseRequest(id: "r-1", from: Self.pg1, to: Self.pg2, timeout: .seconds(65))
        #expect(try PauseRequest(bytes: request.json.serializedBytes(), key: "k") == request)
        for bad in [
            #"{"id":"x y","from":"pg1","to":"pg2","timeout":"1s"}"#, #"{"id":"x","from":"pg 1","to":"pg2","timeout":"1s"}"#,
            #"{"id":"x","from":"pg1","to":"pg2"}"#, #"{"id":"x","from":"pg1","to":"pg2","timeout":"soon"}"#, #"{"id":"x","from":"pg1","to":"pg2","until":1}"#, "[]",
        ] {
            #expect(throws: ValidationProblem.self) { try PauseRequest(bytes: Array(bad.utf8), key: "k") }
        }
        let status = BouncerStatus(target: "198.18.0.1:5432", paused: true, acknowledged: PauseAcknowledgement(id: "r-1", phase: .resumed), problem: "p", time: 12.5)
        #expect(BouncerStatus(bytes: status.json.serializedBytes()) == status)
        #expect(BouncerStatus(bytes: Array("{}".utf8)) == nil)
        #expect(PauseAcknowledgement("r-1:paused") == PauseAcknowledgement(id: "r-1", phase: .paused))
        #expect(PauseAcknowledgement("r-1:maybe") == nil)
    }

    @Test func retargetingChangesOnlyHostAndPortInDatabases() throws {
        let ini = """
            ;; my comments stay
            [databases]
            ; a comment line = with equals
            * = host=10.0.0.1 port=5432
            app = host=10.0.0.1 dbname=app port=5432 user='app user'
            reports = dbname=reports

            [pgbouncer]
            listen_port = 6432
            host = not-a-database-line
            """
        let out = try PgBouncerIni.retarget(ini, host: try HostAddress("198.18.0.2"), port: try TCPPort(5433))
        #expect(
            out == """
                ;; my comments stay
                [databases]
                ; a comment line = with equals
                * = host=198.18.0.2 port=5433
                app = host=198.18.0.2 port=5433 dbname=app user='app user'
                reports = host=198.18.0.2 port=5433 dbname=reports

                [pgbouncer]
                listen_port = 6432
                host = not-a-database-line
                """)
        #expect(PgBouncerIni.target(out) == Endpoint(host: "198.18.0.2", port: 5433))
        #expect(PgBouncerIni.target(ini) == Endpoint(host: "10.0.0.1", port: 5432))
        #expect(throws: ValidationProblem.self) { try PgBouncerIni.retarget("[pgbouncer]\nlisten_port = 1\n", host: try HostAddress("h"), port: try TCPPort(1)) }
        // A host Consul could smuggle a newline or a keyword through never gets this far: HostAddress refuses it.
        #expect(throws: ValidationProblem.self) { try HostAddress("10.0.0.1\nport=1") }
        #expect(throws: ValidationProblem.self) { try HostAddress("10.0.0.1 port=1") }
    }
}

@Suite("read-only aliases")
struct ReadOnlyRoutingTests {
    let pg1 = try! NodeName("pg1")
    let pg2 = try! NodeName("pg2")

    var registrations: [NodeName: NodeRegistration] {
        [
            pg1: NodeRegistration(name: pg1, address: try! HostAddress("10.0.0.1"), port: try! TCPPort(5432), role: .primary, upstream: nil, priority: 100, location: "d"),
            pg2: NodeRegistration(name: pg2, address: try! HostAddress("10.0.0.2"), port: try! TCPPort(5432), role: .standby, upstream: pg1, priority: 100, location: "d"),
        ]
    }

    func standby(at position: UInt64, streaming: Bool = true) -> MemberStatus {
        MemberStatus(local: .standby(position: LSN(position), timeline: 1, upstream: "pg1", streaming: streaming), decision: "", time: 0)
    }

    @Test("this node's standby while it streams within the limit and its report is fresh; else the primary; nobody leading and no standby: left alone")
    func decisions() {
        let local = Endpoint(host: "10.0.0.2", port: 5432)
        let primary = Endpoint(host: "10.0.0.1", port: 5432)
        func decide(_ report: MemberStatus?, fresh: Bool = true, leader: NodeName? = try! NodeName("pg1"), at position: UInt64? = 1000) -> Endpoint? {
            ReadOnlyRouting.decide(
                me: pg2, report: report, reportFresh: fresh, leader: leader, leaderPosition: position.map { LSN($0) }, maximumLag: 100,
                registrations: registrations)
        }
        #expect(decide(standby(at: 950)) == local)
        #expect(decide(standby(at: 900)) == local, "exactly at the limit")
        #expect(decide(standby(at: 899)) == primary, "over the limit")
        #expect(decide(standby(at: 1000, streaming: false)) == primary, "not streaming")
        #expect(decide(standby(at: 1000), fresh: false) == primary, "a stale report: the monitor may be gone")
        #expect(decide(standby(at: 1000), at: nil) == primary, "the primary's position unknown")
        #expect(decide(nil) == primary)
        #expect(decide(standby(at: 1000), leader: pg2) == nil, "this node leads but is not registered primary yet")
        #expect(decide(nil, leader: nil) == nil)
    }

    @Test("the aliases are added once after [databases], followed apart from the primary's lines, and rewritten alone")
    func iniLines() throws {
        let ini = "[databases]\n* = host=10.0.0.1 port=5432\n\n[pgbouncer]\nlisten_port = 6432\n"
        let added = PgBouncerIni.addingReadOnlyAliases(ini, databases: ["app", "postgres"], suffix: "_ro", host: try HostAddress("10.0.0.1"), port: try TCPPort(5432))
        #expect(added.contains("app_ro = host=10.0.0.1 port=5432 dbname=app") && added.contains("postgres_ro = host=10.0.0.1 port=5432 dbname=postgres"))
        #expect(PgBouncerIni.addingReadOnlyAliases(added, databases: ["app"], suffix: "_ro", host: try HostAddress("10.0.0.9"), port: try TCPPort(1)) == added)
        #expect(PgBouncerIni.readOnlyAliases(added, suffix: "_ro") == ["app_ro", "postgres_ro"])
        let reads = PgBouncerIni.retargetReadOnly(added, suffix: "_ro", host: try HostAddress("10.0.0.2"), port: try TCPPort(5433))
        #expect(PgBouncerIni.readOnlyTarget(reads, suffix: "_ro") == Endpoint(host: "10.0.0.2", port: 5433))
        #expect(PgBouncerIni.target(reads, readOnlySuffix: "_ro") == Endpoint(host: "10.0.0.1", port: 5432), "the primary's line is untouched")
        #expect(reads.contains("app_ro = host=10.0.0.2 port=5433 dbname=app"))
        let failedOver = try PgBouncerIni.retarget(reads, host: try HostAddress("10.0.0.3"), port: try TCPPort(5432), readOnlySuffix: "_ro")
        #expect(PgBouncerIni.target(failedOver, readOnlySuffix: "_ro") == Endpoint(host: "10.0.0.3", port: 5432))
        #expect(PgBouncerIni.readOnlyTarget(failedOver, suffix: "_ro") == Endpoint(host: "10.0.0.2", port: 5433), "the aliases are left to their own decision")
        #expect(PgBouncerIni.readOnlyTarget(ini, suffix: "_ro") == nil && !PgBouncerIni.hasReadOnlyAliases(ini, suffix: "_ro"))
    }

    @Test("a pgbouncer the agent finds already serving the wanted target is not RELOADed (a RELOAD closes the servers of databases registered from *, logins included)")
    func reloadOnlyWhenServedElsewhere() {
        typealias Served = PgBouncerIni.ServedDatabase
        let wanted = Endpoint(host: "127.0.0.1", port: 5432)
        let admin = Served(name: "pgbouncer", host: nil, port: 6432)
        let rows: [([Served], Bool, String)] = [
            ([admin], true, "serves nothing yet: no server connection to close, and its template may be old"),
            ([], true, "nothing listed"),
            ([admin, Served(name: "postgres", host: "127.0.0.1", port: 5432)], false, "already there"),
            ([admin, Served(name: "postgres", host: "127.0.0.1", port: 5433)], true, "another port"),
            ([admin, Served(name: "postgres", host: "10.0.0.1", port: 5432)], true, "another host"),
            ([admin, Served(name: "app", host: "127.0.0.1", port: 5432), Served(name: "postgres", host: "10.0.0.1", port: 5432)], true, "one of two elsewhere"),
            ([admin, Served(name: "postgres", host: "127.0.0.1", port: 5432), Served(name: "postgres_ro", host: "10.0.0.2", port: 5433)], false, "a read-only alias has its own target"),
            ([admin, Served(name: "postgres_ro", host: "10.0.0.2", port: 5433)], true, "only read-only aliases served"),
        ]
        for (served, expected, why) in rows {
            #expect(PgBouncerIni.reloadNeeded(served: served, wanted: wanted, readOnlySuffix: "_ro") == expected, "\(why)")
        }
        #expect(PgBouncerIni.reloadNeeded(served: [Served(name: "postgres_ro", host: "127.0.0.1", port: 5432)], wanted: wanted, readOnlySuffix: nil) == false, "no suffix: an ordinary database")
    }

    @Test("query_wait_timeout: the file's value to set back after a failover hold (pgbouncer's default when it has none), and pgbouncer_timeout in whole seconds during one")
    func queryWaitTimeouts() throws {
        let rows: [(String, String)] = [
            ("[pgbouncer]\nlisten_port = 6432\n", "120"),
            ("[pgbouncer]\nquery_wait_timeout = 30\n", "30"),
            ("[pgbouncer]\n  QUERY_WAIT_TIMEOUT=7.5  \n", "7.5"),
            ("[databases]\nquery_wait_timeout = host=x\n[pgbouncer]\n", "120"),
            ("[pgbouncer]\nquery_wait_timeout = 30; DROP\n", "120"),
            ("", "120"),
        ]
        for (text, expected) in rows { #expect(PgBouncerIni.queryWaitTimeout(text) == expected, "\(text)") }
        var config = ClusterConfig()
        #expect(PgBouncerIni.failoverQueryWaitTimeout(config) == "5", "the shipped pgbouncer_timeout")
        config.pgbouncerTimeout = .milliseconds(2500)
        #expect(PgBouncerIni.failoverQueryWaitTimeout(config) == "3", "rounded up")
        config.pgbouncerTimeout = .milliseconds(10)
        #expect(PgBouncerIni.failoverQueryWaitTimeout(config) == "1", "at least a second")
    }
}
