import ConsulAPI
import Foundation

/// Reads a JSON object from Consul and names the key when it is malformed.
enum Record {
    static func object(_ bytes: [UInt8]?, key: String) throws(ValidationProblem) -> JSONValue {
        guard let bytes, !bytes.isEmpty else { throw ValidationProblem("Consul key \(key) is empty; expected a JSON object") }
        guard let json = try? JSONValue.parse(bytes), json.objectValue != nil else {
            throw ValidationProblem("Consul key \(key) does not hold a JSON object; fix or delete it (someone else wrote it?)")
        }
        return json
    }

    static func string(_ json: JSONValue, _ field: String, key: String) throws(ValidationProblem) -> String {
        guard let s = json.member(field)?.stringValue else {
            throw ValidationProblem("Consul key \(key): field \(field) is missing or not a string")
        }
        return s
    }

    static func int(_ json: JSONValue, _ field: String, key: String) throws(ValidationProblem) -> Int {
        guard let n = json.member(field)?.int64Value, let i = Int(exactly: n) else {
            throw ValidationProblem("Consul key \(key): field \(field) is missing or not an integer")
        }
        return i
    }
}

/// The cluster's `initialize` key: who created the cluster, and its PostgreSQL system identifier once
/// initdb (or adoption) has produced one.
public struct ClusterClaim: Sendable, Equatable {
    public var node: NodeName
    /// `nil` while the creating node is still initialising PostgreSQL.
    public var systemIdentifier: String?

    public init(node: NodeName, systemIdentifier: String?) {
        self.node = node
        self.systemIdentifier = systemIdentifier
    }

    public var json: JSONValue {
        .object([("node", .string(node.value)), ("system_identifier", systemIdentifier.map { .string($0) } ?? .null)])
    }

    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        let json = try Record.object(bytes, key: key)
        node = try NodeName(try Record.string(json, "node", key: key), field: "\(key) node")
        if let id = json.member("system_identifier"), !id.isNull {
            guard let text = id.stringValue, !text.isEmpty, text.allSatisfy(\.isNumber) else {
                throw ValidationProblem("Consul key \(key): system_identifier must be a string of digits")
            }
            systemIdentifier = text
        } else {
            systemIdentifier = nil
        }
    }
}

/// A node's role in the cluster.
public enum NodeRole: String, Sendable, Equatable {
    case primary, standby
}

/// A node's repmgr-style registration under `nodes/<name>`.
public struct NodeRegistration: Sendable, Equatable {
    public var name: NodeName
    public var address: HostAddress
    public var port: TCPPort
    public var role: NodeRole
    /// The node it streams from; `nil` for the primary.
    public var upstream: NodeName?
    /// Failover preference; 0 means never promoted automatically.
    public var priority: Int
    public var location: String
    /// The node's HTTP API (`http://host:port` or `https://…`), when it serves one.
    public var api: NodeAPIAddress?
    /// The node's pgBackRest TLS server, when it runs one (`--backup-tls-*`).
    public var backupServer: BackupServerAddress?

    public init(
        name: NodeName, address: HostAddress, port: TCPPort, role: NodeRole, upstream: NodeName?, priority: Int, location: String,
        api: NodeAPIAddress? = nil, backupServer: BackupServerAddress? = nil
    ) {
        self.backupServer = backupServer
        self.name = name
        self.address = address
        self.port = port
        self.role = role
        self.upstream = upstream
        self.priority = priority
        self.location = location
        self.api = api
    }

    /// How other nodes connect to this one (no password: that comes from a passfile).
    public func conninfo(user: String, database: String = "postgres") -> String {
        "host=\(address.value) port=\(port.value) user=\(user) dbname=\(database) connect_timeout=3"
    }

    public var json: JSONValue {
        .object([
            ("name", .string(name.value)), ("address", .string(address.value)), ("port", .int(port.value)),
            ("conninfo", .string(conninfo(user: "replicator"))), ("role", .string(role.rawValue)),
            ("upstream", upstream.map { .string($0.value) } ?? .null), ("priority", .int(priority)),
            ("location", .string(location)), ("api", api.map { .string($0.url) } ?? .null),
        ] + (backupServer.map { [("backup_server", $0.json)] } ?? []))
    }

    /// Reads a registration, validating every field: a value someone else wrote is never trusted.
    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        let json = try Record.object(bytes, key: key)
        name = try NodeName(try Record.string(json, "name", key: key), field: "\(key) name")
        guard key.hasSuffix("/" + name.value) else {
            throw ValidationProblem("Consul key \(key) registers a node named \(Quote.show(name.value)); the names must match")
        }
        address = try HostAddress(try Record.string(json, "address", key: key), field: "\(key) address")
        port = try TCPPort(try Record.int(json, "port", key: key), field: "\(key) port")
        let roleText = try Record.string(json, "role", key: key)
        guard let role = NodeRole(rawValue: roleText) else {
            throw ValidationProblem("Consul key \(key): role \(Quote.show(roleText)) is neither primary nor standby")
        }
        self.role = role
        if let up = json.member("upstream"), !up.isNull {
            guard let text = up.stringValue else { throw ValidationProblem("Consul key \(key): upstream must be a string or null") }
            upstream = try NodeName(text, field: "\(key) upstream")
        } else {
            upstream = nil
        }
        priority = try Record.int(json, "priority", key: key)
        guard (0...1000).contains(priority) else { throw ValidationProblem("Consul key \(key): priority \(priority) must be 0 to 1000") }
        location = json.member("location")?.stringValue ?? "default"
        guard location.count <= 63, location.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw ValidationProblem("Consul key \(key): location \(Quote.show(location)) may use only letters, digits, '-' and '_'")
        }
        if let text = json.member("api"), !text.isNull {
            api = try NodeAPIAddress(url: text.stringValue ?? "", field: "\(key) api")
        } else {
            api = nil
        }
        if let server = json.member("backup_server"), !server.isNull {
            backupServer = try BackupServerAddress(json: server, key: key)
        } else {
            backupServer = nil
        }
    }
}

/// Where a node's pgBackRest TLS server answers (on the node's address), and what a backup from a
/// standby must tell pgBackRest of this node's PostgreSQL to reach it through that server.
public struct BackupServerAddress: Sendable, Equatable {
    public var port: TCPPort
    /// The node's pgBackRest configuration file (the server runs the client's commands with it).
    public var config: SafePath
    public var pgdata: SafePath
    public var socketDirectory: SafePath

    public init(port: TCPPort, config: SafePath, pgdata: SafePath, socketDirectory: SafePath) {
        self.port = port
        self.config = config
        self.pgdata = pgdata
        self.socketDirectory = socketDirectory
    }

    var json: JSONValue {
        .object([
            ("port", .int(port.value)), ("config", .string(config.value)), ("pgdata", .string(pgdata.value)),
            ("socket_dir", .string(socketDirectory.value)),
        ])
    }

    init(json: JSONValue, key: String) throws(ValidationProblem) {
        guard json.objectValue != nil else { throw ValidationProblem("Consul key \(key): backup_server must be an object with port, config, pgdata and socket_dir") }
        port = try TCPPort(try Record.int(json, "port", key: key), field: "\(key) backup_server port")
        config = try SafePath(try Record.string(json, "config", key: key), field: "\(key) backup_server config")
        pgdata = try SafePath(try Record.string(json, "pgdata", key: key), field: "\(key) backup_server pgdata")
        socketDirectory = try SafePath(try Record.string(json, "socket_dir", key: key), field: "\(key) backup_server socket_dir")
    }
}

/// Where a node's HTTP API answers: a scheme, a host and a port, validated (it is used to build URLs).
public struct NodeAPIAddress: Sendable, Equatable {
    public var tls: Bool
    public var host: HostAddress
    public var port: TCPPort

    public init(tls: Bool, host: HostAddress, port: TCPPort) {
        self.tls = tls
        self.host = host
        self.port = port
    }

    public var url: String {
        let host = self.host.value.contains(":") ? "[\(self.host.value)]" : self.host.value
        return "\(tls ? "https" : "http")://\(host):\(port.value)"
    }

    /// Parses `http://host:port` or `https://host:port` (an IPv6 host in brackets).
    public init(url: String, field: String) throws(ValidationProblem) {
        let tls: Bool
        var rest: Substring
        if url.hasPrefix("https://") {
            tls = true
            rest = url.dropFirst(8)
        } else if url.hasPrefix("http://") {
            tls = false
            rest = url.dropFirst(7)
        } else {
            throw ValidationProblem("\(field) \(Quote.show(url)) must be http://HOST:PORT or https://HOST:PORT")
        }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) else {
            throw ValidationProblem("\(field) \(Quote.show(url)) has no port")
        }
        rest = rest[..<colon]
        if rest.hasPrefix("[") && rest.hasSuffix("]") { rest = rest.dropFirst().dropLast() }
        self.init(tls: tls, host: try HostAddress(String(rest), field: field), port: try TCPPort(port, field: field))
    }
}
