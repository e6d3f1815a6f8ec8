import BatonCore
import Foundation
import Testing

@Suite("templates and PostgreSQL files")
struct RenderingTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func template(_ relative: String) throws -> Template {
        let path = Self.root.appendingPathComponent(relative).path
        return Template(text: try String(contentsOfFile: path, encoding: .utf8), source: path)
    }

    func keepalived(state: String = "BACKUP", interface: String = "eth0") throws -> KeepalivedSettings {
        KeepalivedSettings(
            cluster: try ClusterName("main"), node: try NodeName("pg2"), initialState: state, interface: interface, virtualRouterID: 51,
            priority: 190, virtualIP: try CIDR("198.18.0.100/24"), batonExecutable: try SafePath("/usr/local/bin/baton"),
            batonConfig: try SafePath("/etc/baton/baton.yaml"), trackFile: try SafePath(KeepalivedSettings.trackFilePath(stateDirectory: "/var/lib/baton")))
    }

    @Test func keepalivedConfiguration() throws {
        let text = try keepalived().render(try template("keepalived/keepalived.conf.template"))
        #expect(text.contains("    state BACKUP\n"))
        #expect(text.contains("    priority 190\n"))
        #expect(text.contains("        198.18.0.100/24 dev eth0\n"))
        #expect(text.contains(#"script "/usr/local/bin/baton check --beside-track-file --config /etc/baton/baton.yaml""#))
        #expect(text.contains(#"notify "/usr/local/bin/baton notify --config /etc/baton/baton.yaml""#))
        // The tracked file adds its value to the priority (weight 1: a vacant node's -253 takes it to 1),
        // and says FAULT until the monitor writes it.
        #expect(text.contains("    file \"/var/lib/baton/vrrp-priority\"\n    weight 1\n    init_file \(VRRPStanding.faultValue)\n"))
        #expect(!text.contains("{{"))
    }

    @Test("unicast VRRP: the block goes into the vrrp_instance, names the other nodes sorted, and is replaced or removed in place")
    func keepalivedUnicast() throws {
        let rendered = try keepalived().render(try template("keepalived/keepalived.conf.template"))
        let me = try HostAddress("198.18.0.2")
        let peers = [try HostAddress("198.18.0.3"), try HostAddress("198.18.0.1"), me, try HostAddress("198.18.0.3")]
        let unicast = try KeepalivedUnicast.apply(to: rendered, source: me, peers: peers)
        #expect(KeepalivedUnicast.peers(in: unicast) == ["198.18.0.1", "198.18.0.3"], "sorted, deduplicated, without this node")
        #expect(KeepalivedUnicast.peers(in: rendered) == nil)
        let lines = unicast.components(separatedBy: "\n")
        let instance = try #require(lines.firstIndex { $0.hasPrefix("vrrp_instance ") })
        #expect(lines[instance + 2] == "    unicast_src_ip 198.18.0.2")
        #expect(lines[instance + 3 ... instance + 6] == ["    unicast_peer {", "        198.18.0.1", "        198.18.0.3", "    }"])
        #expect(try KeepalivedUnicast.apply(to: unicast, source: me, peers: peers) == unicast, "idempotent")
        let fewer = try KeepalivedUnicast.apply(to: unicast, source: me, peers: [try HostAddress("198.18.0.1")])
        #expect(KeepalivedUnicast.peers(in: fewer) == ["198.18.0.1"])
        #expect(fewer.components(separatedBy: "unicast_peer").count == 2, "replaced, not added twice")
        #expect(try KeepalivedUnicast.apply(to: unicast, source: nil, peers: []) == rendered, "multicast again: the file as rendered")
        #expect(throws: ValidationProblem.self, "keepalived needs IP addresses") {
            try KeepalivedUnicast.apply(to: rendered, source: me, peers: [try HostAddress("db3.example")])
        }
        #expect(throws: ValidationProblem.self, "no instance to put it in") { try KeepalivedUnicast.apply(to: "global_defs {\n}\n", source: me, peers: []) }
        let broken = unicast.replacingOccurrences(of: "    # baton: end of unicast VRRP\n", with: "")
        #expect(throws: ValidationProblem.self, "a block without its end is not guessed at") { try KeepalivedUnicast.apply(to: broken, source: me, peers: []) }
    }

    @Test func keepalivedRefusesBadValues() throws {
        let t = try template("keepalived/keepalived.conf.template")
        #expect(throws: ValidationProblem.self) { try keepalived(interface: "eth0\n}").render(t) }
        #expect(throws: ValidationProblem.self) { try keepalived(state: "FAULT").render(t) }
    }

    @Test func pgbouncerConfiguration() throws {
        let settings = PgBouncerSettings(
            node: try NodeName("pg2"), primaryHost: try HostAddress("198.18.0.1"), primaryPort: try TCPPort(5432), listenAddress: "*",
            listenPort: try TCPPort(6432), socketDirectory: try SafePath("/var/run/postgresql"), authFile: try SafePath("/etc/pgbouncer/userlist.txt"),
            adminUser: "pgbouncer", logFile: try SafePath("/var/log/pgbouncer.log"), pidFile: try SafePath("/run/pgbouncer.pid"))
        let text = try settings.render(try template("pgbouncer/pgbouncer.ini.template"))
        #expect(text.contains("* = host=198.18.0.1 port=5432\n"))
        #expect(text.contains("listen_port = 6432\n"))
        #expect(!text.contains("{{"))
    }

    @Test func templatesNeedEveryPlaceholderAndRefuseLineBreaks() throws {
        let t = Template(text: "a = {{a}}\nb = {{b}}\n", source: "t")
        #expect(throws: ValidationProblem.self) { try t.render(["a": "1"]) }
        #expect(throws: ValidationProblem.self) { try t.render(["a": "1", "b": "2\n[evil]"]) }
        #expect(throws: ValidationProblem.self) { try t.render(["a": "1", "b": "x' y"]) }
        let rendered = try t.render(["a": "1", "b": "2"])
        #expect(rendered == "a = 1\nb = 2\n")
    }

    @Test func managedBlocksReplaceOnlyTheirOwnLines() {
        let original = "# TYPE DATABASE USER ADDRESS METHOD\nlocal all all peer\n"
        let once = PostgresFiles.withManagedBlock(original, lines: ["host replication replicator 10.0.0.0/24 scram-sha-256"])
        #expect(once.hasPrefix("# BEGIN baton"))
        #expect(once.hasSuffix(original))
        let twice = PostgresFiles.withManagedBlock(once, lines: ["host replication replicator 10.0.0.0/24 scram-sha-256"])
        #expect(twice == once, "idempotent")
        let changed = PostgresFiles.withManagedBlock(once, lines: ["x"])
        #expect(changed.contains("\nx\n") && !changed.contains("10.0.0.0/24") && changed.hasSuffix(original))
    }

    @Test func includeIsAddedOnce() {
        let once = PostgresFiles.withInclude("shared_buffers = 128MB\n")
        #expect(PostgresFiles.withInclude(once) == once)
        #expect(once.contains("include_if_exists = 'baton.conf'"))
    }

    @Test func hbaAllowsReplicationOnlyFromTheClusterNetworks() throws {
        let lines = PostgresFiles.hbaLines(allowedNetworks: [try CIDR("198.18.0.0/24")])
        #expect(lines.contains("host    replication   replicator   198.18.0.0/24   scram-sha-256"))
        #expect(!lines.contains { $0.contains("0.0.0.0/0") || $0.contains("trust") })
    }

    @Test func standbySettingsCarryConninfoWithoutPassword() throws {
        let upstream = PostgresFiles.Upstream(
            host: try HostAddress("198.18.0.1"), port: try TCPPort(5432), slot: "baton_pg2", passfile: try SafePath("/var/lib/baton/pgpass"),
            applicationName: try NodeName("pg2"))
        let text = PostgresFiles.settings(port: try TCPPort(5432), listen: "*", socketDirectory: try SafePath("/run/postgresql"), upstream: upstream)
        #expect(text.contains("primary_conninfo = 'host=198.18.0.1 port=5432 user=replicator passfile=/var/lib/baton/pgpass application_name=pg2"))
        #expect(text.contains("primary_slot_name = 'baton_pg2'"))
        #expect(text.contains("wal_log_hints = on"))
        #expect(!text.contains("password="))
    }

    @Test func passfileEscapesSeparators() throws {
        #expect(PostgresFiles.passfile(password: #"a:b\c"#) == #"*:*:*:replicator:a\:b\\c"# + "\n")
        #expect(try PostgresFiles.validatePassword("secret\n", source: "f") == "secret")
        #expect(throws: ValidationProblem.self) { try PostgresFiles.validatePassword("", source: "f") }
        #expect(throws: ValidationProblem.self) { try PostgresFiles.validatePassword("a\nb", source: "f") }
    }
}
