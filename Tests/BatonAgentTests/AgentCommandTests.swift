import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonConsulServer
import BatonCore
import BatonTestSupport
import ConsulAPI
import Foundation
import Logging
import Testing

/// A Consul server with a cluster of two registered nodes and a node config file for pg1: served over
/// HTTP on a port of its own (what commands run as processes need), or in this process with no socket
/// (``InProcessConsul``: what the monitor's shell tests run against, with Consul's trouble on request).
final class Fixture: Sendable {
    let directory = NSTemporaryDirectory() + "baton-agent-" + UUID().uuidString.prefix(8)
    /// The server over HTTP; nil in process.
    private let server: ConsulServer?
    /// The server in this process; nil over HTTP.
    let inProcess: InProcessConsul?
    /// The tests' client; in process, as the monitor daemon makes one (requests give up after 2 s).
    let client: ConsulClient
    let keys = ClusterKeys(cluster: try! ClusterName("main"))
    var configPath: String { directory + "/baton.yaml" }
    /// The server's address: its port over HTTP, a name nobody dials in process.
    var address: String { server.map { "127.0.0.1:\($0.localAddress.port)" } ?? "in-process:8500" }
    /// The HTTP server's port (a test that puts a proxy in front of it).
    var port: Int? { server?.localAddress.port }

    init(inProcess: Bool = false) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        if inProcess {
            let consul = try await InProcessConsul(logger: logger)
            server = nil
            self.inProcess = consul
            client = consul.client(requestTimeout: .seconds(2))
        } else {
            let server = try await ConsulServer(
                host: "127.0.0.1", port: 0, dataDirectory: directory + "/consul", settings: ServerSettings(), logger: logger)
            self.server = server
            self.inProcess = nil
            client = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: "127.0.0.1:\(server.localAddress.port)")]))
        }
        for (i, name) in ["pg1", "pg2"].enumerated() {
            _ = try await PriorityAllocator(client: client, key: keys.keepalivedNodes).allocate(try NodeName(name))
            let registration = NodeRegistration(
                name: try NodeName(name), address: try HostAddress("198.18.0.\(i + 1)"), port: try TCPPort(5432),
                role: i == 0 ? .primary : .standby, upstream: i == 0 ? nil : try NodeName("pg1"), priority: 100, location: "default")
            try await client.put(keys.node(try NodeName(name)), registration.json.serializedBytes())
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "cluster: main\nnode-name: pg1\nconsul: '\(address)'\n".write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    func close() async {
        await server?.shutdown()
        inProcess?.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var config: NodeConfig { try! NodeConfig.load(path: configPath, cluster: nil, consul: nil) }

    func nodes() async throws -> KeepalivedNodes {
        try KeepalivedNodes(bytes: try await client.get(keys.keepalivedNodes).value?.value, key: keys.keepalivedNodes)
    }
}

func withFixture(inProcess: Bool = false, _ body: (Fixture) async throws -> Void) async throws {
    let f = try await Fixture(inProcess: inProcess)
    do { try await body(f) } catch {
        await f.close()
        throw error
    }
    await f.close()
}

/// `baton notify`, `baton status` and `baton config` against the embedded Consul server.
@Suite("node commands")
struct AgentCommandTests {
    @Test("keepalived's invocation records the state and an event")
    func notifyFromTheCommandLine() async throws {
        try await withFixture { f in
            let result = try await runCommand(BatonProcess.executable, ["notify", "--config", f.configPath, "INSTANCE", "baton_main", "MASTER", "200"])
            #expect(result.status == 0, "\(result.output)")
            let node = try #require(try await f.nodes().node(try NodeName("pg1")))
            #expect(node.state == "MASTER" && node.stateTime != nil && node.stateSequence != nil)
            let events = try await f.client.list(f.keys.eventsPrefix).value
            #expect(events.count == 1 && events[0].stringValue.contains("VRRP MASTER"))
        }
    }

    @Test("wrong or missing arguments: exit 2 and nothing written")
    func notifyRefusesBadArguments() async throws {
        try await withFixture { f in
            let before = try await f.client.list(f.keys.prefix).index
            for arguments in [["INSTANCE", "baton_main", "MASTER"], ["INSTANCE", "baton_main", "PRIMARY", "200"], ["X", "baton_main", "MASTER", "2"]] {
                let result = try await runCommand(BatonProcess.executable, ["notify", "--config", f.configPath] + arguments)
                #expect(result.status == 2, "\(arguments): \(result.output)")
                #expect(result.output.contains("nothing was written"))
            }
            #expect(try await f.client.list(f.keys.prefix).index == before)
        }
    }

    @Test("notifications that reach Consul out of order leave the newest state")
    func notifyOutOfOrder() async throws {
        try await withFixture { f in
            let notify = Notify(config: f.config, client: f.client)
            let states = ["BACKUP", "MASTER", "FAULT", "BACKUP", "MASTER", "FAULT", "MASTER", "BACKUP"]
            // Sequence i is raised in order; they are delivered all at once, in reverse.
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for (i, state) in states.enumerated().reversed() {
                    let n = try VRRPNotification(arguments: ["INSTANCE", "baton_main", state, "200"], sequence: UInt64(100 + i))
                    group.addTask { try await notify.record(n) }
                }
                try await group.waitForAll()
            }
            let node = try #require(try await f.nodes().node(try NodeName("pg1")))
            #expect(node.state == states.last && node.stateSequence == UInt64(100 + states.count - 1))
            #expect(try await f.nodes().node(try NodeName("pg2"))?.state == nil, "pg2 untouched")
        }
    }

    @Test("status shows every node, the VRRP state and problems; --json parses")
    func status() async throws {
        try await withFixture { f in
            _ = try await Notify(config: f.config, client: f.client).record(
                try VRRPNotification(arguments: ["INSTANCE", "baton_main", "MASTER", "200"], sequence: 5))
            try await f.client.put(f.keys.nodesPrefix + "evil", #"{"name":"evil\n","address":"x","port":1,"role":"standby","priority":1}"#)
            let table = try await runCommand(BatonProcess.executable, ["status", "--config", f.configPath])
            #expect(table.status == 0, "\(table.output)")
            for fragment in ["Cluster: main", "pg1", "pg2", "primary", "standby", "MASTER", "198.18.0.2:5432", "problem: ", "VRRP MASTER"] {
                #expect(table.output.contains(fragment), "missing \(fragment) in:\n\(table.output)")
            }
            #expect(!table.output.contains("evil\n"), "a hostile value is escaped")
            let json = try await runCommand(BatonProcess.executable, ["status", "--json", "--config", f.configPath])
            let parsed = try JSONValue.parse(json.output.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(parsed.member("nodes")?.arrayValue?.count == 2)
            #expect(parsed.member("problems")?.arrayValue?.count == 1)
        }
    }

    @Test("config set changes settings all or nothing")
    func configSet() async throws {
        try await withFixture { f in
            let ok = try await runCommand(BatonProcess.executable, ["config", "set", "--config", f.configPath, "synchronous_mode=on", "ttl=20s"])
            #expect(ok.status == 0, "\(ok.output)")
            let settings = ClusterSettings(config: f.config, client: f.client)
            #expect(try await settings.show().synchronousMode == .on)
            let before = try await f.client.get(f.keys.config).value
            let bad = try await runCommand(BatonProcess.executable, ["config", "set", "--config", f.configPath, "ttl=30s", "loop_wait=never"])
            #expect(bad.status != 0 && bad.output.contains("loop_wait"))
            let unsafe = try await runCommand(BatonProcess.executable, ["config", "set", "--config", f.configPath, "loop_wait=15s"])
            #expect(unsafe.status != 0 && unsafe.output.contains("a third of ttl"))
            #expect(try await f.client.get(f.keys.config).value == before, "a refused set writes nothing")
            let show = try await runCommand(BatonProcess.executable, ["config", "show", "--config", f.configPath])
            #expect(show.output.contains("ttl = 20s") && show.output.contains("synchronous_mode = on"))
        }
    }
}
