import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import BatonSigning
import ConsulAPI
import Foundation

/// `baton report`: one directory (then one archive) an operator attaches to a bug report — the
/// status, `explain`, the config, the event history, every key of the cluster in Consul, and from each
/// node's API (a signed `GET /report`) its monitor's last log lines, pg_controldata, the tail of
/// PostgreSQL's log and its node file. Secrets are removed (``Redaction``); what was collected and what
/// could not be is said line by line.
public struct BugReport {
    public let config: NodeConfig
    public let client: ConsulClient
    /// This node's settings, for the signer (its passfile) and the API's TLS; nil when the command does
    /// not run on a node, and no node's diagnostics can be asked for.
    public let settings: BootstrapSettings?
    public let version: String

    public init(config: NodeConfig, client: ConsulClient, settings: BootstrapSettings?, version: String) {
        (self.config, self.client, self.settings, self.version) = (config, client, settings, version)
    }

    /// Writes the report's files under `directory` (created); `progress` gets one line per item, and
    /// the return value says how many items could not be collected.
    public func collect(into directory: String, progress: (String) -> Void) async throws -> Int {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var failed = 0
        func write(_ name: String, _ text: String) throws {
            try AtomicFile.write(Redaction.redact(text: text), to: directory + "/" + name, mode: 0o600)
        }
        func item(_ what: String, _ body: () async throws -> String) async {
            do { progress("  ✓ \(what): \(try await body())") } catch {
                failed += 1
                progress("  ✗ \(what): \(error)")
            }
        }
        try write("version.txt", "baton \(version)\ncollected \(rfc3339Now()) on \(ProcessInfo.processInfo.hostName)\n")
        var registrations: [NodeName: NodeRegistration] = [:]
        await item("status") {
            let view = try await StatusReader(config: config, client: client).read(events: 200)
            registrations = Dictionary(uniqueKeysWithValues: view.nodes.map { ($0.registration.name, $0.registration) })
            try write("status.txt", view.table())
            try write("status.json", Redaction.redact(view.json).serialized() + "\n")
            try write("config.json", Redaction.redact(view.config.json).serialized() + "\n")
            try write("events.txt", view.events.map { "\($0.time)  \($0.node)  \($0.kind)  \($0.detail)" }.joined(separator: "\n") + "\n")
            return "status.txt, status.json, config.json, events.txt (\(view.events.count) events)"
        }
        await item("explain") {
            let explanation = try await Takeover(config: config, client: client).explain()
            try write("explain.txt", explanation.text)
            try write("explain.json", explanation.json.serialized() + "\n")
            return "explain.txt, explain.json"
        }
        await item("Consul keys") {
            var pairs = try await client.list(config.keys.prefix, .consistent).value
            pairs += try await client.list(config.keys.eventsPrefix, .consistent).value
            let entries: [JSONValue] = pairs.map { pair in
                let bytes = pair.value ?? []
                // ignored: a value that is not JSON is kept as text
                let value = (try? JSONValue.parse(bytes)) ?? .string(String(decoding: bytes, as: UTF8.self))
                return .object([
                    ("key", .string(pair.key)), ("modify_index", .number(String(pair.modifyIndex))),
                    ("session", pair.session.map { .string($0) } ?? .null), ("value", Redaction.redact(value)),
                ])
            }
            try write("consul-keys.json", JSONValue.array(entries).serialized() + "\n")
            return "consul-keys.json (\(pairs.count) keys)"
        }
        guard let settings else {
            progress("  ✗ each node's logs and pg_controldata: not on a node (no node file with a passfile to sign the requests)")
            return failed + 1
        }
        let passfile = try? String(contentsOfFile: settings.passfile.value, encoding: .utf8)
        guard let password = passfile.flatMap(PostgresFiles.password(fromPassfile:)) else {
            progress("  ✗ each node's logs and pg_controldata: cannot read the replication password in \(settings.passfile.value) (run as root on a node)")
            return failed + 1
        }
        let signer = NodeAPISigner(replicationPassword: password, cluster: config.cluster)
        let tls = settings.apiTLS.map { TLSFiles(caFile: $0.clientCA?.value, certFile: $0.certificate.value, keyFile: $0.key.value) } ?? TLSFiles()
        let transport = CurlTransport(tls: tls)
        for (name, registration) in registrations.sorted(by: { $0.key < $1.key }) {
            await item("node \(name)") {
                guard let api = registration.api else { throw AgentError("its registration names no API (a Baton before the node API)") }
                let request = HTTPRequest(
                    method: "GET", url: api.url + "/report",
                    headers: [("Authorization", signer.authorization(method: "GET", path: "/report", body: [], time: Int64(Date().timeIntervalSince1970)))],
                    timeout: .seconds(15))
                let response = try await transport.send(request)
                guard response.status == 200, let answer = try? JSONValue.parse(response.body) else {
                    throw AgentError("\(api.url)/report answered \(response.status): \(response.text.prefix(300))")
                }
                let node = directory + "/nodes/" + name.value
                let log = answer.member("monitor_log")?.arrayValue?.compactMap(\.stringValue) ?? []
                try AtomicFile.write(Redaction.redact(answer).serialized() + "\n", to: node + "/report.json", mode: 0o600)
                try write("nodes/\(name)/monitor.log", log.joined(separator: "\n") + "\n")
                try write("nodes/\(name)/pg_controldata.txt", answer.member("pg_controldata")?.stringValue ?? "")
                try write("nodes/\(name)/postgresql.log", answer.member("postgresql_log")?.stringValue ?? "")
                try write("nodes/\(name)/baton.yaml", answer.member("node_config")?.stringValue ?? "")
                return "nodes/\(name)/ (\(log.count) monitor log lines, pg_controldata, PostgreSQL's log, its node file)"
            }
        }
        return failed
    }
}
