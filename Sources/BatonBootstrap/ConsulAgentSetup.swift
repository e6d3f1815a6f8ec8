import BatonCore
import BatonPostgres
import ConsulAPI
import BatonSettings
import Foundation

/// Writes a real Consul agent's configuration (server mode, bootstrap_expect, retry_join, data_dir,
/// bind and advertise addresses, gossip encryption) and starts it with the configured command — for
/// `--consul-create` on the first node and `--consul-join ADDR…` on the others.
struct ConsulAgentSetup {
    let settings: BootstrapSettings
    let agent: ConsulAgentSettings
    let report: (String) -> Void

    var keyPath: String { agent.configDirectory.value + "/gossip.key" }
    var configPath: String { agent.configDirectory.value + "/baton.json" }

    func run() async throws {
        try AtomicFile.ensureDirectory(agent.configDirectory.value, mode: 0o750, owner: nil)
        let key = try gossipKey()
        let config = Self.configuration(settings: settings, agent: agent, gossipKey: key)
        let wrote = try AtomicFile.write(config.serialized() + "\n", to: configPath, mode: 0o640)
        report((wrote ? "done: " : "unchanged: ") + "\(BootstrapStep.configureConsulAgent) — \(configPath)")
        let result = try await CommandRunner().run(agent.startCommand[0], Array(agent.startCommand.dropFirst()))
        guard result.succeeded else {
            throw BootstrapError("starting the Consul agent with `\(agent.startCommand.joined(separator: " "))` failed (exit \(result.status)): \(result.output.suffix(500))")
        }
        report("done: \(BootstrapStep.startConsulAgent)")
    }

    /// The first node generates the key (32 random bytes, as `consul keygen`); the others must have
    /// been given the same file.
    func gossipKey() throws -> String {
        if let existing = try? String(contentsOfFile: keyPath, encoding: .utf8) {
            let key = existing.trimmingCharacters(in: .whitespacesAndNewlines)
            guard let bytes = Base64.decode(key), bytes.count == 32 else {
                throw BootstrapError("\(keyPath) does not hold a base64 32-byte gossip key")
            }
            return key
        }
        guard agent.create else {
            throw BootstrapError("\(keyPath) is missing: copy it (mode 0600) from the node that ran --consul-create; every agent needs the same gossip key")
        }
        guard let random = FileHandle(forReadingAtPath: "/dev/urandom") else { throw BootstrapError("cannot read /dev/urandom") }
        let bytes = [UInt8](random.readData(ofLength: 32))
        try? random.close()
        guard bytes.count == 32 else { throw BootstrapError("short read from /dev/urandom") }
        let key = Base64.encode(bytes)
        try AtomicFile.write(key + "\n", to: keyPath, mode: 0o600)
        return key
    }

    static func configuration(settings: BootstrapSettings, agent: ConsulAgentSettings, gossipKey: String) -> JSONValue {
        .object([
            ("node_name", .string(settings.node.value)),
            ("server", .bool(true)),
            ("bootstrap_expect", .int(agent.bootstrapExpect)),
            ("retry_join", .array(agent.retryJoin.map { .string($0.value) })),
            ("data_dir", .string(agent.dataDirectory.value)),
            ("bind_addr", .string(settings.address.value)),
            ("advertise_addr", .string(settings.address.value)),
            ("client_addr", .string("127.0.0.1 \(settings.address.value)")),
            ("encrypt", .string(gossipKey)),
            ("session_ttl_min", .string("10s")),
            ("leave_on_terminate", .bool(false)),
            ("ui_config", .object([("enabled", .bool(false))])),
        ])
    }
}
