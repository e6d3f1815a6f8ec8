import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The namespace lab the chaos run works in (`scripts/lab.sh`), and what it needs to do to its nodes:
/// find their processes, signal them, change their routes and links.
struct ChaosLab: Sendable {
    let directory: String
    let script: String
    let baton: String
    let nodes: Int

    init(directory: String, script: String, baton: String, nodes: Int) throws {
        self.directory = directory
        self.script = script
        self.baton = baton
        self.nodes = nodes
        keys = ClusterKeys(cluster: try ClusterName("lab"))
    }
    let runner = CommandRunner()
    static let network = "198.18.0"
    static let vip = "198.18.0.100"
    /// The embedded Consul server's own address on the lab's bridge (scripts/lab.sh), apart from the
    /// host's (198.18.0.254, where the workload's connections come from): a node cut from Consul still
    /// answers its clients at once.
    static let consul = "198.18.0.253"
    /// The node name the lab's Consul server reports (`baton consul serve`'s default): every session's.
    static let consulNodeName = "node1"
    var names: [String] { (1...nodes).map { "n\($0)" } }
    var environment: [String: String] {
        ["BATON_LAB_DIR": directory, "BATON": baton, "BATON_LAB_CONSUL_PROXY": chaosExecutable + " proxy"]
    }
    var chaosExecutable: String { URL(fileURLWithPath: baton).deletingLastPathComponent().appendingPathComponent("baton-chaos").path }

    /// `lab.sh ARGS…`; throws with its output when it fails.
    @discardableResult
    func lab(_ arguments: String..., timeout: Duration = .seconds(300)) async throws -> String {
        let result = try await runner.run("/bin/bash", [script] + arguments, environment: environment, timeout: timeout)
        guard result.succeeded else { throw ChaosError("lab.sh \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.output.suffix(2000))") }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `lab.sh down`; with `keepingLogs`, every daemon's log is copied to `<lab dir>.kept` first.
    func down(keepingLogs: Bool) async throws {
        var environment = self.environment
        if keepingLogs { environment["BATON_LAB_KEEP"] = "1" }
        let result = try await runner.run("/bin/bash", [script, "down"], environment: environment, timeout: .seconds(300))
        guard result.succeeded else { throw ChaosError("lab.sh down failed (\(result.status)): \(result.output.suffix(2000))") }
    }

    func number(_ node: String) -> Int { Int(node.dropFirst()) ?? 0 }
    func address(_ node: String) -> String { "\(Self.network).\(number(node))" }
    func namespace(_ node: String) -> String { "baton-lab-\(number(node))" }
    func node(ofAddress address: String) -> String {
        let host = address.split(separator: "/").first.map(String.init) ?? address
        return host.hasPrefix(Self.network + ".") ? "n" + host.dropFirst(Self.network.count + 1) : host
    }

    /// Runs a command inside a node's network namespace.
    @discardableResult
    func inNode(_ node: String, _ arguments: [String]) async throws -> CommandResult {
        try await runner.run("/usr/sbin/ip", ["netns", "exec", namespace(node)] + arguments, timeout: .seconds(10))
    }

    // MARK: Processes

    /// The processes of a node's namespace.
    func pids(_ node: String) async -> [Int32] {
        guard let result = try? await runner.run("/usr/sbin/ip", ["netns", "pids", namespace(node)], timeout: .seconds(5)) else { return [] }
        return result.output.split(separator: "\n").compactMap { Int32($0) }
    }

    static func commandLine(_ pid: Int32) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").replacingOccurrences(of: "\0", with: " ")
    }

    /// The node's processes whose command line contains every one of `parts`.
    func processes(_ node: String, matching parts: [String]) async -> [Int32] {
        await pids(node).filter { pid in
            let line = Self.commandLine(pid)
            return parts.allSatisfy { line.contains($0) }
        }
    }

    func configPath(_ node: String) -> String { "\(directory)/\(node)/baton.yaml" }
    func monitor(_ node: String) async -> [Int32] { await processes(node, matching: ["baton", " monitor ", configPath(node)]) }
    func watchdog(_ node: String) async -> [Int32] { await processes(node, matching: ["baton-watchdog", "\(directory)/\(node)/state"]) }
    func agent(_ node: String) async -> [Int32] { await processes(node, matching: ["pgbouncer-agent", configPath(node)]) }
    func pgbouncer(_ node: String) async -> [Int32] {
        await processes(node, matching: ["pgbouncer", "\(directory)/\(node)/pgbouncer/pgbouncer.ini"]).filter { !Self.commandLine($0).contains("runuser") }
    }

    func postmaster(_ node: String) -> Int32? {
        (try? String(contentsOfFile: "\(directory)/\(node)/data/postmaster.pid", encoding: .utf8)).flatMap { Int32($0.split(separator: "\n").first ?? "") }
    }

    /// A client backend of the node's PostgreSQL (the workload's first).
    func backend(_ node: String) async -> Int32? {
        let all = await processes(node, matching: ["postgres: "])
        return all.first { Self.commandLine($0).hasPrefix("postgres: app ") } ?? all.first { Self.commandLine($0).hasPrefix("postgres: postgres ") }
    }

    func walReceiver(_ node: String) async -> Int32? {
        await processes(node, matching: ["postgres: walreceiver"]).first
    }

    func signal(_ pids: [Int32], _ number: Int32) {
        for pid in pids { kill(pid, number) }
    }

    // MARK: PostgreSQL and Consul

    /// A superuser connection to a node's PostgreSQL over its Unix socket (peer, as root).
    func connect(_ node: String) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            ConnInfo.make([
                ("host", "\(directory)/\(node)/sock"), ("port", "5432"), ("user", "postgres"), ("dbname", "postgres"), ("connect_timeout", "2"),
            ]))
    }

    /// One statement on a node, bounded; nil when it does not answer.
    func scalar(_ node: String, _ sql: String) async -> String? {
        guard let connection = try? await connect(node) else { return nil }
        defer { connection.close() }
        return (try? await connection.query(sql, timeout: .seconds(3)))?.first?.first ?? nil
    }

    /// The lab's Consul (through the delaying proxy), as the nodes reach it.
    func consul() throws -> ConsulClient {
        ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: "\(Self.consul):8500")], requestTimeout: .seconds(3)))
    }

    let keys: ClusterKeys

    /// The node holding the leader lock, or nil.
    func leader(_ client: ConsulClient) async -> String? {
        guard let pair = try? await client.get(keys.leader, .consistent).value, pair.session != nil else { return nil }
        return pair.stringValue
    }

    func synchronousStandby(_ client: ConsulClient) async -> String? {
        let pair = try? await client.get(keys.sync).value
        return (try? SyncRecord.parse(pair?.value, key: keys.sync))??.standby.value
    }

    /// Which node holds the VIP.
    func vipHolder() async -> String? {
        for node in names {
            if let result = try? await inNode(node, ["/usr/sbin/ip", "-4", "addr", "show", "dev", "eth0"]), result.output.contains(" \(Self.vip)/") {
                return node
            }
        }
        return nil
    }

    /// Where a node's pgbouncer.ini routes (its first database line's host).
    func bouncerTarget(_ node: String) -> String? {
        guard let text = try? String(contentsOfFile: "\(directory)/\(node)/pgbouncer/pgbouncer.ini", encoding: .utf8) else { return nil }
        return PgBouncerIni.target(text).map { self.node(ofAddress: $0.host) }
    }

    func setConsulDelay(_ seconds: Double) {
        try? "\(Int(seconds * 1000))\n".write(toFile: directory + "/consul-delay", atomically: true, encoding: .utf8)  // ignored: the proxy keeps its delay, which the report would show
    }
}

struct ChaosError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
