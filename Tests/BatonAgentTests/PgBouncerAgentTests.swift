@testable import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import ConsulAPI
import Foundation
import Logging
import Testing

/// The agent against the embedded Consul server, without a pgbouncer: what reaches pgbouncer.ini.
@Suite("pgbouncer agent and bad data in Consul")
struct PgBouncerAgentTests {
    func agent(_ f: Fixture) throws -> (PgBouncerAgentLoop, String) {
        let ini = f.directory + "/pgbouncer.ini"
        try "[databases]\n* = host=198.18.0.1 port=5432\n\n[pgbouncer]\nlisten_port = 6432\n".write(toFile: ini, atomically: true, encoding: .utf8)
        try "secret\n".write(toFile: f.directory + "/password", atomically: true, encoding: .utf8)
        let settings = try BootstrapSettings.validate(
            mode: .master,
            options: [
                "cluster": .string("main"), "node-name": .string("pg1"), "address": .string("198.18.0.1"), "consul": .string(f.address),
                "pgdata": .string(f.directory + "/data"), "replication-password-file": .string(f.directory + "/password"),
                "pgbouncer-ini": .string(ini), "pg-socket-dir": .string(f.directory), "pgbouncer-port": .int(1),
                "state-dir": .string(f.directory + "/state"),
            ], environment: [:], hostname: "test")
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return (PgBouncerAgentLoop(settings: settings, client: f.client, logger: logger, pauseBound: .milliseconds(200)), ini)
    }

    func lead(_ f: Fixture, _ value: String) async throws {
        let session = try await f.client.createSession(SessionRequest(name: "t", ttl: .seconds(30), lockDelay: .zero, behavior: .release, nodeChecks: []))
        if let old = try await f.client.get(f.keys.leader).value?.session { try await f.client.destroySession(old) }
        #expect(try await f.client.put(f.keys.leader, value, mode: .acquire(session: session)))
    }

    @Test("an unknown leader, a malformed leader or a registration with a smuggled newline never reaches pgbouncer.ini")
    func badValuesChangeNothing() async throws {
        try await withFixture { f in
            var (agent, ini) = try agent(f)
            let original = try String(contentsOfFile: ini, encoding: .utf8)
            try await lead(f, "pg9")
            await agent.iterate()
            #expect(try String(contentsOfFile: ini, encoding: .utf8) == original, "an unknown node")
            try await lead(f, "not a node\nname")
            await agent.iterate()
            #expect(try String(contentsOfFile: ini, encoding: .utf8) == original, "a malformed leader")
            let smuggled = #"{"name":"pg2","address":"198.18.0.2\nlisten_port=1","port":5432,"role":"primary","priority":100,"location":"default"}"#
            try await f.client.put(f.keys.node(try NodeName("pg2")), Array(smuggled.utf8))
            try await lead(f, "pg2")
            await agent.iterate()
            #expect(try String(contentsOfFile: ini, encoding: .utf8) == original, "a host with a newline")
            let status = try #require(BouncerStatus(bytes: try await f.client.get(f.keys.pgbouncerAgent(try NodeName("pg1"))).value?.value))
            #expect(status.problem?.contains("pg2") == true, "the agent reports why it left pgbouncer alone: \(status)")

            // A valid primary registration: the target changes (pgbouncer itself is absent here).
            let valid = NodeRegistration(
                name: try NodeName("pg2"), address: try HostAddress("198.18.0.2"), port: try TCPPort(5433), role: .primary, upstream: nil,
                priority: 100, location: "default")
            try await f.client.put(f.keys.node(try NodeName("pg2")), valid.json.serializedBytes())
            await agent.iterate()
            let rewritten = try String(contentsOfFile: ini, encoding: .utf8)
            #expect(rewritten == original.replacingOccurrences(of: "host=198.18.0.1 port=5432", with: "host=198.18.0.2 port=5433"))
        }
    }
}
