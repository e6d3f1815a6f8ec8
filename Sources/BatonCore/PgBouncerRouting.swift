import ConsulAPI

/// The [databases] target of a pgbouncer.ini, read and rewritten in place: only the `host=` and
/// `port=` of each database line change; every other line, comment and setting stays as written.
public enum PgBouncerIni {
    /// Where the database lines point: the `host` and `port` of the first one in [databases] (the
    /// read-only aliases, named with `readOnlySuffix`, aside).
    public static func target(_ text: String, readOnlySuffix: String? = nil) -> Endpoint? {
        endpoint(of: databaseLines(text).filter { !isReadOnly($0.name, suffix: readOnlySuffix) })
    }

    /// Where the read-only aliases point (the first one), or nil when there is none.
    public static func readOnlyTarget(_ text: String, suffix: String) -> Endpoint? {
        endpoint(of: databaseLines(text).filter { isReadOnly($0.name, suffix: suffix) })
    }

    /// The names of the read-only aliases.
    public static func readOnlyAliases(_ text: String, suffix: String) -> [String] {
        databaseLines(text).map(\.name).filter { isReadOnly($0, suffix: suffix) }
    }

    /// Whether the file has read-only aliases.
    public static func hasReadOnlyAliases(_ text: String, suffix: String) -> Bool {
        databaseLines(text).contains { isReadOnly($0.name, suffix: suffix) }
    }

    /// One row of pgbouncer's `SHOW DATABASES`: a database it serves (a line of its file, or one it
    /// registered from `*` when a client first asked for it) and where its servers are.
    public struct ServedDatabase: Sendable, Equatable {
        public var name: String
        public var host: String?
        public var port: Int?
        public init(name: String, host: String?, port: Int?) {
            (self.name, self.host, self.port) = (name, host, port)
        }
    }

    /// Whether a pgbouncer the agent has just connected to must RELOAD to route to `wanted`, its file
    /// already saying so: it may have read an older file (restarted while the agent rewrote it, or an
    /// agent that died between its write and its RELOAD). A RELOAD is not free: pgbouncer counts a
    /// database registered from `*` as changed on every RELOAD and closes its server connections —
    /// those still logging in too, which fails the clients waiting for them ("server login has been
    /// failing"). So it is RELOADed only when a database it serves points elsewhere, or when it serves
    /// none yet (then it has no server connection a RELOAD could close).
    public static func reloadNeeded(served: [ServedDatabase], wanted: Endpoint, readOnlySuffix: String?) -> Bool {
        let routed = served.filter { $0.name != "pgbouncer" && !isReadOnly($0.name, suffix: readOnlySuffix) }
        return routed.isEmpty || routed.contains { $0.host != wanted.host || $0.port != wanted.port }
    }

    /// pgbouncer's own default for `query_wait_timeout` (seconds).
    public static let defaultQueryWaitTimeout = "120"

    /// The `query_wait_timeout` the file sets in [pgbouncer] — a number of seconds, as pgbouncer reads it
    /// — or pgbouncer's default when it sets none (or something that is not a number: pgbouncer would
    /// not have started with it).
    public static func queryWaitTimeout(_ text: String) -> String {
        guard let entry = entries(in: "pgbouncer", of: text).first(where: { $0.key.lowercased() == "query_wait_timeout" }) else {
            return defaultQueryWaitTimeout
        }
        let value = entry.value.trimmingCharacters(in: .whitespaces)
        let isNumber = !value.isEmpty && value.count <= 12 && value.allSatisfy { $0.isASCII && ($0.isNumber || $0 == ".") }
        return isNumber ? value : defaultQueryWaitTimeout
    }

    /// `query_wait_timeout` while an agent holds clients for a failover: `pgbouncer_timeout`, in whole
    /// seconds (at least 1), so that a client waits that long for the next primary, then fails with
    /// pgbouncer's "query_wait_timeout" instead of hanging for pgbouncer's two minutes.
    public static func failoverQueryWaitTimeout(_ config: ClusterConfig) -> String {
        let nanoseconds = config.pgbouncerTimeout.nanoseconds
        return String(max(1, (nanoseconds + 999_999_999) / 1_000_000_000))
    }

    static func isReadOnly(_ name: String, suffix: String?) -> Bool {
        guard let suffix, !suffix.isEmpty else { return false }
        return name.count > suffix.count && name.hasSuffix(suffix)
    }

    static func endpoint(of lines: [DatabaseLine]) -> Endpoint? {
        for line in lines {
            let pairs = connectionPairs(line.connection)
            if let host = pairs.first(where: { $0.key == "host" })?.value, let port = pairs.first(where: { $0.key == "port" })?.value {
                return Endpoint(host: host, port: Int(port) ?? 0)
            }
        }
        return nil
    }

    /// The file with every database line in [databases] — but the read-only aliases — pointed at
    /// `host:port`.
    public static func retarget(_ text: String, host: HostAddress, port: TCPPort, readOnlySuffix: String? = nil) throws(ValidationProblem) -> String {
        let lines = databaseLines(text).filter { !isReadOnly($0.name, suffix: readOnlySuffix) }
        guard !lines.isEmpty else {
            throw ValidationProblem("pgbouncer.ini has no database line in [databases] (such as `* = host=… port=…`); nothing to point at the primary")
        }
        return point(lines, of: text, at: host, port: port)
    }

    /// The file with its read-only aliases (named with `suffix`) pointed at `host:port`.
    public static func retargetReadOnly(_ text: String, suffix: String, host: HostAddress, port: TCPPort) -> String {
        point(databaseLines(text).filter { isReadOnly($0.name, suffix: suffix) }, of: text, at: host, port: port)
    }

    /// The file with a read-only alias `<db><suffix>` for each of `databases` that has none, right after
    /// the [databases] header, pointed at `host:port` (bootstrap: the primary, until the agent decides).
    public static func addingReadOnlyAliases(_ text: String, databases: [String], suffix: String, host: HostAddress, port: TCPPort) -> String {
        let existing = Set(databaseLines(text).map(\.name))
        let wanted = databases.filter { !existing.contains($0 + suffix) }
        var all = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard !wanted.isEmpty, let header = all.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).lowercased() == "[databases]" }) else { return text }
        let lines = wanted.map { "\($0)\(suffix) = host=\(host.value) port=\(port.value) dbname=\($0)" }
        all.insert(contentsOf: [";; read-only aliases: this node's standby while it streams with little lag, else the primary (baton pgbouncer-agent)"] + lines, at: header + 1)
        return all.joined(separator: "\n")
    }

    static func point(_ lines: [DatabaseLine], of text: String, at host: HostAddress, port: TCPPort) -> String {
        var all = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for line in lines {
            var pairs = connectionPairs(line.connection).filter { $0.key != "host" && $0.key != "port" }
            pairs.insert(("port", String(port.value)), at: 0)
            pairs.insert(("host", host.value), at: 0)
            all[line.index] = line.name + " = " + pairs.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        return all.joined(separator: "\n")
    }

    struct DatabaseLine {
        var index: Int
        var name: String
        var connection: String
    }

    static func databaseLines(_ text: String) -> [DatabaseLine] {
        entries(in: "databases", of: text).map { DatabaseLine(index: $0.index, name: $0.key, connection: String($0.value)) }
    }

    /// The `key = value` lines of one `[section]` of an ini file, comments and blank lines skipped: the
    /// line's index, the key as written (trimmed) and everything after the first `=`.
    static func entries(in section: String, of text: String) -> [(index: Int, key: String, value: Substring)] {
        let header = "[" + section + "]"
        var inside = false
        var found: [(index: Int, key: String, value: Substring)] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") {
                inside = line.lowercased() == header
                continue
            }
            guard inside, !line.isEmpty, !line.hasPrefix(";"), !line.hasPrefix("#"), let equals = line.firstIndex(of: "=") else { continue }
            found.append((index, line[..<equals].trimmingCharacters(in: .whitespaces), line[line.index(after: equals)...]))
        }
        return found
    }

    /// `key=value` pairs of a database line; values may be single-quoted (kept as written).
    static func connectionPairs(_ text: String) -> [(key: String, value: String)] {
        var pairs: [(key: String, value: String)] = []
        var rest = Substring(text)
        while true {
            rest = rest.drop { $0 == " " || $0 == "\t" }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...].drop { $0 == " " }
            var value = ""
            if rest.first == "'" {
                var escaped = false
                var end = rest.index(after: rest.startIndex)
                while end < rest.endIndex {
                    if rest[end] == "'" && !escaped { break }
                    escaped = rest[end] == "\\" && !escaped
                    end = rest.index(after: end)
                }
                let stop = end < rest.endIndex ? rest.index(after: end) : end
                value = String(rest[..<stop])
                rest = rest[stop...]
            } else {
                let end = rest.firstIndex { $0 == " " || $0 == "\t" } ?? rest.endIndex
                value = String(rest[..<end])
                rest = rest[end...]
            }
            pairs.append((key, value))
        }
        return pairs
    }
}

/// A host and port as written in a pgbouncer.ini.
public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { "\(host):\(port)" }
}

/// A switchover's request that every pgbouncer pause before the old primary stops (`pgbouncer/pause`).
public struct PauseRequest: Sendable, Equatable {
    public var id: String
    /// The primary stepping down: while it still leads, pgbouncers stay paused.
    public var from: NodeName
    public var to: NodeName
    /// How long the request stands, counted by each agent from when it first saw it (its own clock):
    /// a request left by a monitor that died is void after that.
    public var timeout: GoDuration

    public init(id: String, from: NodeName, to: NodeName, timeout: GoDuration) {
        self.id = id
        self.from = from
        self.to = to
        self.timeout = timeout
    }

    public var json: JSONValue {
        .object([("id", .string(id)), ("from", .string(from.value)), ("to", .string(to.value)), ("timeout", .string(timeout.description))])
    }

    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        let json = try Record.object(bytes, key: key)
        let id = try Record.string(json, "id", key: key)
        guard !id.isEmpty, id.count <= 64, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw ValidationProblem("Consul key \(key): id must be letters, digits and '-'")
        }
        let text = try Record.string(json, "timeout", key: key)
        let timeout: GoDuration
        do { timeout = try GoDuration(parsing: text) } catch { throw ValidationProblem("Consul key \(key): timeout \(Quote.show(text)) is not a duration") }
        guard timeout > .zero, timeout <= .seconds(3600) else { throw ValidationProblem("Consul key \(key): timeout must be from 1ns to 1h") }
        self.init(
            id: id, from: try NodeName(try Record.string(json, "from", key: key), field: "\(key) from"),
            to: try NodeName(try Record.string(json, "to", key: key), field: "\(key) to"), timeout: timeout)
    }

    public func acknowledgement(_ phase: PauseAcknowledgement.Phase) -> PauseAcknowledgement { PauseAcknowledgement(id: id, phase: phase) }
}

/// An agent's acknowledgement of a pause request: paused (before the old primary stops), or resumed
/// on the new primary.
public struct PauseAcknowledgement: Sendable, Equatable, CustomStringConvertible {
    public enum Phase: String, Sendable { case paused, resumed }
    public var id: String
    public var phase: Phase
    public init(id: String, phase: Phase) {
        self.id = id
        self.phase = phase
    }
    public var description: String { "\(id):\(phase.rawValue)" }
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let phase = Phase(rawValue: String(text[text.index(after: colon)...])) else { return nil }
        self.init(id: String(text[..<colon]), phase: phase)
    }
}

/// What a pgbouncer agent remembers between its passes: when it first saw the pause request that
/// stands, judged on its own clock — a request left by a monitor that died is void after its timeout.
public struct BouncerAgentMemory: Sendable, Equatable {
    private var seen: Sighting?
    private struct Sighting: Sendable, Equatable {
        var id: String
        var since: ContinuousClock.Instant
    }

    public init() {}

    /// What identifies the leader key's holder: its value and session (the holder's heartbeat rewrites
    /// the key without changing this). Unchanged since the last full decision, an agent's tick has
    /// nothing to decide.
    public static func leaderIdentity(_ pair: KVPair?) -> [UInt8] { (pair?.value ?? []) + Array((pair?.session ?? "-").utf8) }

    /// The pause request that stands now: `pending` as read, unless it has been seen for longer than
    /// its timeout; nil when there is none.
    public mutating func standing(_ pending: PauseRequest?, at now: ContinuousClock.Instant) -> PauseRequest? {
        guard let pending else {
            seen = nil
            return nil
        }
        let since = seen?.id == pending.id ? seen!.since : now
        seen = Sighting(id: pending.id, since: since)
        return now - since < pending.timeout.swiftDuration ? pending : nil
    }
}

/// Who holds the leader lock, as a pgbouncer agent reads it.
public enum AgentLeaderView: Sendable, Equatable {
    /// Nobody: a failover or switchover is under way.
    case none
    case held(NodeName)
    /// The key holds something that is not a node name.
    case malformed(String)
}

/// What a node's pgbouncer should do.
public enum PgBouncerRouting: Sendable, Equatable {
    /// Route to the leader's PostgreSQL and take clients.
    case route(host: HostAddress, port: TCPPort, acknowledge: PauseAcknowledgement?)
    /// Hold clients (PAUSE) and keep the current target: nobody writable leads yet, or a switchover is
    /// about to stop the current primary.
    case hold(reason: String, acknowledge: PauseAcknowledgement?)
    /// Change nothing (bad data in Consul): the reason is logged.
    case untouched(reason: String)

    /// The pure decision: pgbouncer routes only to the node that holds the lock *and* has registered
    /// as primary (it registers after its promotion completes), and never while a switchover from
    /// that node is pausing clients.
    /// - Parameters:
    ///   - request: the pause request, when it still stands (the agent judges its age on its own
    ///     clock).
    ///   - nodeGone: a node whose PostgreSQL the agent found gone, and how (its idle connection to the
    ///     node closed, and neither its API nor its PostgreSQL answers): while it still holds the lock —
    ///     until its fence runs out and another takes over — clients wait instead of failing on it.
    public static func decide(
        leader: AgentLeaderView, registrations: [NodeName: NodeRegistration], request active: PauseRequest?,
        nodeGone: (node: NodeName, how: String)? = nil
    ) -> PgBouncerRouting {
        switch leader {
        case .malformed(let reason):
            return .untouched(reason: "the leader key is malformed (\(reason)); pgbouncer left as it is")
        case .none:
            return .hold(reason: "no node holds the leader lock (failover or switchover under way)", acknowledge: active?.acknowledgement(.paused))
        case .held(let leader):
            guard let registration = registrations[leader] else {
                return .untouched(reason: "the leader \(leader) has no valid registration in nodes/; pgbouncer left as it is")
            }
            if let active, active.from == leader {
                return .hold(reason: "switchover from \(leader) to \(active.to): clients wait", acknowledge: active.acknowledgement(.paused))
            }
            guard registration.role == .primary else {
                return .hold(reason: "\(leader) holds the lock and is not yet promoted", acknowledge: active?.acknowledgement(.paused))
            }
            if let gone = nodeGone, gone.node == leader {
                return .hold(reason: "the leader \(leader) is gone (\(gone.how)): clients wait for the next leader", acknowledge: active?.acknowledgement(.paused))
            }
            return .route(host: registration.address, port: registration.port, acknowledge: active?.acknowledgement(.resumed))
        }
    }
}

/// A pgbouncer agent's report under `pgbouncer/agents/<node>`: where its pgbouncer routes, whether it
/// holds clients, its last acknowledgement of a pause request, and when.
public struct BouncerStatus: Sendable, Equatable {
    public var target: String?
    public var paused: Bool
    public var acknowledged: PauseAcknowledgement?
    /// Why the agent cannot do its job, when it cannot (pgbouncer down, bad data in Consul).
    public var problem: String?
    /// Unix time of the report, by the agent's clock: shown, never compared. Agents report at least
    /// every ``refresh`` seconds, so a report whose key stopped changing for three of those means a
    /// dead agent.
    public var time: Double

    public static let refresh: Double = 10
    /// How long an agent's report may stay unchanged before the agent counts as gone.
    public static let liveness: Duration = .seconds(30)

    public init(target: String?, paused: Bool, acknowledged: PauseAcknowledgement?, problem: String?, time: Double) {
        self.target = target
        self.paused = paused
        self.acknowledged = acknowledged
        self.problem = problem
        self.time = time
    }

    public var json: JSONValue {
        var members: [(String, JSONValue)] = [("time", .number(TimeText.fixed(time, places: 3))), ("paused", .bool(paused))]
        members.append(("target", target.map { .string($0) } ?? .null))
        if let acknowledged { members.append(("acknowledged", .string(acknowledged.description))) }
        if let problem { members.append(("problem", .string(problem))) }
        return .object(members)
    }

    /// Reads a report; `nil` when it is not one.
    public init?(bytes: [UInt8]?) {
        guard let json = try? JSONValue.parse(bytes ?? []), let time = json.member("time")?.doubleValue, let paused = json.member("paused")?.boolValue
        else { return nil }
        self.init(
            target: json.member("target")?.stringValue, paused: paused, acknowledged: json.member("acknowledged")?.stringValue.flatMap(PauseAcknowledgement.init),
            problem: json.member("problem")?.stringValue, time: time)
    }
}

extension PauseRequest {
    /// Which live agents have acknowledged `phase` of this request, and which are still awaited. Agents
    /// that stopped reporting (no pgbouncer agent on that node, or a dead one) are not waited for.
    public func acknowledgements(_ agents: [NodeName: BouncerStatus], phase: PauseAcknowledgement.Phase, live: (NodeName) -> Bool)
        -> (acknowledged: [NodeName], awaited: [NodeName])
    {
        let wanted = acknowledgement(phase)
        let reporting = agents.filter { live($0.key) }
        let acknowledged = reporting.filter { $0.value.acknowledged == wanted }.keys.sorted()
        let awaited = reporting.filter { $0.value.acknowledged != wanted }.keys.sorted()
        return (acknowledged, awaited)
    }
}

/// Where a node's read-only aliases (`<db>_ro`) point: its own standby while that streams with lag
/// under the limit — reads spread over the replicas, each node's clients reading next to them — else
/// the primary (this node is the primary, its standby lags, stopped streaming or is down).
public enum ReadOnlyRouting {
    /// - Parameters:
    ///   - me: this node; `report` its monitor's last report, `reportFresh` whether it keeps coming.
    ///   - leader: the node holding the lock, if any; `leaderPosition` its last reported WAL position.
    ///   - maximumLag: bytes behind the leader past which the standby no longer serves reads.
    /// - Returns: the target, or nil when there is none (no primary leads and the standby cannot serve):
    ///   the aliases are left as they are.
    public static func decide(
        me: NodeName, report: MemberStatus?, reportFresh: Bool, leader: NodeName?, leaderPosition: LSN?, maximumLag: UInt64,
        registrations: [NodeName: NodeRegistration]
    ) -> Endpoint? {
        if let report, reportFresh, leader != me, report.role == "standby", report.streaming == true, let position = report.position,
            let leaderPosition, (leaderPosition > position ? leaderPosition.value - position.value : 0) <= maximumLag,
            let mine = registrations[me]
        {
            return Endpoint(host: mine.address.value, port: mine.port.value)
        }
        guard let leader, let primary = registrations[leader], primary.role == .primary else { return nil }
        return Endpoint(host: primary.address.value, port: primary.port.value)
    }
}
