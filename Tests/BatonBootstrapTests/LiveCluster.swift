import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import BatonSigning
import BatonTestSupport
import ConsulAPI
import Foundation
import Logging
import Testing

/// A temporary place for real PostgreSQL nodes on loopback, with Baton's embedded Consul server. Every
/// PostgreSQL it started is stopped and every file removed when the test ends, also when it fails.
final class LiveCluster: @unchecked Sendable {
    // @unchecked: used by one test task at a time; `dataDirectories` is guarded by `lock`.
    static let bindir = "/usr/lib/postgresql/15/bin"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: bindir + "/initdb") }
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    let root: String
    /// The cluster's Consul: `baton consul serve` in a process of its own, as an operator runs it. (In
    /// the test process its tasks shared Swift's cooperative threads — two on CI's machine — with the
    /// test's own work, and it stopped answering for 2–5 s at a time under load.)
    private var consul: BatonProcess?
    let client: ConsulClient
    let consulAddress: String
    /// The server's faults on request (an election, a hang, slow answers, an agent restart).
    let faults: FaultControlClient
    private let lock = NSLock()
    private var dataDirectories: [String] = []
    private var extraProcesses: [BatonProcess] = []
    private var apiPorts: [String: Int] = [:]

    init() async throws {
        root = "/tmp/baton-live-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        consulAddress = "127.0.0.1:\(try FreePort.pick())"
        faults = FaultControlClient(address: "127.0.0.1:\(try FreePort.pick())")
        client = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: consulAddress)]))
        try await startConsul()
        try "repl-secret-\(UUID().uuidString.prefix(6))\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
    }

    var passwordFile: String { root + "/replication-password" }

    /// Signs node API writes as the cluster's members do.
    var signer: NodeAPISigner {
        let password = (try? String(contentsOfFile: passwordFile, encoding: .utf8))?.trimmingCharacters(in: .newlines) ?? ""
        return NodeAPISigner(replicationPassword: password, cluster: try! ClusterName("live"))  // a valid literal
    }

    /// Each node's API port, picked once.
    func apiPort(_ node: String) -> Int {
        lock.withLock {
            if let port = apiPorts[node] { return port }
            let port = (try? FreePort.pick()) ?? 0
            apiPorts[node] = port
            return port
        }
    }
    var socketDirectory: String { root + "/sockets" }
    func directory(_ node: String) -> String { root + "/" + node }

    /// The options a node of this cluster bootstraps with; `extra` adds or overrides.
    func options(_ node: String, port: Int, extra: [String: RawValue] = [:]) -> [String: RawValue] {
        var o: [String: RawValue] = [
            "cluster": .string("live"), "node-name": .string(node), "address": .string("127.0.0.1"), "consul": .string(consulAddress),
            "pgdata": .string(directory(node) + "/data"), "pg-port": .int(port), "pg-bindir": .string(Self.bindir),
            "pg-socket-dir": .string(socketDirectory), "replication-password-file": .string(passwordFile),
            "state-dir": .string(directory(node) + "/state"), "keepalived-conf": .string(directory(node) + "/keepalived.conf"),
            "pgbouncer-ini": .string(directory(node) + "/pgbouncer/pgbouncer.ini"), "pgbouncer-auth-file": .string(root + "/userlist.txt"),
            "templates-dir": .string(Self.repository), "baton-executable": .string(BatonProcess.executable),
            "baton-config": .string(directory(node) + "/baton.yaml"), "streaming-timeout": .int(60),
            "api-listen": .string("127.0.0.1:\(apiPort(node))"),
        ]
        for (k, v) in extra { o[k] = v }
        return o
    }

    func settings(_ mode: BootstrapMode, _ node: String, port: Int, extra: [String: RawValue] = [:]) throws -> BootstrapSettings {
        try BootstrapSettings.validate(mode: mode, options: options(node, port: port, extra: extra), environment: [:], hostname: "test")
    }

    /// Runs a bootstrap in-process and returns its outcome and what it reported.
    func bootstrap(_ mode: BootstrapMode, _ node: String, port: Int, extra: [String: RawValue] = [:]) async throws -> (BootstrapOutcome, [String]) {
        let settings = try settings(mode, node, port: port, extra: extra)
        lock.withLock { dataDirectories.append(settings.pgdata.value) }
        let lines = LineCollector()
        let outcome = try await Bootstrap(settings: settings, client: client, environment: [:]) { lines.add($0) }.run(dryRun: false)
        return (outcome, lines.lines)
    }

    /// A data directory a test's PostgreSQL runs in (a clone, say): stopped at cleanup.
    func trackDataDirectory(_ path: String) { lock.withLock { dataDirectories.append(path) } }

    func track(_ process: BatonProcess) { lock.withLock { extraProcesses.append(process) } }
    var trackedProcesses: [BatonProcess] { lock.withLock { extraProcesses } }

    /// A superuser connection to a node's PostgreSQL over its Unix socket.
    func connect(port: Int) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            ConnInfo.make([("host", socketDirectory), ("port", String(port)), ("user", "postgres"), ("dbname", "postgres"), ("connect_timeout", "5")]))
    }

    /// Stops the Consul server, waits, and starts it again on the same address and data directory.
    func restartConsul(after downtime: Duration) async throws {
        await stopConsul()
        try await Task.sleep(for: downtime)
        try await startConsul()
    }

    /// Stops the Consul server (SIGTERM, as a service manager does) and waits until it has exited.
    func stopConsul() async {
        guard let consul else { return }
        self.consul = nil
        kill(consul.pid, SIGTERM)
        let exited = await eventually(timeout: .seconds(5)) { !consul.isRunning }
        if !exited { consul.kill() }
    }

    /// Starts the Consul server on this cluster's address and data directory (again, after
    /// ``stopConsul()``), and waits until it answers.
    func startConsul() async throws {
        let process = try BatonProcess.start([
            "consul", "serve", "--listen", consulAddress, "--data-dir", root + "/consul", "--session-ttl-min", "1s",
            "--fault-control", faults.address,
        ])
        consul = process
        let answers = await eventually(timeout: .seconds(10)) { (try? await self.client.get("baton-live-started")) != nil }
        guard answers else { throw TestSupportError("the Consul server did not answer within 10 s: \(process.output.suffix(2000))") }
    }

    func cleanup() async {
        for process in lock.withLock({ extraProcesses }) { process.terminate() }
        // The monitors' watchdogs outlive them by design, and so does pgBackRest's TLS server of a monitor
        // killed before it could stop it (a process group of its own): stop those of this cluster.
        for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap({ Int32($0) }) ?? [] {
            let commandLine = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            if commandLine.contains("baton-watchdog") || commandLine.contains("pgbackrest"), commandLine.contains(root + "/") { kill(pid, SIGKILL) }
        }
        for data in lock.withLock({ dataDirectories }) where FileManager.default.fileExists(atPath: data + "/postmaster.pid") {
            let control = PostgresControl(binDirectory: Self.bindir, dataDirectory: data, osUser: "postgres")
            try? await control.stop(mode: "immediate")
        }
        await stopConsul()
        // BATON_TEST_KEEP=1 keeps the logs and data of every live cluster for a post-mortem.
        if ProcessInfo.processInfo.environment["BATON_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: root)  // ignored: a leftover temporary directory harms nothing
        }
    }

    /// Runs `body` with a fresh live cluster, cleaned up afterwards whatever happens.
    static func with(_ body: (LiveCluster) async throws -> Void) async throws {
        let cluster = try await LiveCluster()
        do {
            try await body(cluster)
        } catch {
            await cluster.cleanup()
            throw error
        }
        await cluster.cleanup()
    }
}

final class LineCollector: @unchecked Sendable {
    // @unchecked: `lines` is guarded by `lock`.
    private let lock = NSLock()
    private var stored: [String] = []
    func add(_ line: String) { lock.withLock { stored.append(line) } }
    var lines: [String] { lock.withLock { stored } }
}

/// Every file under `path` with its size and content digest, to prove a directory was left untouched.
func fingerprint(_ path: String) -> [String: String] {
    var out: [String: String] = [:]
    guard let walker = FileManager.default.enumerator(atPath: path) else { return out }
    while let relative = walker.nextObject() as? String {
        let full = path + "/" + relative
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory)
        if isDirectory.boolValue { out[relative] = "dir"; continue }
        let data = FileManager.default.contents(atPath: full) ?? Data()
        var hash: UInt64 = 1469598103934665603
        for b in data { hash = (hash ^ UInt64(b)) &* 1099511628211 }
        out[relative] = "\(data.count):\(hash)"
    }
    return out
}
