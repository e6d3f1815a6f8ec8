import BatonBootstrap
import BatonSettings
import BatonCore
import Foundation
import Logging
import Synchronization
import Testing

@testable import BatonAgent

/// The monitor's upkeep of keepalived's unicast peers, with a fake reload.
@Suite("keepalived unicast peers")
struct KeepalivedPeersTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    func registration(_ name: String, _ address: String) throws -> (NodeName, NodeRegistration) {
        let node = try NodeName(name)
        return (
            node,
            NodeRegistration(
                name: node, address: try HostAddress(address), port: try TCPPort(5432), role: .standby, upstream: nil, priority: 100, location: "default")
        )
    }

    @Test("the peers follow the registrations: rewritten and reloaded only on change; without --vrrp-unicast the file is not touched")
    func followsRegistrations() throws {
        let directory = NSTemporaryDirectory() + "baton-peers-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }  // ignored: a temporary directory
        try "secret\n".write(toFile: directory + "/password", atomically: true, encoding: .utf8)
        func settings(unicast: Bool) throws -> BootstrapSettings {
            try BootstrapSettings.validate(
                mode: .master,
                options: [
                    "cluster": .string("main"), "node-name": .string("pg1"), "address": .string("198.18.0.1"), "pgdata": .string(directory + "/data"),
                    "replication-password-file": .string(directory + "/password"), "virtual-ip": .string("198.18.0.100/24"),
                    "interface": .string("eth0"), "keepalived-conf": .string(directory + "/keepalived.conf"), "vrrp-unicast": .bool(unicast),
                    "keepalived-pid-file": .string(directory + "/keepalived.pid"),
                ], environment: [:], hostname: "test")
        }
        let template = Template(text: try String(contentsOfFile: Self.root + "/keepalived/keepalived.conf.template", encoding: .utf8), source: "t")
        let rendered = try KeepalivedSettings(
            cluster: try ClusterName("main"), node: try NodeName("pg1"), initialState: "MASTER", interface: "eth0", virtualRouterID: 51, priority: 200,
            virtualIP: try CIDR("198.18.0.100/24"), batonExecutable: try SafePath("/usr/bin/baton"), batonConfig: try SafePath("/etc/baton/baton.yaml"),
            trackFile: try SafePath(directory + "/vrrp-leading")
        ).render(template)
        let conf = directory + "/keepalived.conf"
        try rendered.write(toFile: conf, atomically: true, encoding: .utf8)

        let reloads = Mutex<[String]>([])
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var peers = KeepalivedPeers(logger: logger, reload: { pidFile in
            reloads.withLock { $0.append(pidFile) }
            return 4242
        })
        let three = Dictionary(uniqueKeysWithValues: [try registration("pg1", "198.18.0.1"), try registration("pg2", "198.18.0.2"), try registration("pg3", "198.18.0.3")])

        peers.reconcile(settings: try settings(unicast: false), registrations: three)
        #expect(try String(contentsOfFile: conf, encoding: .utf8) == rendered, "multicast: untouched")
        #expect(reloads.withLock { $0 }.isEmpty)

        let unicast = try settings(unicast: true)
        peers.reconcile(settings: unicast, registrations: three)
        #expect(KeepalivedUnicast.peers(in: try String(contentsOfFile: conf, encoding: .utf8)) == ["198.18.0.2", "198.18.0.3"])
        #expect(reloads.withLock { $0 } == [directory + "/keepalived.pid"])
        peers.reconcile(settings: unicast, registrations: three)
        #expect(reloads.withLock { $0 }.count == 1, "no change, no reload")

        var two = three
        two[try NodeName("pg3")] = nil
        peers.reconcile(settings: unicast, registrations: two)
        #expect(KeepalivedUnicast.peers(in: try String(contentsOfFile: conf, encoding: .utf8)) == ["198.18.0.2"])
        #expect(reloads.withLock { $0 }.count == 2)

        // A peer whose address keepalived cannot use changes nothing.
        var named = two
        let (node, bad) = try registration("pg4", "db4.example")
        named[node] = bad
        let before = try String(contentsOfFile: conf, encoding: .utf8)
        peers.reconcile(settings: unicast, registrations: named)
        #expect(try String(contentsOfFile: conf, encoding: .utf8) == before)
        #expect(reloads.withLock { $0 }.count == 2)
    }

    @Test("only a running keepalived is signalled")
    func signalsOnlyKeepalived() throws {
        let directory = NSTemporaryDirectory() + "baton-pid-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }  // ignored: a temporary directory
        #expect(throws: AgentError.self, "no PID file") { try KeepalivedPeers.signalKeepalived(pidFile: directory + "/none.pid") }
        try "\(getpid())\n".write(toFile: directory + "/k.pid", atomically: true, encoding: .utf8)
        #expect(throws: AgentError.self, "this test process is not keepalived") { try KeepalivedPeers.signalKeepalived(pidFile: directory + "/k.pid") }
        try "garbage\n".write(toFile: directory + "/k.pid", atomically: true, encoding: .utf8)
        #expect(throws: AgentError.self) { try KeepalivedPeers.signalKeepalived(pidFile: directory + "/k.pid") }
    }
}
