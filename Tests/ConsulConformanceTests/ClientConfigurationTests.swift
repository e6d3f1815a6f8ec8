import BatonConsul
import BatonConsulServer
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

/// The client is configured the way Consul's own tools are, and never shows its token.
@Suite("Consul client configuration")
struct ClientConfigurationTests {
    @Test func readsConsulsEnvironmentVariables() throws {
        let directory = NSTemporaryDirectory() + "baton-cfg-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "from-file\n".write(toFile: directory + "/token", atomically: true, encoding: .utf8)
        try "cert".write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)

        let c = try ConsulConfiguration.resolve(environment: [
            "CONSUL_HTTP_ADDR": "10.0.0.1:8500, https://consul.example:8501,[::1]:9", "CONSUL_HTTP_TOKEN": "env-token",
            "CONSUL_HTTP_TOKEN_FILE": directory + "/token", "CONSUL_CACERT": directory + "/ca.pem",
        ])
        #expect(c.addresses.map(\.description) == ["http://10.0.0.1:8500", "https://consul.example:8501", "http://[::1]:9"])
        #expect(c.token?.value == "from-file", "the token file wins over CONSUL_HTTP_TOKEN, as in Consul's tools")
        #expect(c.tls.caFile == directory + "/ca.pem")
        #expect(!c.description.contains("from-file") && !"\(c.token!)".contains("from-file"))

        let ssl = try ConsulConfiguration.resolve(environment: ["CONSUL_HTTP_ADDR": "consul.example", "CONSUL_HTTP_SSL": "true"])
        #expect(ssl.addresses.map(\.description) == ["https://consul.example:8501"])
        let flags = try ConsulConfiguration.resolve(environment: ["CONSUL_HTTP_ADDR": "ignored:1"], address: "127.0.0.1:18500")
        #expect(flags.addresses.map(\.description) == ["http://127.0.0.1:18500"], "flags override the environment")
        #expect(try ConsulConfiguration.resolve(environment: [:]).addresses.map(\.description) == ["http://127.0.0.1:8500"])
    }

    @Test(arguments: [
        ["CONSUL_HTTP_ADDR": "ftp://x:1"], ["CONSUL_HTTP_ADDR": "host:99999"], ["CONSUL_HTTP_ADDR": "bad host:1"],
        ["CONSUL_HTTP_SSL": "perhaps"], ["CONSUL_HTTP_TOKEN_FILE": "/nonexistent/token"], ["CONSUL_CACERT": "/nonexistent/ca.pem"],
        ["CONSUL_CLIENT_CERT": "/etc/hostname"], ["CONSUL_HTTP_TOKEN": "a\nb"],
    ])
    func refusesBadSettings(environment: [String: String]) {
        #expect(throws: ConsulError.self) { try ConsulConfiguration.resolve(environment: environment) }
    }

    @Test("an address that does not answer is skipped for the next one")
    func triesAddressesInTurn() async throws {
        let directory = NSTemporaryDirectory() + "baton-cfg-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try await Harness.startServer(directory: directory)
        let dead = try FreePort.pick()
        let client = ConsulClient(
            try ConsulConfiguration.resolve(environment: ["CONSUL_HTTP_ADDR": "127.0.0.1:\(dead),127.0.0.1:\(server.localAddress.port)"]))
        try await client.put("k", "v")
        #expect(try await client.get("k").value?.stringValue == "v")
        await server.shutdown()
        do {
            _ = try await client.get("k")
            Issue.record("no address answers: the call must fail")
        } catch let error as ConsulError {
            #expect(error.code == .unreachable)
            #expect(error.message.contains("127.0.0.1:\(dead)"), "names every address it tried: \(error.message)")
        }
    }

    @Test("a watch yields changes, backs off while Consul is down and resumes when it is back")
    func watchFollowsChanges() async throws {
        let directory = NSTemporaryDirectory() + "baton-cfg-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try await Harness.startServer(directory: directory)
        let client = Harness.target(for: server, directory: directory).client
        try await client.put("w", "1")
        let watch = ConsulWatch(wait: .seconds(5)) { options in try await client.get("w", options) }
        var iterator = watch.makeAsyncIterator()
        guard case .success(let first)? = await iterator.next() else { Issue.record("no first value"); return }
        #expect(first.value?.stringValue == "1")
        Task {
            try await Task.sleep(for: .milliseconds(200))
            try await client.put("w", "2")
        }
        guard case .success(let second)? = await iterator.next() else { Issue.record("no change"); return }
        #expect(second.value?.stringValue == "2" && second.index > first.index)
        await server.shutdown()
        guard case .failure(let error)? = await iterator.next() else { Issue.record("no failure while down"); return }
        #expect(error.code == .unreachable)
    }

    /// Issue 24: a `500 No cluster leader` (a Consul leader election) is asked again with backoff as long
    /// as the call's time allows, so a short election costs a call nothing; a longer one still fails in
    /// time, with Consul's answer.
    @Test("a 500 is retried with backoff within the call's time: a short election is ridden out, a long one fails in time")
    func retriesAnElectionWithinTheBudget() async throws {
        let server = try await ConsulServer(
            host: "127.0.0.1", port: 0, dataDirectory: nil, settings: ServerSettings(), faultControl: ("127.0.0.1", 0), logger: Harness.logger)
        do {
            try await ridesOutShortElections(server)
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    func ridesOutShortElections(_ server: ConsulServer) async throws {
        let client = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: "127.0.0.1:\(server.localAddress.port)")]))
        try await client.put("k", "v")
        let faults = try #require(server.faults)
        faults.election(for: .milliseconds(300))
        #expect(try await client.get("k", timeout: .seconds(2)).value?.stringValue == "v", "the 300 ms election is ridden out")
        faults.election(for: .seconds(5))
        let started = ContinuousClock.now
        await #expect(throws: ConsulError.self) { _ = try await client.get("k", timeout: .seconds(1)) }
        #expect(ContinuousClock.now - started < .seconds(3), "it gives up when the call's time is up")
        faults.clear()
    }
}
