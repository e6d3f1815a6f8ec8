import BatonCore
import ConsulAPI
import Testing

@Suite("day-2: parameters, commands, tags, status warnings")
struct DayTwoTests {
    /// The registration pair of node `name` with `role`.
    static func registration(_ name: String, _ role: NodeRole, keys: ClusterKeys) throws -> KVPair {
        let registration = NodeRegistration(
            name: try NodeName(name), address: try HostAddress("10.0.0.1"), port: try TCPPort(5432), role: role, upstream: nil, priority: 100,
            location: "default")
        return KVPair(key: keys.node(try NodeName(name)), value: registration.json.serializedBytes())
    }

    let workMem = PostgresSettingDefinition(
        name: "work_mem", kind: .integer, unit: "kB", minimum: 64, maximum: 2_147_483_647, enumValues: [], context: "user")
    let sharedBuffers = PostgresSettingDefinition(
        name: "shared_buffers", kind: .integer, unit: "8kB", minimum: 16, maximum: 1_073_741_823, enumValues: [], context: "postmaster")
    let timeout = PostgresSettingDefinition(
        name: "statement_timeout", kind: .integer, unit: "ms", minimum: 0, maximum: 2_147_483_647, enumValues: [], context: "user")

    func message(_ definition: PostgresSettingDefinition, _ value: String) -> String? {
        do throws(ValidationProblem) {
            try definition.check(value)
            return nil
        } catch { return error.message }
    }

    @Test("values are checked as PostgreSQL parses them: units, ranges, booleans, enumerations; PostgreSQL's wording")
    func settingChecks() {
        for ok in ["64MB", "4096", "1GB", " 128kB ", "1.5MB"] { #expect(message(workMem, ok) == nil, "\(ok)") }
        #expect(message(workMem, "lots") == "invalid value for parameter \"work_mem\": \"lots\"")
        #expect(message(workMem, "64XB")?.contains("valid units for this parameter are \"B\", \"kB\", \"MB\", \"GB\", and \"TB\"") == true)
        #expect(message(workMem, "32kB") == "32 kB is outside the valid range for parameter \"work_mem\" (64 kB .. 2147483647 kB)")
        // 8kB pages: 128MB is 16384 of them; 64kB is 8, under the minimum of 16.
        #expect(message(sharedBuffers, "128MB") == nil)
        #expect(message(sharedBuffers, "64kB") == "8 8kB is outside the valid range for parameter \"shared_buffers\" (16 8kB .. 1073741823 8kB)")
        #expect(message(timeout, "5min") == nil && message(timeout, "30s") == nil)
        #expect(message(timeout, "5 parsecs")?.hasPrefix("invalid value for parameter \"statement_timeout\"") == true)
        #expect(message(timeout, "-1") == "-1 ms is outside the valid range for parameter \"statement_timeout\" (0 ms .. 2147483647 ms)")
        let connections = PostgresSettingDefinition(
            name: "max_connections", kind: .integer, unit: nil, minimum: 1, maximum: 262_143, enumValues: [], context: "postmaster")
        #expect(message(connections, "0") == "0 is outside the valid range for parameter \"max_connections\" (1 .. 262143)")
        #expect(message(connections, "100MB") == "invalid value for parameter \"max_connections\": \"100MB\"")
        #expect(connections.needsRestart && !workMem.needsRestart)
        let jit = PostgresSettingDefinition(name: "jit", kind: .bool, unit: nil, minimum: nil, maximum: nil, enumValues: [], context: "user")
        for ok in ["on", "OFF", "true", "f", "yes", "0"] { #expect(message(jit, ok) == nil, "\(ok)") }
        #expect(message(jit, "maybe") == "parameter \"jit\" requires a Boolean value")
        let level = PostgresSettingDefinition(
            name: "log_min_messages", kind: .enum, unit: nil, minimum: nil, maximum: nil, enumValues: ["debug1", "info", "warning"], context: "superuser")
        #expect(message(level, "WARNING") == nil)
        #expect(message(level, "loud") == "invalid value for parameter \"log_min_messages\": \"loud\"; available values: debug1, info, warning")
        let fraction = PostgresSettingDefinition(
            name: "checkpoint_completion_target", kind: .real, unit: nil, minimum: 0, maximum: 1, enumValues: [], context: "sighup")
        #expect(message(fraction, "0.9") == nil)
        #expect(message(fraction, "1.5") == "1.5 is outside the valid range for parameter \"checkpoint_completion_target\" (0 .. 1)")
        let row: [String?] = ["work_mem", "integer", "kB", "64", "2147483647", nil, "user"]
        #expect(PostgresSettingDefinition(row: row) == workMem)
        let enumRow: [String?] = ["wal_compression", "enum", nil, nil, nil, "{pglz,lz4,zstd,on,off}", "superuser"]
        #expect(PostgresSettingDefinition(row: enumRow)?.enumValues == ["pglz", "lz4", "zstd", "on", "off"])
        #expect(message(PostgresSettingDefinition.maxSlotWalKeepSize, "8GB") == nil)
        #expect(message(PostgresSettingDefinition.maxSlotWalKeepSize, "-1") == nil)
    }

    @Test("cluster-wide parameters: Baton's own refused with the reason, names and values safe for a config file, quoted, included before baton.conf")
    func parameters() throws {
        for owned in ["port", "wal_level", "primary_conninfo", "synchronous_standby_names", "synchronous_commit", "data_directory", "restore_command"] {
            #expect(throws: ValidationProblem.self, "\(owned)") { try PostgresParameters().setting(owned, to: "1") }
        }
        #expect(throws: ValidationProblem.self) { try PostgresParameters().setting("Work_Mem", to: "1") }
        #expect(throws: ValidationProblem.self) { try PostgresParameters().setting("work_mem\nport", to: "1") }
        #expect(throws: ValidationProblem.self) { try PostgresParameters().setting("work_mem", to: "1\nport = 1") }
        var p = try PostgresParameters().setting("work_mem", to: "64MB").setting("search_path", to: "\"$user\", it's")
        p = try p.setting("auto_explain.log_min_duration", to: "1s")
        #expect(p.fileText.hasSuffix("auto_explain.log_min_duration = '1s'\nsearch_path = '\"$user\", it''s'\nwork_mem = '64MB'\n"))
        let back = try PostgresParameters(bytes: p.json.serializedBytes(), key: "k")
        #expect(back == p)
        #expect(p.changes(from: try PostgresParameters().setting("work_mem", to: "4MB").setting("jit", to: "off"))
            == "auto_explain.log_min_duration=1s -jit search_path=\"$user\", it's work_mem=64MB")
        #expect(try p.setting("work_mem", to: nil).values["work_mem"] == nil)
        // Someone else's value in Consul is checked as strictly as the command's.
        #expect(throws: ValidationProblem.self) { try PostgresParameters(bytes: Array(#"{"port": "1"}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try PostgresParameters(bytes: Array(#"{"work_mem": 5}"#.utf8), key: "k") }
        // The includes: parameters first, then baton.conf, last, once; moved to the end when elsewhere.
        let conf = "shared_buffers = 128MB\n" + PostgresFiles.includeLine + "\nwork_mem = 1MB\n"
        let included = PostgresFiles.withInclude(conf)
        #expect(included == "shared_buffers = 128MB\nwork_mem = 1MB\n" + PostgresParameters.includeLine + "\n" + PostgresFiles.includeLine + "\n")
        #expect(PostgresFiles.withInclude(included) == included)
    }

    @Test("node commands: fields validated, finished states, a primary is never re-cloned")
    func commands() throws {
        let command = NodeCommand(id: "abc-1", kind: .restart, onlyPending: true, by: "pg1", time: "t")
        #expect(try NodeCommand(bytes: command.json.serializedBytes(), key: "k") == command)
        #expect(try NodeCommand(bytes: command.with(.done, "ok").json.serializedBytes(), key: "k").state.isFinished)
        #expect(!NodeCommand.State.running.isFinished && NodeCommand.State.skipped.isFinished)
        #expect(throws: ValidationProblem.self) { try NodeCommand(bytes: Array(#"{"id":"a b","kind":"restart","state":"requested"}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try NodeCommand(bytes: Array(#"{"id":"a","kind":"rm -rf","state":"requested"}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try NodeCommand(bytes: Array(#"{"id":"a","kind":"reload","state":"later"}"#.utf8), key: "k") }
        let primary = LocalPostgres.primary(position: LSN(1), timeline: 1)
        let standby = LocalPostgres.standby(position: LSN(1), timeline: 1, upstream: nil, streaming: true)
        let states: [LocalPostgres] = [
            primary, standby, .down(standbySignal: true), .down(standbySignal: false), .unresponsive(standbySignal: true, postmaster: true),
            .unresponsive(standbySignal: false, postmaster: false),
        ]
        for local in states {
            for lock in [true, false] {
                // A restart only of a running server in its place: the leader's primary, another node's standby.
                let restartable = (lock && local == primary) || (!lock && local == standby)
                #expect((NodeCommand.refusal(.restart, holdsLock: lock, local: local) == nil) == restartable, "\(local) \(lock)")
                #expect((NodeCommand.refusal(.reload, holdsLock: lock, local: local) == nil) == local.isUp)
                #expect((NodeCommand.refusal(.reinit, holdsLock: lock, local: local) == nil) == !lock)
            }
        }
        #expect(NodeCommand.refusal(.reinit, holdsLock: true, local: primary)?.contains("never re-cloned") == true)
        let name = try NodeName("a")
        let actions: [MonitorAction] = [
            .keepLeading, .stepDown(to: name), .acquireLeader(reason: ""), .takeOver(from: name, reason: ""), .promote, .releaseLeader(reason: ""),
            .fence(reason: ""), .follow(leader: name, endpoint: ""), .startStandby, .rejoin(leader: name), .wait(reason: ""),
        ]
        for action in actions {
            for kind in NodeCommand.Kind.allCases {
                for leading in [true, false] {
                    let may = NodeCommand.mayRun(kind, during: action, leading: leading)
                    switch action {
                    case .keepLeading: #expect(may)
                    case .wait: #expect(may == !leading)
                    case .startStandby, .rejoin, .follow, .fence: #expect(may == (kind == .reinit && !leading), "\(action) \(kind)")
                    default: #expect(!may, "never while taking or giving up the lead: \(action)")
                    }
                }
            }
        }
    }

    @Test("tags: set with validation, honoured by the failover ranking")
    func tags() throws {
        let tags = try NodeTags().setting(["priority=5", "nofailover=true"])
        #expect(tags == NodeTags(priority: 5, noFailover: true))
        #expect(tags.failoverPriority(registered: 100) == 0)
        #expect(NodeTags(priority: 5).failoverPriority(registered: 100) == 5)
        #expect(NodeTags().failoverPriority(registered: 100) == 100)
        #expect(try NodeTags(bytes: tags.json.serializedBytes(), key: "k") == tags)
        for bad in [["priority=-1"], ["priority=x"], ["nosync=yes"], ["colour=red"], ["priority"], []] {
            #expect(throws: ValidationProblem.self, "\(bad)") { try NodeTags().setting(bad) }
        }
        #expect(throws: ValidationProblem.self) { try NodeTags(bytes: Array(#"{"priority": 2000}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try NodeTags(bytes: Array(#"{"owner": "me"}"#.utf8), key: "k") }

        let keys = ClusterKeys(cluster: try ClusterName("c"))
        var pairs: [KVPair] = []
        for name in ["a", "b"] {
            let registration = NodeRegistration(
                name: try NodeName(name), address: try HostAddress("10.0.0.1"), port: try TCPPort(5432), role: .standby, upstream: nil, priority: 100,
                location: "default")
            pairs.append(KVPair(key: keys.node(try NodeName(name)), value: registration.json.serializedBytes()))
            let status = MemberStatus(local: .standby(position: LSN(100), timeline: 1, upstream: nil, streaming: true), decision: "", time: 0)
            pairs.append(KVPair(key: keys.status(try NodeName(name)), value: status.json.serializedBytes()))
        }
        pairs.append(KVPair(key: keys.tags(try NodeName("a")), value: NodeTags(noFailover: true).json.serializedBytes()))
        let snapshot = ClusterSnapshot(pairs: pairs, keys: keys)
        let choice = FailoverCandidates.choose(
            FailoverCandidates.candidates(snapshot, fresh: { _ in true }), synchronousMode: .off, synchronous: nil, lastPrimaryPosition: nil,
            maximumLag: 1 << 20)
        #expect(choice.ranked == [try NodeName("b")])
        #expect(choice.ineligible[try NodeName("a")] == .noFailover)
    }

    /// Issue 23, finding 1: a standby whose slot on the primary lost WAL it never received
    /// (`wal_status = lost`) is never promoted in asynchronous mode, whatever the lag limit; in
    /// synchronous mode the record decides (a recorded standby has every acknowledged commit).
    @Test("a standby whose replication slot lost WAL is not eligible in asynchronous mode, and status says to reinit it")
    func lostSlot() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        var pairs: [KVPair] = []
        for (name, role) in [("a", NodeRole.primary), ("b", .standby), ("c", .standby)] {
            pairs.append(try Self.registration(name, role, keys: keys))
            guard role == .standby else { continue }
            let status = MemberStatus(local: .standby(position: LSN(name == "b" ? 900 : 100), timeline: 1, upstream: nil, streaming: false), decision: "", time: 0)
            pairs.append(KVPair(key: keys.status(try NodeName(name)), value: status.json.serializedBytes()))
        }
        var primary = MemberStatus(local: .down(standbySignal: false), decision: "", time: 0)
        primary.slots = [SlotReport(name: "baton_b", active: false, retainedBytes: 0, walStatus: "lost"), SlotReport(name: "baton_c", active: true, retainedBytes: 10, walStatus: "reserved")]
        pairs.append(KVPair(key: keys.status(try NodeName("a")), value: primary.json.serializedBytes()))
        let snapshot = ClusterSnapshot(pairs: pairs, keys: keys)
        let a = try NodeName("a")
        #expect(snapshot.reports[a]?.status.slots == primary.slots, "wal_status travels in the report")
        let candidates = FailoverCandidates.candidates(snapshot, fresh: { _ in true })
        let asynchronous = FailoverCandidates.choose(candidates, synchronousMode: .off, synchronous: nil, lastPrimaryPosition: nil, maximumLag: 1 << 40)
        let b = try NodeName("b")
        let c = try NodeName("c")
        #expect(asynchronous.ranked == [c] && asynchronous.ineligible[b] == .slotLost, "b is further ahead, but lost WAL")
        let record = SyncRecord(standby: b, leader: try NodeName("a"), position: LSN(900))
        let synchronous = FailoverCandidates.choose(candidates, synchronousMode: .strict, synchronous: record, lastPrimaryPosition: nil, maximumLag: 0)
        #expect(synchronous.ranked == [b])
        var view = StatusView(snapshot: snapshot, cluster: try ClusterName("c"), events: 0)
        view.slots = primary.slots
        #expect(view.warnings.contains { $0.contains("baton_b lost WAL b had not received") && $0.contains("`baton reinit b`") }, "\(view.warnings)")
    }

    @Test("status warns about slots that hold much WAL or whose node is gone, and shows tags, pending restarts and the last failover")
    func statusWarnings() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        var pairs: [KVPair] = []
        for (name, role) in [("a", NodeRole.primary), ("b", .standby), ("c", .standby)] {
            pairs.append(try Self.registration(name, role, keys: keys))
        }
        var primary = MemberStatus(local: .primary(position: LSN(1 << 40), timeline: 2), decision: "keep leading", time: 0)
        primary.slots = [
            SlotReport(name: "baton_b", active: false, retainedBytes: 3 << 30), SlotReport(name: "baton_c", active: true, retainedBytes: 2 << 30),
            SlotReport(name: "baton_gone", active: false, retainedBytes: 100),
        ]
        primary.pendingRestart = ["max_connections"]
        pairs.append(KVPair(key: keys.status(try NodeName("a")), value: primary.json.serializedBytes()))
        pairs.append(KVPair(key: keys.leader, value: Array("a".utf8), session: "s"))
        pairs.append(KVPair(key: keys.tags(try NodeName("b")), value: NodeTags(noSync: true).json.serializedBytes()))
        let event = ClusterEvent(time: "2026-11-28T03:00:00Z", node: try NodeName("a"), kind: "promote", detail: "promoted to primary on timeline 2")
        let history = [KVPair(key: keys.eventsPrefix + "1-a", value: event.json.serializedBytes())]
        let running = NodeCommand(id: "r1", kind: .restart, onlyPending: true, by: "a", time: "10:00", state: .running)
        pairs.append(KVPair(key: keys.command(try NodeName("b")), value: running.json.serializedBytes()))
        pairs.append(KVPair(key: keys.command(try NodeName("c")), value: running.with(.done, "ok").json.serializedBytes()))
        var snapshot = ClusterSnapshot(pairs: pairs, keys: keys)
        snapshot.addEvents(history)
        var view = StatusView(snapshot: snapshot, cluster: try ClusterName("c"), events: 5)
        view.liveMonitors = [try NodeName("a"), try NodeName("c")]
        let warnings = view.warnings
        #expect(warnings.count == 3, "\(warnings)")
        #expect(warnings.contains { $0.contains("baton_gone belongs to no registered node") })
        #expect(warnings.contains { $0.contains("baton_b is inactive and b's monitor is not running") && $0.contains("3.0 GB") && $0.contains("`baton remove b`") })
        #expect(warnings.contains { $0.contains("baton_c holds 2.0 GB of WAL") })
        let table = view.table()
        #expect(table.contains("Last failover: 2026-11-28T03:00:00Z (a promoted to primary on timeline 2)"))
        #expect(table.contains("* max_connections") && table.contains("nosync") && table.contains("3.0 GB (inactive)"), "\(table)")
        #expect(table.contains("b: baton restart --pending running, asked by a at 10:00") && !table.contains("c: baton restart"), "a finished command is not shown")
        #expect(StatusView.bytes(512) == "512 B" && StatusView.bytes(16 << 10) == "16 kB" && StatusView.bytes(3 << 19) == "1.5 MB")

        // Finding 14: synchronous mode with nobody recorded says that nobody may promote, and what to do.
        view.config.synchronousMode = .on
        #expect(view.warnings.count == 4 && view.warnings[0].contains("no node could be promoted automatically") && view.warnings[0].contains("--allow-data-loss"), "\(view.warnings)")
        view.synchronousStandby = try NodeName("c")
        #expect(view.warnings.count == 3)
    }
}
