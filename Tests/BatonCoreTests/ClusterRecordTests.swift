import BatonCore
import ConsulAPI
import Testing

@Suite("keepalived priorities")
struct KeepalivedNodesTests {
    let key = "baton/main/keepalived/nodes"
    func name(_ s: String) -> NodeName { try! NodeName(s) }

    @Test func firstNodeTakesTheTopPriority() throws {
        let (priority, updated) = try KeepalivedNodes().allocating(name("pg1"))
        #expect(priority == KeepalivedNodes.top)
        #expect(updated?.nodes == [KeepalivedNode(name: name("pg1"), priority: 200)])
    }

    @Test func laterNodesTakeLowerPrioritiesThanEveryExistingOne() throws {
        var nodes = KeepalivedNodes()
        var seen: [Int] = []
        for i in 1...20 {
            let (priority, updated) = try nodes.allocating(name("pg\(i)"))
            #expect(seen.allSatisfy { priority < $0 })
            seen.append(priority)
            nodes = try #require(updated)
        }
        #expect(seen == Array(stride(from: 200, through: 10, by: -10)))
        #expect(throws: ValidationProblem.self) { try nodes.allocating(name("pg21")) }
    }

    @Test func aNodeThatHasAPriorityKeepsIt() throws {
        let nodes = KeepalivedNodes(nodes: [KeepalivedNode(name: name("a"), priority: 200), KeepalivedNode(name: name("b"), priority: 150)])
        let (priority, updated) = try nodes.allocating(name("a"))
        #expect(priority == 200 && updated == nil)
        #expect(try nodes.allocating(name("c")).priority == 140, "below the lowest, not below the last")
    }

    @Test func roundTripsThroughConsul() throws {
        let nodes = KeepalivedNodes(nodes: [KeepalivedNode(name: name("a"), priority: 200, state: "MASTER", stateTime: "2026-11-22T00:00:00Z")])
        #expect(try KeepalivedNodes(bytes: nodes.json.serializedBytes(), key: key) == nodes)
        #expect(try KeepalivedNodes(bytes: nil, key: key) == KeepalivedNodes())
        #expect(try KeepalivedNodes(bytes: [], key: key) == KeepalivedNodes())
    }

    @Test(arguments: [
        #"not json"#, #"[]"#, #"{"nodes":{}}"#, #"{"nodes":[{"name":"a\nvrrp_instance x {","priority":100}]}"#,
        #"{"nodes":[{"name":"a","priority":255}]}"#, #"{"nodes":[{"name":"a","priority":0}]}"#,
        #"{"nodes":[{"name":"a","priority":100},{"name":"a","priority":90}]}"#,
        #"{"nodes":[{"name":"a","priority":100},{"name":"b","priority":100}]}"#, #"{"nodes":[{"name":"a","priority":"100"}]}"#,
        #"{"nodes":[{"name":"a","priority":100,"state":"EVIL"}]}"#, #"{"nodes":[{"priority":100}]}"#,
    ])
    func rejectsMalformedValues(text: String) {
        #expect(throws: ValidationProblem.self) { try KeepalivedNodes(bytes: Array(text.utf8), key: key) }
    }
}

@Suite("node registrations and the cluster claim")
struct RegistrationTests {
    let key = "baton/main/nodes/pg2"

    @Test func roundTrips() throws {
        let r = NodeRegistration(
            name: try NodeName("pg2"), address: try HostAddress("198.18.0.2"), port: try TCPPort(5432), role: .standby,
            upstream: try NodeName("pg1"), priority: 100, location: "dc-a")
        let back = try NodeRegistration(bytes: r.json.serializedBytes(), key: key)
        #expect(back == r)
        #expect(r.json.member("conninfo") == .string("host=198.18.0.2 port=5432 user=replicator dbname=postgres connect_timeout=3"))
    }

    @Test(arguments: [
        #"{"name":"pg2\nhost all all 0.0.0.0/0 trust","address":"198.18.0.2","port":5432,"role":"standby","priority":100}"#,
        #"{"name":"pg3","address":"198.18.0.2","port":5432,"role":"standby","priority":100}"#,
        #"{"name":"pg2","address":"198.18.0.2; rm -rf /","port":5432,"role":"standby","priority":100}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":70000,"role":"standby","priority":100}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"leader","priority":100}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"upstream":"p'1"}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"location":"a b"}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby"}"#, "", "[1]",
        // A pgBackRest TLS server a backup from a standby would be pointed at: every field checked.
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"backup_server":"8432"}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"backup_server":{"port":0,"config":"/etc/pgbackrest.conf","pgdata":"/var/lib/pg","socket_dir":"/run/postgresql"}}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"backup_server":{"port":8432,"config":"relative.conf","pgdata":"/var/lib/pg","socket_dir":"/run/postgresql"}}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"backup_server":{"port":8432,"config":"/etc/pgbackrest.conf","pgdata":"/var/lib/pg\nx","socket_dir":"/run/postgresql"}}"#,
        #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"backup_server":{"port":8432,"config":"/etc/pgbackrest.conf","pgdata":"/var/lib/pg"}}"#,
    ])
    func rejectsHostileOrMalformedRegistrations(text: String) {
        #expect(throws: ValidationProblem.self) { try NodeRegistration(bytes: Array(text.utf8), key: key) }
    }

    @Test func aBackupServerRoundTrips() throws {
        let text = #"{"name":"pg2","address":"198.18.0.2","port":5432,"role":"standby","priority":100,"backup_server":{"port":8432,"config":"/etc/pgbackrest.conf","pgdata":"/var/lib/pg","socket_dir":"/run/postgresql"}}"#
        let r = try NodeRegistration(bytes: Array(text.utf8), key: key)
        #expect(r.backupServer?.port.value == 8432 && r.backupServer?.pgdata.value == "/var/lib/pg")
        #expect(try NodeRegistration(bytes: r.json.serializedBytes(), key: key) == r)
    }

    @Test func claims() throws {
        let claim = ClusterClaim(node: try NodeName("pg1"), systemIdentifier: "7301234567890123456")
        #expect(try ClusterClaim(bytes: claim.json.serializedBytes(), key: "k") == claim)
        let pending = ClusterClaim(node: try NodeName("pg1"), systemIdentifier: nil)
        #expect(try ClusterClaim(bytes: pending.json.serializedBytes(), key: "k") == pending)
        #expect(throws: ValidationProblem.self) { try ClusterClaim(bytes: Array(#"{"node":"pg1","system_identifier":"12a"}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try ClusterClaim(bytes: Array(#"{"node":"PG 1"}"#.utf8), key: "k") }
    }
}

@Suite("validated values")
struct ValidationTests {
    @Test(arguments: ["pg1", "node-2", "a_b", "0x"])
    func goodNames(_ text: String) throws { _ = try NodeName(text) }

    @Test(arguments: ["", "PG1", "-a", "a b", "a\nb", "a'b", "é", String(repeating: "a", count: 51), "a/b", "a.b"])
    func badNames(_ text: String) { #expect(throws: ValidationProblem.self) { try NodeName(text) } }

    @Test func slotNames() throws { #expect(try NodeName("pg-2").slotName == "baton_pg_2") }

    @Test(arguments: ["127.0.0.1", "198.18.0.10", "::1", "fe80::1", "2001:db8::1:2", "db1.example.com", "localhost", "::ffff:10.0.0.1"])
    func goodAddresses(_ text: String) throws { _ = try HostAddress(text) }

    @Test(arguments: ["", "1.2.3", "256.1.1.1", "01.2.3.4", "a b", "host\n", "-bad.example", "1.2.3.4; x", "::1::2", "999"])
    func badAddresses(_ text: String) { #expect(throws: ValidationProblem.self) { try HostAddress(text) } }

    @Test func cidrs() throws {
        let net = try CIDR("198.18.0.0/24")
        #expect(net.contains(IPAddress.parse("198.18.0.77")!))
        #expect(!net.contains(IPAddress.parse("198.18.1.1")!))
        #expect(try CIDR("198.18.0.100/24").host == "198.18.0.100")
        #expect(try CIDR("2001:db8::/32").contains(IPAddress.parse("2001:db8::5")!))
        for bad in ["198.18.0.0", "198.18.0.0/33", "x/24", "198.18.0.0/-1", "198.18.0.0/24/1", "::/129", "198.18.0.0/2a"] {
            #expect(throws: ValidationProblem.self) { try CIDR(bad) }
        }
    }

    @Test func paths() throws {
        _ = try SafePath("/var/lib/postgresql/15/main")
        for bad in ["relative/path", "/a/../b", "/a\nb", "/a'b", "/a\"b", "/a\\b", " /a"] {
            #expect(throws: ValidationProblem.self) { try SafePath(bad) }
        }
    }

    @Test func ports() throws {
        #expect(try TCPPort(parsing: "5432").value == 5432)
        for bad in ["0", "65536", "x", "-1"] { #expect(throws: ValidationProblem.self) { try TCPPort(parsing: bad) } }
    }

    @Test func quotingEscapesControlCharacters() {
        #expect(Quote.show("a\nb\"c\u{1}") == #""a\nb\"c\x01""#)
    }
}
