import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

/// `baton bootstrap` against real PostgreSQL 15 servers on loopback and Baton's embedded Consul.
@Suite("bootstrap, live", .serialized, .enabled(if: LiveCluster.available, "PostgreSQL 15 is not installed (apt-get install postgresql-15)"))
struct BootstrapLiveTests {
    @Test("master + two joins: replicas stream through slots, priorities descend, registrations are right, reruns change nothing")
    func masterAndTwoJoins() async throws {
        try await LiveCluster.with { c in
            let ports = try (0..<3).map { _ in try FreePort.pick() }
            let (master, _) = try await c.bootstrap(.master, "pg1", port: ports[0])
            #expect(master.changed && master.keepalivedPriority == KeepalivedNodes.top)
            async let j2 = c.bootstrap(.join([c.consulAddress]), "pg2", port: ports[1])
            async let j3 = c.bootstrap(.join([c.consulAddress]), "pg3", port: ports[2])
            let (join2, join3) = try await (j2, j3)
            #expect(join2.0.changed && join3.0.changed)

            let primary = try await c.connect(port: ports[0])
            defer { primary.close() }
            try await primary.query("CREATE TABLE baton_probe (id int PRIMARY KEY, note text)")
            try await primary.query("INSERT INTO baton_probe VALUES (1, 'written on the primary')")
            for port in ports.dropFirst() {
                let replica = try await c.connect(port: port)
                defer { replica.close() }
                let seen = await eventually(timeout: .seconds(30)) {
                    (try? await replica.scalar("SELECT note FROM baton_probe WHERE id = 1")) == "written on the primary"
                }
                #expect(seen, "the row never reached the replica on port \(port)")
                #expect(try await replica.scalar("SELECT pg_is_in_recovery()") == "t")
            }
            let replication = try await primary.query(
                "SELECT r.application_name, r.state, s.slot_name FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid ORDER BY 1")
            #expect(replication.map { $0.compactMap { $0 } } == [["pg2", "streaming", "baton_pg2"], ["pg3", "streaming", "baton_pg3"]])

            let keys = ClusterKeys(cluster: try ClusterName("live"))
            let nodes = try KeepalivedNodes(bytes: try await c.client.get(keys.keepalivedNodes).value?.value, key: keys.keepalivedNodes)
            let priorities = nodes.nodes.map(\.priority)
            let pg1 = try NodeName("pg1")
            #expect(Set(priorities).count == 3 && nodes.node(pg1)?.priority == 200 && priorities.allSatisfy { $0 <= 200 })
            #expect(priorities.filter { $0 < 200 }.sorted(by: >) == [190, 180])
            for name in ["pg1", "pg2", "pg3"] {
                let key = keys.node(try NodeName(name))
                let registration = try NodeRegistration(bytes: try await c.client.get(key).value?.value, key: key)
                #expect(registration.role == (name == "pg1" ? .primary : .standby))
                #expect(registration.upstream == (name == "pg1" ? nil : pg1))
                #expect(registration.port.value == ports[["pg1", "pg2", "pg3"].firstIndex(of: name)!])
            }
            // The node config bootstrap wrote reads back as the same settings (what monitor and hooks use).
            let written = try String(contentsOfFile: c.directory("pg2") + "/baton.yaml", encoding: .utf8)
            let reread = try BootstrapSettings.validate(
                mode: .join([c.consulAddress]), options: try BootstrapOption.load(yaml: written, source: "baton.yaml"), environment: [:], hostname: "x")
            #expect(reread.node.value == "pg2" && reread.pgPort.value == ports[1] && reread.cluster.value == "live")
            #expect(!written.contains(try String(contentsOfFile: c.passwordFile, encoding: .utf8).trimmingCharacters(in: .newlines)))
            let claim = try ClusterClaim(bytes: try await c.client.get(keys.initialize).value?.value, key: keys.initialize)
            #expect(claim.node.value == "pg1" && claim.systemIdentifier != nil)

            let before = try await c.client.list(keys.prefix).index
            let (again, lines) = try await c.bootstrap(.master, "pg1", port: ports[0])
            #expect(!again.changed, "\(lines)")
            #expect(lines.last?.contains("nothing changed") == true)
            let (joinAgain, _) = try await c.bootstrap(.join([c.consulAddress]), "pg2", port: ports[1])
            #expect(!joinAgain.changed)
            #expect(try await c.client.list(keys.prefix).index == before, "a rerun writes nothing to Consul")
        }
    }

    @Test("the generated pgbouncer.ini proxies a query to the primary; the generated keepalived.conf passes keepalived --config-test")
    func generatedConfigsWork() async throws {
        try await LiveCluster.with { c in
            let ports = try (0..<3).map { _ in try FreePort.pick() }
            let bouncerPort = try FreePort.pick()
            let vip: [String: RawValue] = ["virtual-ip": .string("198.18.0.100/24"), "interface": .string("bt0"), "pgbouncer-port": .int(bouncerPort)]
            _ = try await c.bootstrap(.master, "pg1", port: ports[0], extra: vip)
            _ = try await c.bootstrap(.join([c.consulAddress]), "pg2", port: ports[1], extra: vip)

            // An application role, and pgbouncer (as the postgres OS user) on the replica node's pgbouncer.ini.
            let primary = try await c.connect(port: ports[0])
            try await primary.query("CREATE ROLE app LOGIN PASSWORD 'app-secret'")
            primary.close()
            try #"\"app\" \"app-secret\""#.replacingOccurrences(of: "\\", with: "").write(toFile: c.root + "/userlist.txt", atomically: true, encoding: .utf8)
            let bouncerDirectory = c.directory("pg2") + "/pgbouncer"
            _ = try await runCommand("/bin/chown", ["-R", "postgres:postgres", bouncerDirectory, c.root + "/userlist.txt"])
            let ini = bouncerDirectory + "/pgbouncer.ini"
            #expect(try String(contentsOfFile: ini, encoding: .utf8).contains("* = host=127.0.0.1 port=\(ports[0])"))
            let pgbouncer = try BatonProcess(
                executable: getuid() == 0 ? "/usr/sbin/runuser" : "/usr/sbin/pgbouncer",
                arguments: getuid() == 0 ? ["-u", "postgres", "--", "/usr/sbin/pgbouncer", ini] : [ini])
            c.track(pgbouncer)
            let app = ConnInfo.make([
                ("host", "127.0.0.1"), ("port", String(bouncerPort)), ("user", "app"), ("password", "app-secret"), ("dbname", "postgres"),
                ("connect_timeout", "2"),
            ])
            var answer: String? = nil
            _ = await eventually(timeout: .seconds(15)) {
                guard let conn = try? await PostgresConnection.connect(app) else { return false }
                defer { conn.close() }
                answer = try? await conn.scalar("SELECT current_setting('port') || ' ' || pg_is_in_recovery()::text")
                return answer != nil
            }
            #expect(answer == "\(ports[0]) false", "through pgbouncer: \(answer ?? "no answer"); log: \(pgbouncer.output)")

            // keepalived checks the file against a real interface named bt0, in a namespace of our own.
            guard getuid() == 0 else { return }
            let namespace = "baton-kt-\(UUID().uuidString.prefix(6).lowercased())"
            _ = try await runCommand("/usr/sbin/ip", ["netns", "add", namespace])
            var checks: [(String, Int32, String)] = []
            do {
                _ = try await runCommand("/usr/sbin/ip", ["-n", namespace, "link", "add", "bt0", "type", "veth", "peer", "name", "bt1"])
                for node in ["pg1", "pg2"] {
                    let file = c.directory(node) + "/keepalived.conf"
                    let check = try await runCommand("/usr/sbin/ip", ["netns", "exec", namespace, "/usr/sbin/keepalived", "--config-test", "-f", file])
                    checks.append((file, check.status, check.output))
                }
            } catch {
                _ = try? await runCommand("/usr/sbin/ip", ["netns", "del", namespace])
                throw error
            }
            _ = try? await runCommand("/usr/sbin/ip", ["netns", "del", namespace])
            #expect(checks.count == 2)
            for (file, status, output) in checks { #expect(status == 0, "keepalived --config-test \(file): \(output)") }
            #expect(try String(contentsOfFile: c.directory("pg1") + "/keepalived.conf", encoding: .utf8).contains("state MASTER"))
            #expect(try String(contentsOfFile: c.directory("pg2") + "/keepalived.conf", encoding: .utf8).contains("priority 190"))
        }
    }

    @Test("eight concurrent priority allocations get eight distinct priorities")
    func concurrentAllocations() async throws {
        try await LiveCluster.with { c in
            let key = ClusterKeys(cluster: try ClusterName("race")).keepalivedNodes
            let allocator = PriorityAllocator(client: c.client, key: key)
            let priorities = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<8 { group.addTask { try await allocator.allocate(try NodeName("n\(i)")).0 } }
                var all: [Int] = []
                for try await p in group { all.append(p) }
                return all
            }
            #expect(Set(priorities).count == 8, "\(priorities)")
            let stored = try KeepalivedNodes(bytes: try await c.client.get(key).value?.value, key: key)
            #expect(stored.nodes.count == 8 && Set(stored.nodes.map(\.priority)) == Set(priorities))
        }
    }

    @Test("two concurrent --master runs: exactly one wins, the other changes nothing and names the winner")
    func concurrentMasters() async throws {
        try await LiveCluster.with { c in
            let ports = try (0..<2).map { _ in try FreePort.pick() }
            async let a: Result<BootstrapOutcome, any Error> = { do { return .success(try await c.bootstrap(.master, "pga", port: ports[0]).0) } catch { return .failure(error) } }()
            async let b: Result<BootstrapOutcome, any Error> = { do { return .success(try await c.bootstrap(.master, "pgb", port: ports[1]).0) } catch { return .failure(error) } }()
            let results = await [("pga", a), ("pgb", b)]
            let winners = results.filter { if case .success = $0.1 { return true } else { return false } }
            #expect(winners.count == 1)
            guard let winner = winners.first?.0, let loser = results.first(where: { $0.0 != winner }) else { return }
            if case .failure(let error) = loser.1 {
                #expect("\(error)".contains("created by node \(winner)"), "\(error)")
            }
            let loserData = c.directory(loser.0) + "/data"
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: loserData)) ?? []).isEmpty, "the loser initialised nothing")
            let keys = ClusterKeys(cluster: try ClusterName("live"))
            #expect(try await c.client.get(keys.node(try NodeName(loser.0))).value == nil)
        }
    }

    @Test("a data directory of another cluster is refused and left byte for byte; --force-clone moves it aside and clones")
    func foreignDataDirectory() async throws {
        try await LiveCluster.with { c in
            let ports = try (0..<2).map { _ in try FreePort.pick() }
            _ = try await c.bootstrap(.master, "pg1", port: ports[0])
            let foreign = c.directory("pg2") + "/data"
            try AtomicFile.ensureDirectory(c.directory("pg2"), mode: 0o755, owner: "postgres")
            try AtomicFile.ensureDirectory(foreign, mode: 0o700, owner: "postgres")
            try await PostgresControl(binDirectory: LiveCluster.bindir, dataDirectory: foreign, osUser: "postgres").initdb()
            let before = fingerprint(foreign)
            let keys = ClusterKeys(cluster: try ClusterName("live"))
            let indexBefore = try await c.client.list(keys.prefix).index
            for _ in 0..<2 {
                await #expect(throws: BootstrapError.self) { _ = try await c.bootstrap(.join([c.consulAddress]), "pg2", port: ports[1]) }
            }
            #expect(fingerprint(foreign) == before, "the refused directory was changed")
            let nodes = try KeepalivedNodes(bytes: try await c.client.get(keys.keepalivedNodes).value?.value, key: keys.keepalivedNodes)
            #expect(nodes.node(try NodeName("pg2")) == nil)
            #expect(try await c.client.list(keys.prefix).index == indexBefore, "a refused join writes nothing")

            let (outcome, lines) = try await c.bootstrap(.join([c.consulAddress]), "pg2", port: ports[1], extra: ["force-clone": .bool(true)])
            #expect(outcome.changed)
            let moved = try FileManager.default.contentsOfDirectory(atPath: c.directory("pg2")).filter { $0.hasPrefix("data.baton-moved-") }
            #expect(moved.count == 1, "\(lines)")
            if let m = moved.first { #expect(fingerprint(c.directory("pg2") + "/" + m) == before, "moved aside intact") }
        }
    }

    @Test("a hostile node registration in Consul is an error and changes nothing")
    func hostileRegistration() async throws {
        try await LiveCluster.with { c in
            let ports = try (0..<2).map { _ in try FreePort.pick() }
            _ = try await c.bootstrap(.master, "pg1", port: ports[0])
            let keys = ClusterKeys(cluster: try ClusterName("live"))
            try await c.client.put(
                keys.nodesPrefix + "evil",
                #"{"name":"evil\nhost all all 0.0.0.0/0 trust","address":"127.0.0.1","port":5432,"role":"standby","priority":1}"#)
            let indexBefore = try await c.client.list(keys.prefix).index
            do {
                _ = try await c.bootstrap(.join([c.consulAddress]), "pg2", port: ports[1])
                Issue.record("the join must refuse a hostile registration")
            } catch let error as BootstrapError {
                #expect(error.description.contains("nodes/evil"), "\(error)")
                #expect(!error.description.contains("\n"), "the hostile newline is escaped, not echoed: \(error)")
            }
            #expect(!FileManager.default.fileExists(atPath: c.directory("pg2") + "/data"))
            #expect(try await c.client.list(keys.prefix).index == indexBefore)
        }
    }
}

@Suite("bootstrap input")
struct BootstrapInputTests {
    let environment: [String: String] = [:]
    func options(_ extra: [String: RawValue]) -> [String: RawValue] {
        var o: [String: RawValue] = ["address": .string("127.0.0.1"), "replication-password-file": .string("/etc/hostname")]
        for (k, v) in extra { o[k] = v }
        return o
    }

    @Test func aConfigFileIsReadAndFlagsOverrideIt() throws {
        let file = try BootstrapOption.load(yaml: "cluster: prod\npg-port: 5433\nallowed-network: [198.18.0.0/24]\nforce-clone: true\n", source: "f.yaml")
        #expect(file["cluster"] == .string("prod") && file["pg-port"] == .int(5433) && file["force-clone"] == .bool(true))
        var merged = file
        merged.merge(["pg-port": .int(6000)]) { _, flag in flag }
        let settings = try BootstrapSettings.validate(mode: .master, options: options(merged), environment: environment, hostname: "h")
        #expect(settings.pgPort.value == 6000 && settings.cluster.value == "prod" && settings.allowedNetworks.map(\.text) == ["198.18.0.0/24"])
    }

    @Test(arguments: ["cluster: [unclosed", "- a list\n- not a mapping", "pg_port: 5433", "bogus: 1", "pg-port: five", "force-clone: maybe"])
    func malformedOrUnknownConfigIsRefused(yaml: String) {
        #expect(throws: ValidationProblems.self) { try BootstrapOption.load(yaml: yaml, source: "f.yaml") }
    }

    @Test func unknownKeysAreNamedWithAHint() {
        do {
            _ = try BootstrapOption.load(yaml: "pg_port: 1\n", source: "f.yaml")
        } catch {
            #expect(error.description.contains("did you mean pg-port"))
        }
    }

    @Test func everyProblemIsReportedAtOnce() {
        do {
            _ = try BootstrapSettings.validate(
                mode: .master,
                options: [
                    "node-name": .string("Bad Name"), "pg-port": .int(70000), "virtual-ip": .string("10.0.0.1"),
                    "replication-password-file": .string("/nonexistent/pw"), "allowed-network": .list(["nope"]),
                ], environment: environment, hostname: "h")
            Issue.record("expected problems")
        } catch {
            let text = error.description
            for fragment in ["--node-name", "--pg-port", "--virtual-ip", "--replication-password-file", "--allowed-network", "--address"] {
                #expect(text.contains(fragment), "missing \(fragment) in: \(text)")
            }
        }
    }

    @Test("--vrrp-unicast needs the VIP and an IP --address; the node's file keeps it and keepalived's PID file")
    func unicastVRRPIsValidated() throws {
        let env = [BootstrapSettings.passwordVariable: "x"]
        for (options, fragment) in [
            (["address": RawValue.string("10.0.0.1"), "vrrp-unicast": .bool(true)], "--vrrp-unicast needs --virtual-ip"),
            (["address": .string("db1.example"), "allowed-network": .list(["10.0.0.0/24"]), "virtual-ip": .string("10.0.0.100/24"),
              "interface": .string("eth0"), "vrrp-unicast": .bool(true)], "IP address"),
        ] {
            #expect { try BootstrapSettings.validate(mode: .master, options: options, environment: env, hostname: "h") } throws: {
                "\($0)".contains(fragment)
            }
        }
        let s = try BootstrapSettings.validate(
            mode: .master,
            options: [
                "address": .string("10.0.0.1"), "virtual-ip": .string("10.0.0.100/24"), "interface": .string("eth0"), "vrrp-unicast": .bool(true),
                "keepalived-pid-file": .string("/run/keepalived/k.pid"),
            ], environment: env, hostname: "h")
        #expect(s.vrrpUnicast && s.keepalivedPidFile.value == "/run/keepalived/k.pid")
        let yaml = s.nodeConfigYAML()
        #expect(yaml.contains("vrrp-unicast: true") && yaml.contains("keepalived-pid-file: '/run/keepalived/k.pid'"))
        let reread = try BootstrapSettings.validate(
            mode: .master, options: try BootstrapOption.load(yaml: yaml, source: "node file"), environment: env, hostname: "h")
        #expect(reread.vrrpUnicast && reread.keepalivedPidFile == s.keepalivedPidFile, "the node's file reads back the same")
    }

    @Test("log-format: text (default) or json, kept in the node's file; anything else is refused")
    func logFormat() throws {
        let env = [BootstrapSettings.passwordVariable: "x"]
        let plain = try BootstrapSettings.validate(mode: .master, options: ["address": .string("10.0.0.1")], environment: env, hostname: "h")
        #expect(plain.logFormat == .text && !plain.nodeConfigYAML().contains("log-format"))
        let json = try BootstrapSettings.validate(mode: .master, options: ["address": .string("10.0.0.1"), "log-format": .string("json")], environment: env, hostname: "h")
        let reread = try BootstrapSettings.validate(
            mode: .master, options: try BootstrapOption.load(yaml: json.nodeConfigYAML(), source: "node file"), environment: env, hostname: "h")
        #expect(json.logFormat == .json && reread.logFormat == .json)
        #expect {
            try BootstrapSettings.validate(mode: .master, options: ["address": .string("10.0.0.1"), "log-format": .string("xml")], environment: env, hostname: "h")
        } throws: { "\($0)".contains("--log-format must be one of text, json, not \"xml\"") }
    }

    @Test("--backup pgbackrest needs a repository a shell command can carry; the node file keeps it; anything else is refused")
    func backupOptions() throws {
        let env = [BootstrapSettings.passwordVariable: "x"]
        func validate(_ extra: [String: RawValue]) throws -> BootstrapSettings {
            var options: [String: RawValue] = ["address": .string("10.0.0.1"), "state-dir": .string("/var/lib/baton")]
            for (k, v) in extra { options[k] = v }
            return try BootstrapSettings.validate(mode: .master, options: options, environment: env, hostname: "h")
        }
        let wired = try validate([
            "backup": .string("pgbackrest"), "backup-repo": .string("/srv/pgbackrest"), "backup-retention-full": .int(3), "backup-process-max": .int(2),
        ])
        #expect(wired.backup?.repository.value == "/srv/pgbackrest" && wired.backup?.retentionFull == 3 && wired.backup?.stanza == "main")
        #expect(wired.backup?.processMax == 2 && wired.nodeConfigYAML().contains("backup-process-max: 2\n"), "the daemons' config carries it")
        let reread = try BootstrapSettings.validate(
            mode: .master, options: try BootstrapOption.load(yaml: wired.nodeConfigYAML(), source: "node file"), environment: env, hostname: "h")
        #expect(reread.backup == wired.backup && reread.cloneFrom == .auto)
        let fromPrimary = try validate(["backup": .string("pgbackrest"), "backup-repo": .string("/srv/pgbackrest"), "clone-from": .string("primary")])
        #expect(
            try BootstrapSettings.validate(
                mode: .master, options: try BootstrapOption.load(yaml: fromPrimary.nodeConfigYAML(), source: "node file"), environment: env, hostname: "h"
            ).cloneFrom == .primary)
        #expect(try validate([:]).backup == nil && !(try validate([:]).nodeConfigYAML().contains("backup")))
        for (options, message) in [
            (["backup": RawValue.string("pgbackrest")], "--backup pgbackrest needs --backup-repo"),
            (["backup-repo": .string("/srv/x")], "--backup-repo needs --backup pgbackrest"),
            (["backup": .string("barman"), "backup-repo": .string("/srv/x")], "--backup must be pgbackrest or none"),
            (["backup": .string("pgbackrest"), "backup-repo": .string("/srv/my backups")], "archive_command"),
            (["backup": .string("pgbackrest"), "backup-repo": .string("relative")], "absolute path"),
            (["clone-from": .string("backup")], "--clone-from backup needs --backup pgbackrest"),
            (["backup": .string("pgbackrest"), "backup-repo": .string("/srv/x"), "clone-from": .string("nfs")], "--clone-from must be one of auto, backup, primary"),
            (["backup": .string("pgbackrest"), "backup-repo": .string("/srv/x"), "backup-process-max": .int(0)], "--backup-process-max 0 must be from 1 to 32"),
        ] {
            #expect { try validate(options) } throws: { "\($0)".contains(message) }
        }
    }

    @Test("--backup-tls-*: the three files together, readable, with backups only; the node's config and its registration carry them")
    func backupTLSOptions() throws {
        let env = [BootstrapSettings.passwordVariable: "x"]
        let directory = FileManager.default.temporaryDirectory.path + "/baton-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }  // ignored: a temporary directory
        for name in ["node.crt", "node.key", "ca.crt"] { try Data("x".utf8).write(to: URL(fileURLWithPath: directory + "/" + name)) }
        func validate(_ extra: [String: RawValue]) throws -> BootstrapSettings {
            var options: [String: RawValue] = [
                "address": .string("10.0.0.1"), "state-dir": .string("/var/lib/baton"), "backup": .string("pgbackrest"), "backup-repo": .string("/srv/pgbackrest"),
            ]
            for (k, v) in extra { options[k] = v }
            return try BootstrapSettings.validate(mode: .master, options: options, environment: env, hostname: "h")
        }
        let files: [String: RawValue] = [
            "backup-tls-certificate": .string(directory + "/node.crt"), "backup-tls-key": .string(directory + "/node.key"), "backup-tls-ca": .string(directory + "/ca.crt"),
        ]
        let wired = try validate(files.merging(["backup-tls-port": .int(8433)]) { a, _ in a })
        let tls = try #require(wired.backup?.tls)
        #expect(tls.certificate.value == directory + "/node.crt" && tls.ca.value == directory + "/ca.crt" && tls.port.value == 8433)
        let reread = try BootstrapSettings.validate(
            mode: .master, options: try BootstrapOption.load(yaml: wired.nodeConfigYAML(), source: "node file"), environment: env, hostname: "h")
        #expect(reread.backup == wired.backup, "the daemons' config carries the TLS files and port")
        #expect(try validate(files).backup?.tls?.port.value == 8432, "pgBackRest's own default port")
        // The registration publishes the server: its port, pgBackRest's config and this node's PostgreSQL.
        let registration = wired.registration(role: .primary, upstream: nil)
        #expect(
            registration.backupServer
                == BackupServerAddress(
                    port: try TCPPort(8433), config: try SafePath("/var/lib/baton/pgbackrest.conf"), pgdata: wired.pgdata, socketDirectory: wired.pgSocketDirectory))
        #expect(try NodeRegistration(bytes: registration.json.serializedBytes(), key: "baton/main/nodes/h") == registration)
        #expect(try validate([:]).registration(role: .primary, upstream: nil).backupServer == nil)
        let text = try #require(wired.backup).configuration(
            pgdata: wired.pgdata, port: wired.pgPort, socketDirectory: wired.pgSocketDirectory, osUser: "postgres", address: wired.address)
        for line in ["[global:server]", "tls-server-address=10.0.0.1", "tls-server-port=8433", "tls-server-cert-file=\(directory)/node.crt", "tls-server-auth=main=main"] {
            #expect(text.contains(line + "\n"), "\(line) in\n\(text)")
        }
        for (options, message) in [
            (["backup-tls-certificate": files["backup-tls-certificate"]!], "go together"),
            (files.filter { $0.key != "backup-tls-ca" }, "go together"),
            (files.merging(["backup-tls-key": .string(directory + "/missing.key")]) { _, b in b }, "--backup-tls-key \(directory)/missing.key does not exist"),
            (files.merging(["backup-tls-port": .int(70000)]) { _, b in b }, "--backup-tls-port"),
            (["backup-tls-port": RawValue.int(8433)], "go together"),
        ] {
            #expect { try validate(options) } throws: { "\($0)".contains(message) }
        }
        #expect {
            try BootstrapSettings.validate(mode: .master, options: ["address": .string("10.0.0.1")].merging(files) { a, _ in a }, environment: env, hostname: "h")
        } throws: {
            "\($0)".contains("--backup-tls-ca needs --backup pgbackrest")
        }
    }

    @Test func thePasswordComesFromAFileOrTheEnvironmentOnly() throws {
        #expect(throws: ValidationProblems.self) {
            try BootstrapSettings.validate(mode: .master, options: ["address": .string("127.0.0.1")], environment: [:], hostname: "h")
        }
        let s = try BootstrapSettings.validate(
            mode: .master, options: ["address": .string("127.0.0.1")], environment: [BootstrapSettings.passwordVariable: "x"], hostname: "h")
        #expect(s.replicationPasswordSource == .environment(BootstrapSettings.passwordVariable))
    }

    @Test func theCommandLineRefusesBadFlagsAndWritesNothing() async throws {
        let directory = "/tmp/baton-cli-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try await runCommand(
            BatonProcess.executable,
            [
                "bootstrap", "--master", "--address", "127.0.0.1", "--virtual-ip", "300.1.1.1/24", "--interface", "eth0",
                "--replication-password-file", directory + "/missing", "--pgdata", directory + "/data", "--consul", "127.0.0.1:1",
            ])
        #expect(result.status == 2, "\(result.output)")
        #expect(result.output.contains("nothing was changed") && result.output.contains("--virtual-ip"))
        #expect(!FileManager.default.fileExists(atPath: directory))
        let both = try await runCommand(BatonProcess.executable, ["bootstrap", "--master", "--join", "127.0.0.1:8500"])
        #expect(both.status != 0 && both.output.contains("exactly one of --master or --join"))
    }
}

@Suite("bootstrap manages a real Consul agent when asked")
struct ConsulAgentTests {
    @Test("--consul-create writes the agent config and a 0600 gossip key, then runs the start command; --consul-join needs the key")
    func consulAgent() async throws {
        try await LiveCluster.with { c in
            let configDir = c.root + "/consul.d"
            let marker = c.root + "/started"
            let agent: [String: RawValue] = [
                "consul-create": .bool(true), "consul-config-dir": .string(configDir), "consul-data-dir": .string(c.root + "/consul-data"),
                "consul-bootstrap-expect": .int(3), "consul-start-command": .list(["/usr/bin/touch", marker]),
            ]
            let port = try FreePort.pick()
            _ = try await c.bootstrap(.master, "pg1", port: port, extra: agent)
            #expect(FileManager.default.fileExists(atPath: marker), "the start command ran")
            let config = try JSONValue.parse(try String(contentsOfFile: configDir + "/baton.json", encoding: .utf8))
            #expect(config.member("server") == .bool(true) && config.member("bootstrap_expect") == .number("3"))
            #expect(config.member("bind_addr") == .string("127.0.0.1") && config.member("data_dir") == .string(c.root + "/consul-data"))
            let key = try String(contentsOfFile: configDir + "/gossip.key", encoding: .utf8).trimmingCharacters(in: .newlines)
            #expect(Base64.decode(key)?.count == 32 && config.member("encrypt") == .string(key))
            let mode = try FileManager.default.attributesOfItem(atPath: configDir + "/gossip.key")[.posixPermissions] as? Int
            #expect(mode == 0o600)

            // A joiner without the key is refused before anything else happens.
            let joinAgent: [String: RawValue] = [
                "consul-join": .list(["198.18.0.1"]), "consul-config-dir": .string(c.root + "/consul-other.d"),
                "consul-start-command": .list(["/usr/bin/touch", marker]),
            ]
            do {
                _ = try await c.bootstrap(.join([c.consulAddress]), "pg2", port: try FreePort.pick(), extra: joinAgent)
                Issue.record("a joiner without the gossip key must be refused")
            } catch {
                #expect("\(error)".contains("gossip.key"))
            }
            #expect(!FileManager.default.fileExists(atPath: c.directory("pg2") + "/data"))
        }
    }
}
