import BatonConsul
import ConsulAPI
import BatonTestSupport
import Foundation
import Testing

/// consul-api.md §7, cases 42–46: agent services and checks, health, catalog, status.
@Suite("Agent, health and catalog conformance")
struct AgentConformanceTests {
    @Test("42: Patroni's service registration, listed and deregistered by an escaped ID")
    func patroniService() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let body = #"{"name":"batman","enabletagoverride":true,"id":"batman/pg0","address":"127.0.0.1","port":5432,"tags":["primary","master"],"checks":[{"http":"http://127.0.0.1:9/primary","interval":"5s","DeregisterCriticalServiceAfter":"150.0s"}]}"#
            #expect(try await t.http("PUT", "/v1/agent/service/register", body: body).status == 200)
            let services = try t.json(try await t.http("GET", "/v1/agent/services"))
            let service = try #require(services.member("batman/pg0"))
            #expect(service.member("Tags") == .array([.string("primary"), .string("master")]))
            #expect(service.member("EnableTagOverride") == .bool(true))
            let checks = try t.json(try await t.http("GET", "/v1/agent/checks"))
            #expect(checks.member("service:batman/pg0") != nil)
            #expect(try await t.http("PUT", "/v1/agent/service/deregister/batman%2Fpg0").status == 200)
            let again = try await t.http("PUT", "/v1/agent/service/deregister/batman%2Fpg0")
            #expect(again.status == 404 && again.text.contains(#"Unknown service ID "batman/pg0""#))
        }
    }

    @Test("43: a TTL check starts critical, passes when told, and expires back to critical")
    func ttlHealthFlow() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let name = "foo-\(UUID().uuidString.prefix(6))"
            let id = "\(name):1"
            try await t.client.registerService(ServiceRegistration(id: id, name: name, checks: [CheckDefinition(name: "ttl", kind: .ttl(.seconds(1)))]))
            #expect(try await t.client.healthService(name, passing: true).value.isEmpty)
            try await t.client.updateTTL("service:\(id)", .passing, note: "ok")
            let passing = try await t.client.healthService(name, passing: true).value
            #expect(passing.count == 1)
            #expect(passing.first?.checks["service:\(id)"] == "passing")
            #expect(passing.first?.checks["serfHealth"] == "passing")
            let expired = try await eventually(timeout: .seconds(5)) {
                try await t.client.healthService(name, passing: true).value.isEmpty
            }
            #expect(expired)
            let checks = try t.json(try await t.http("GET", "/v1/health/checks/\(name)"))
            #expect(checks.arrayValue?.first?.member("Status") == .string("critical"))
            #expect(checks.arrayValue?.first?.member("Output") == .string("TTL expired (last output before timeout follows): ok"))

            let two = #"{"Name":"\#(name)","ID":"\#(id)","Checks":[{"TTL":"10s"},{"TTL":"10s"}]}"#
            #expect(try await t.http("PUT", "/v1/agent/service/register", body: two).status == 200)
            let agentChecks = try t.json(try await t.http("GET", "/v1/agent/checks"))
            #expect(agentChecks.member("service:\(id):1") != nil && agentChecks.member("service:\(id):2") != nil)
            try await t.client.deregisterService(id)
        }
    }

    @Test("44: bad check status, unknown checks and GET on a write endpoint")
    func checkErrors() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let name = "bad-\(UUID().uuidString.prefix(6))"
            try await t.client.registerCheck(CheckDefinition(id: name, name: name, kind: .ttl(.seconds(10))))
            let bogus = try await t.http("PUT", "/v1/agent/check/update/\(name)", body: #"{"Status":"bogus"}"#)
            #expect(bogus.status == 400 && bogus.text.contains("Invalid check status: 'bogus'"))
            let unknown = try await t.http("PUT", "/v1/agent/check/pass/nope-\(name)")
            #expect(unknown.status == 404 && unknown.text.contains("Unknown check ID"))
            #expect(try await t.http("GET", "/v1/agent/check/pass/\(name)").status == 405)
            let both = try await t.http("PUT", "/v1/agent/check/register", body: #"{"Name":"x","TTL":"10s","Interval":"10s","HTTP":"http://127.0.0.1:9"}"#)
            #expect(both.status == 400 && both.text.contains("Invalid check"))
            let unknownField = try await t.http("PUT", "/v1/agent/service/register", body: #"{"Name":"x","Bogus":1}"#)
            #expect(unknownField.status == 400 && unknownField.text.contains("unknown field"))
            let noName = try await t.http("PUT", "/v1/agent/service/register", body: #"{"Port":1}"#)
            #expect(noName.status == 400 && noName.text.contains("Missing service name"))
            try await t.client.deregisterCheck(name)
        }
    }

    @Test("HTTP and TCP checks are run by the server")
    func probedChecks() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            guard let server = t.server else { return }
            let port = server.localAddress.port
            let name = "probe-\(UUID().uuidString.prefix(6))"
            try await t.client.registerService(
                ServiceRegistration(
                    id: name, name: name,
                    checks: [
                        CheckDefinition(name: "http", kind: .http(url: "http://127.0.0.1:\(port)/v1/status/leader", interval: .seconds(1), timeout: nil)),
                        CheckDefinition(name: "tcp", kind: .tcp(address: "127.0.0.1:\(port)", interval: .seconds(1), timeout: nil)),
                    ]))
            let healthy = try await eventually(timeout: .seconds(5)) {
                try await t.client.healthService(name, passing: true).value.count == 1
            }
            #expect(healthy)
            let down = "probe-down-\(UUID().uuidString.prefix(6))"
            try await t.client.registerService(
                ServiceRegistration(
                    id: down, name: down, checks: [CheckDefinition(name: "tcp", kind: .tcp(address: "127.0.0.1:1", interval: .seconds(1), timeout: .seconds(1)))]))
            try await Task.sleep(for: .seconds(2))
            #expect(try await t.client.healthService(down, passing: true).value.isEmpty)
            #expect(try await t.client.healthService(down).value.first?.checks["service:\(down)"] == "critical")
        }
    }

    @Test("a service registered again with another check target (a node's /replica becoming /primary) is probed at the new one")
    func reregisteredCheckIsProbedAtItsNewTarget() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            guard let server = t.server else { return }
            let port = server.localAddress.port
            let name = "moved-\(UUID().uuidString.prefix(6))"
            func register(_ path: String) async throws {
                try await t.client.registerService(
                    ServiceRegistration(
                        id: name, name: name,
                        checks: [CheckDefinition(name: "http", kind: .http(url: "http://127.0.0.1:\(port)\(path)", interval: .seconds(1), timeout: .seconds(1)))]))
            }
            try await register("/v1/status/leader")
            #expect(try await eventually(timeout: .seconds(5)) { try await t.client.healthService(name, passing: true).value.count == 1 })
            // A key that does not exist answers 404: the check at the new target fails.
            try await register("/v1/kv/\(name)-absent")
            let critical = try await eventually(timeout: .seconds(5)) {
                try await t.client.healthService(name).value.first?.checks["service:\(name)"] == "critical"
            }
            #expect(critical, "the check kept the status of its old target")
        }
    }

    @Test("45-46: health, catalog, status and agent/self views")
    func views() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            let unknown = try await t.http("GET", "/v1/health/service/unknown-\(UUID().uuidString.prefix(6))")
            #expect(unknown.status == 200 && unknown.text == "[]" && t.index(unknown) >= 1)
            let any = try await t.http("GET", "/v1/health/state/any")
            #expect(any.text.contains("serfHealth"))
            let catalog = try await t.client.catalogServices()
            #expect(catalog.value["consul"] == [])
            let name = "tagged-\(UUID().uuidString.prefix(6))"
            try await t.client.registerService(ServiceRegistration(name: name, tags: ["x"], port: 1))
            #expect(try t.json(try await t.http("GET", "/v1/catalog/service/\(name)?tag=x")).arrayValue?.count == 1)
            #expect(try t.json(try await t.http("GET", "/v1/catalog/service/\(name)?tag=y")).arrayValue?.count == 0)
            let leader = try await t.client.leader()
            #expect(!leader.isEmpty)
            if !Target.isRealConsul {
                #expect(leader == "127.0.0.1:8300")
                #expect(try await t.http("GET", "/v1/status/peers").text == #"["127.0.0.1:8300"]"#)
                let me = try await t.client.agentSelf()
                #expect(me.member("Config")?.member("NodeName") == .string("node1"))
                #expect(me.member("Config")?.member("Datacenter") == .string("dc1"))
                #expect(me.member("Config")?.member("SessionTTLMin") == .number("1000000000"))
            }
            try await t.client.deregisterService(name)
        }
    }
}
