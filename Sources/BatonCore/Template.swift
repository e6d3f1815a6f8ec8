/// A config-file template with `{{name}}` placeholders.
///
/// Rendering needs a value for every placeholder and refuses values that could break out of a config
/// line (line breaks, quotes, braces, control characters): values are validated before they get here,
/// and this is the last guard.
public struct Template: Sendable {
    public let text: String
    public let source: String

    public init(text: String, source: String) {
        self.text = text
        self.source = source
    }

    /// The placeholders the template uses.
    public var placeholders: Set<String> {
        var names = Set<String>()
        var rest = text[...]
        while let open = rest.range(of: "{{"), let close = rest[open.upperBound...].range(of: "}}") {
            names.insert(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return names
    }

    public func render(_ values: [String: String]) throws(ValidationProblem) -> String {
        let missing = placeholders.subtracting(values.keys)
        guard missing.isEmpty else {
            throw ValidationProblem("template \(source) uses {{\(missing.sorted().joined(separator: "}}, {{"))}} which Baton does not provide; fix the template")
        }
        for (name, value) in values {
            if value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || "\"'{}\\".unicodeScalars.contains($0) }) {
                throw ValidationProblem("refusing to write \(Quote.show(value)) for {{\(name)}} into \(source): it contains a line break, quote, brace or control character")
            }
        }
        var out = text
        for (name, value) in values { out = out.replacingOccurrences(of: "{{\(name)}}", with: value) }
        return out
    }
}

/// The values of a node's keepalived.conf.
public struct KeepalivedSettings: Sendable, Equatable {
    public var cluster: ClusterName
    public var node: NodeName
    /// MASTER for the node that created the cluster, BACKUP for the others.
    public var initialState: String
    public var interface: String
    public var virtualRouterID: Int
    public var priority: Int
    public var virtualIP: CIDR
    public var batonExecutable: SafePath
    public var batonConfig: SafePath
    /// The file the monitor keeps saying this node's ``VRRPStanding``; keepalived watches it (inotify)
    /// and reacts at once, between two runs of the check script.
    public var trackFile: SafePath

    public init(
        cluster: ClusterName, node: NodeName, initialState: String, interface: String, virtualRouterID: Int, priority: Int,
        virtualIP: CIDR, batonExecutable: SafePath, batonConfig: SafePath, trackFile: SafePath
    ) {
        self.trackFile = trackFile
        self.cluster = cluster
        self.node = node
        self.initialState = initialState
        self.interface = interface
        self.virtualRouterID = virtualRouterID
        self.priority = priority
        self.virtualIP = virtualIP
        self.batonExecutable = batonExecutable
        self.batonConfig = batonConfig
    }

    /// Where a node's monitor keeps the file keepalived tracks (``VRRPStanding/trackFileText``).
    public static func trackFilePath(stateDirectory: String) -> String { stateDirectory + "/vrrp-priority" }

    /// Where `baton notify` keeps keepalived's last notification, for the monitor to deliver again when
    /// Consul did not take it (the node was cut off): otherwise the cluster would believe a state
    /// keepalived left long ago until its next transition.
    public static func lastNotificationPath(stateDirectory: String) -> String { stateDirectory + "/vrrp-notification" }

    /// The file a keepalived.conf written by an earlier Baton tracks (``VRRPStanding/legacyTrackFileText``).
    public static func legacyTrackFilePath(stateDirectory: String) -> String { stateDirectory + "/vrrp-leading" }

    /// A network interface name as Linux accepts it (at most 15 characters, no '/' or spaces).
    public static func validateInterface(_ name: String) throws(ValidationProblem) {
        guard !name.isEmpty, name.count <= 15,
            name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_.@".unicodeScalars.contains($0) })
        else { throw ValidationProblem("interface \(Quote.show(name)) is not a network interface name (1-15 letters, digits, '-', '_', '.', '@')") }
    }

    public static func validateRouterID(_ id: Int) throws(ValidationProblem) {
        guard (1...255).contains(id) else { throw ValidationProblem("virtual router id \(id) must be from 1 to 255") }
    }

    public func render(_ template: Template) throws(ValidationProblem) -> String {
        try Self.validateInterface(interface)
        try Self.validateRouterID(virtualRouterID)
        guard ["MASTER", "BACKUP"].contains(initialState) else { throw ValidationProblem("keepalived state must be MASTER or BACKUP") }
        guard (1...254).contains(priority) else { throw ValidationProblem("keepalived priority \(priority) must be from 1 to 254") }
        return try template.render([
            "cluster": cluster.value.replacingOccurrences(of: "-", with: "_"), "node_name": node.value, "state": initialState,
            "interface": interface, "virtual_router_id": String(virtualRouterID), "priority": String(priority),
            "virtual_ip": virtualIP.text, "baton": batonExecutable.value, "baton_config": batonConfig.value, "track_file": trackFile.value,
        ])
    }
}

/// The values of a node's pgbouncer.ini.
public struct PgBouncerSettings: Sendable, Equatable {
    public var node: NodeName
    public var primaryHost: HostAddress
    public var primaryPort: TCPPort
    public var listenAddress: String
    public var listenPort: TCPPort
    public var socketDirectory: SafePath
    public var authFile: SafePath
    public var adminUser: String
    public var logFile: SafePath
    public var pidFile: SafePath

    public init(
        node: NodeName, primaryHost: HostAddress, primaryPort: TCPPort, listenAddress: String, listenPort: TCPPort, socketDirectory: SafePath,
        authFile: SafePath, adminUser: String, logFile: SafePath, pidFile: SafePath
    ) {
        self.node = node
        self.primaryHost = primaryHost
        self.primaryPort = primaryPort
        self.listenAddress = listenAddress
        self.listenPort = listenPort
        self.socketDirectory = socketDirectory
        self.authFile = authFile
        self.adminUser = adminUser
        self.logFile = logFile
        self.pidFile = pidFile
    }

    public func render(_ template: Template) throws(ValidationProblem) -> String {
        if listenAddress != "*" { _ = try HostAddress(listenAddress, field: "pgbouncer listen address") }
        _ = try NodeName(adminUser.lowercased(), field: "pgbouncer admin user")
        return try template.render([
            "node_name": node.value, "primary_host": primaryHost.value, "primary_port": String(primaryPort.value),
            "listen_addr": listenAddress, "listen_port": String(listenPort.value), "socket_dir": socketDirectory.value,
            "auth_file": authFile.value, "admin_user": adminUser, "logfile": logFile.value, "pidfile": pidFile.value,
        ])
    }
}
