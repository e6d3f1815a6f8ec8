import BatonConsul
import BatonConsulServer
import ConsulAPI
import BatonTestSupport
import Foundation
import Logging
import Testing

/// Where the conformance cases run: Baton's embedded server (started fresh for each case), or a real
/// Consul when CONSUL_HTTP_ADDR is set.
struct Target {
    static let realConsulAddress: String? = ProcessInfo.processInfo.environment["CONSUL_HTTP_ADDR"].flatMap { $0.isEmpty ? nil : $0 }
    static var isRealConsul: Bool { realConsulAddress != nil }
    /// A real Consul started with `session_ttl_min = 1s` (say so with CONSUL_SESSION_TTL_MIN=1s).
    static var realConsulHasShortTTL: Bool { ProcessInfo.processInfo.environment["CONSUL_SESSION_TTL_MIN"] == "1s" }

    let base: String
    let client: ConsulClient
    let transport = CurlTransport()
    /// Every key a case writes lives under this prefix, so cases never see each other's keys on a
    /// shared real Consul.
    let prefix: String
    let server: ConsulServer?
    let dataDirectory: String?

    func key(_ name: String) -> String { prefix + name }

    /// Sends a raw request (path relative to `base`, already escaped) and returns the answer.
    func http(_ method: String, _ path: String, body: String? = nil, headers: [(String, String)] = [], timeout: Duration = .seconds(15))
        async throws -> HTTPResponse
    {
        try await transport.send(
            HTTPRequest(method: method, url: base + path, headers: headers, body: body.map { Array($0.utf8) }, timeout: timeout))
    }

    func json(_ response: HTTPResponse) throws -> JSONValue { try JSONValue.parse(response.body) }

    func index(_ response: HTTPResponse) -> UInt64 { response.header("X-Consul-Index").flatMap(UInt64.init) ?? 0 }

    /// Creates a session from a JSON body and returns its ID.
    func session(_ body: String = "{}") async throws -> String {
        let response = try await http("PUT", "/v1/session/create", body: body)
        try #require(response.status == 200, "session create failed: \(response.status) \(response.text)")
        return try #require(try json(response).member("ID")?.stringValue)
    }
}

enum Harness {
    static let logger: Logger = {
        var l = Logger(label: "test.consul")
        l.logLevel = .warning
        return l
    }()

    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "baton-consul-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Starts an embedded server (session_ttl_min 1 s unless told otherwise) in `directory`.
    static func startServer(directory: String?, sessionTTLMin: GoDuration = .seconds(1), aclToken: String? = nil) async throws -> ConsulServer {
        try await ConsulServer(
            host: "127.0.0.1", port: 0, dataDirectory: directory,
            settings: ServerSettings(sessionTTLMin: sessionTTLMin, aclToken: aclToken), logger: logger)
    }

    static func target(for server: ConsulServer, directory: String?) -> Target {
        let base = "http://127.0.0.1:\(server.localAddress.port)"
        let client = ConsulClient(ConsulConfiguration(addresses: [try! ConsulAddress(parsing: base)]))
        return Target(base: base, client: client, prefix: "", server: server, dataDirectory: directory)
    }

    /// Runs `body` against a fresh embedded server (always cleaned up), or against the real Consul
    /// named by CONSUL_HTTP_ADDR under a prefix of its own.
    static func withTarget(sessionTTLMin: GoDuration = .seconds(1), _ body: (Target) async throws -> Void) async throws {
        if Target.isRealConsul {
            let configuration = try ConsulConfiguration.resolve()
            let base = configuration.addresses[0].description
            let prefix = "baton-conformance/\(UUID().uuidString.prefix(8))/"
            let target = Target(base: base, client: ConsulClient(configuration), prefix: prefix, server: nil, dataDirectory: nil)
            do {
                try await body(target)
            } catch {
                try? await target.client.deleteTree(prefix)
                throw error
            }
            try? await target.client.deleteTree(prefix)
            return
        }
        let directory = temporaryDirectory()
        let server = try await startServer(directory: directory, sessionTTLMin: sessionTTLMin)
        let target = target(for: server, directory: directory)
        do {
            try await body(target)
        } catch {
            await server.shutdown()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        await server.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Seconds elapsed while running `body`.
    static func timed<T>(_ body: () async throws -> T) async rethrows -> (T, Double) {
        let start = ContinuousClock.now
        let value = try await body()
        let elapsed = ContinuousClock.now - start
        return (value, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}
