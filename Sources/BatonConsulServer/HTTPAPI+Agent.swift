import BatonHTTP
import BatonConsulStore
import ConsulAPI

extension HTTPAPI {
    static let consulVersion = "1.21.4"

    // MARK: Views

    func nodeJSON(_ index: UInt64) -> JSONValue {
        .object([
            ("ID", .string(nodeID)), ("Node", .string(settings.nodeName)), ("Address", .string(settings.advertiseAddress)),
            ("Datacenter", .string(settings.datacenter)),
            ("TaggedAddresses", .object([("lan", .string(settings.advertiseAddress)), ("wan", .string(settings.advertiseAddress))])),
            ("Meta", .object([("consul-network-segment", .string(""))])),
            ("CreateIndex", .int(State.bootIndex)), ("ModifyIndex", .int(State.bootIndex)),
        ])
    }

    func checkJSON(_ c: CheckRecord, services: [String: ServiceRecord]) -> JSONValue {
        .object([
            ("Node", .string(settings.nodeName)), ("CheckID", .string(c.id)), ("Name", .string(c.name)),
            ("Status", .string(c.status)), ("Notes", .string(c.notes)), ("Output", .string(c.output)),
            ("ServiceID", .string(c.serviceID)), ("ServiceName", .string(c.serviceName)),
            ("ServiceTags", .array((services[c.serviceID]?.tags ?? []).map { .string($0) })),
            ("Type", .string(c.typeName)), ("Interval", .string(c.interval?.description ?? "")),
            ("Timeout", .string(c.timeout?.description ?? "")), ("ExposedPort", .int(0)), ("Definition", .object([])),
            ("CreateIndex", .int(c.createIndex)), ("ModifyIndex", .int(c.modifyIndex)),
        ])
    }

    static let defaultWeights: JSONValue = .object([("Passing", .int(1)), ("Warning", .int(1))])

    func serviceJSON(_ s: ServiceRecord, withIndexes: Bool) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("ID", .string(s.id)), ("Service", .string(s.name)), ("Tags", .array(s.tags.map { .string($0) })),
            ("Meta", .object(s.meta.map { ($0.0, .string($0.1)) })), ("Port", .int(s.port)), ("Address", .string(s.address)),
            ("Weights", Self.defaultWeights), ("EnableTagOverride", .bool(s.enableTagOverride)),
            ("Datacenter", .string(settings.datacenter)),
        ]
        if withIndexes {
            members.append(("CreateIndex", .int(s.createIndex)))
            members.append(("ModifyIndex", .int(s.modifyIndex)))
        }
        return .object(members)
    }

    /// The built-in `consul` service every server registers in the catalog.
    var consulService: ServiceRecord {
        ServiceRecord(
            id: "consul", name: "consul", tags: [], address: "", port: 8300, meta: [], enableTagOverride: false,
            createIndex: State.bootIndex, modifyIndex: State.bootIndex)
    }

    func member() -> JSONValue {
        .object([
            ("Name", .string(settings.nodeName)), ("Addr", .string(settings.advertiseAddress)), ("Port", .int(8301)),
            (
                "Tags",
                .object([
                    ("role", .string("consul")), ("dc", .string(settings.datacenter)), ("port", .string("8300")),
                    ("bootstrap", .string("1")), ("build", .string(Self.consulVersion)), ("id", .string(nodeID)),
                ])
            ),
            ("Status", .int(1)), ("ProtocolMin", .int(1)), ("ProtocolMax", .int(5)), ("ProtocolCur", .int(2)),
            ("DelegateMin", .int(2)), ("DelegateMax", .int(5)), ("DelegateCur", .int(4)),
        ])
    }

    func agentSelf() -> APIResponse {
        .json(
            .object([
                (
                    "Config",
                    .object([
                        ("Datacenter", .string(settings.datacenter)), ("PrimaryDatacenter", .string(settings.datacenter)),
                        ("NodeName", .string(settings.nodeName)), ("NodeID", .string(nodeID)), ("Revision", .string("baton")),
                        ("Server", .bool(true)), ("Version", .string(Self.consulVersion)), ("BuildDate", .string("2026-01-01T00:00:00Z")),
                        ("SessionTTLMin", .int(settings.sessionTTLMin.nanoseconds)),
                    ])
                ),
                (
                    "DebugConfig",
                    .object([
                        ("SessionTTLMin", .string(settings.sessionTTLMin.description)), ("Datacenter", .string(settings.datacenter)),
                        ("NodeName", .string(settings.nodeName)), ("KVMaxValueSize", .int(settings.maxValueSize)),
                        ("ACLsEnabled", .bool(settings.aclToken != nil)),
                    ])
                ),
                ("Coord", .null), ("Member", member()),
                ("Stats", .object([("consul", .object([("leader", .string("true")), ("server", .string("true"))]))])),
                ("Meta", .object([("consul-network-segment", .string(""))])),
            ]))
    }

    func agentServices() throws(APIError) -> APIResponse {
        try store.read { s in
            .json(.object(s.services.keys.sorted().map { ($0, serviceJSON(s.services[$0]!, withIndexes: false)) }))
        }
    }

    func agentService(_ call: Call) throws(APIError) -> APIResponse {
        let id = call.rest
        return try store.read { (s) throws(APIError) -> APIResponse in
            guard let service = s.services[id] else { throw APIError(404, "unknown service ID: \(id)") }
            return .json(serviceJSON(service, withIndexes: false))
        }
    }

    func agentChecks() throws(APIError) -> APIResponse {
        try store.read { s in
            let checks = s.checks.keys.sorted().compactMap { s.checks[$0] }.filter { $0.kind != .serf }
            return .json(.object(checks.map { ($0.id, checkJSON($0, services: s.services)) }))
        }
    }

    func join(_ call: Call) throws(APIError) -> APIResponse {
        let address = call.rest
        let host = address.split(separator: ":").first.map(String.init) ?? address
        guard host == settings.advertiseAddress || host == "127.0.0.1" || host == "localhost" else {
            throw APIError(500, "1 error occurred:\n\t* Failed to join \(address): this is a single-node server\n\n")
        }
        return .empty
    }

    // MARK: Registration

    static let serviceFields: Set<String> = [
        "id", "name", "tags", "address", "port", "meta", "taggedaddresses", "tagged_addresses", "enabletagoverride",
        "enable_tag_override", "weights", "check", "checks", "kind", "proxy", "connect", "namespace", "partition",
        "socketpath", "locality",
    ]

    static let checkFields: Set<String> = [
        "id", "checkid", "check_id", "name", "notes", "status", "serviceid", "service_id", "ttl", "http", "method", "header",
        "body", "tlsservername", "tls_server_name", "tlsskipverify", "tls_skip_verify", "tcp", "udp", "grpc", "grpcusetls",
        "grpc_use_tls", "h2ping", "h2pingusetls", "args", "scriptargs", "script_args", "dockercontainerid",
        "docker_container_id", "aliasservice", "aliasnode", "interval", "timeout", "deregistercriticalserviceafter",
        "deregister_critical_service_after", "successbeforepassing", "success_before_passing", "failuresbeforecritical",
        "failures_before_critical", "failuresbeforewarning", "failures_before_warning", "outputmaxsize", "output_max_size",
        "shell", "os_service", "osservice", "namespace", "partition", "type",
    ]

    private func rejectUnknownFields(_ json: JSONValue, allowed: Set<String>) throws(APIError) {
        for (name, _) in json.objectValue ?? [] where !allowed.contains(name.lowercased()) {
            throw APIError(400, "Request decode failed: json: unknown field \"\(name)\"")
        }
    }

    /// Reads one check definition (of a service or on its own); `defaultID` names it when it has no ID.
    func parseCheck(_ json: JSONValue, defaultID: String?, defaultName: String, serviceID: String, serviceName: String, index: UInt64)
        throws(APIError) -> CheckRecord
    {
        guard json.objectValue != nil else { throw decodeFailure("Check", expected: "structs.CheckType", got: json) }
        try rejectUnknownFields(json, allowed: Self.checkFields)
        let ttl = try requireDuration(json, ["TTL"])
        let interval = try requireDuration(json, ["Interval"])
        let timeout = try requireDuration(json, ["Timeout"])
        let http = try requireString(json, ["HTTP"]) ?? ""
        let tcp = try requireString(json, ["TCP"]) ?? ""
        if interval != nil && interval! > .zero && ttl != nil && ttl! > .zero {
            throw APIError(400, "Invalid check: Interval and TTL cannot both be specified")
        }
        let kind: CheckRecord.Kind
        if !http.isEmpty || !tcp.isEmpty {
            guard let interval, interval > .zero else {
                throw APIError(400, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks")
            }
            if !http.isEmpty {
                var headers: [String: [String]] = [:]
                if let header = json.member("Header"), let members = header.objectValue {
                    for (name, values) in members { headers[name] = values.arrayValue?.compactMap(\.stringValue) ?? [] }
                }
                kind = .http(
                    url: http, method: try requireString(json, ["Method"]).flatMap { $0.isEmpty ? nil : $0 } ?? "GET",
                    headers: headers, body: try requireString(json, ["Body"]) ?? "",
                    tlsSkipVerify: json.member(anyOf: ["TLSSkipVerify", "tls_skip_verify"])?.boolValue ?? false)
            } else {
                kind = .tcp(tcp)
            }
        } else {
            for unsupported in ["UDP", "GRPC", "H2PING", "Args", "ScriptArgs", "DockerContainerID", "AliasService"] {
                if let v = json.member(unsupported), !v.isNull, v != .string(""), v != .array([]) {
                    throw APIError(400, "Invalid check: \(unsupported) checks are not supported by this server")
                }
            }
            guard let ttl, ttl > .zero else { throw APIError(400, "Invalid check: TTL must be > 0 for TTL checks") }
            kind = .ttl(ttl)
        }
        let status = try requireString(json, ["Status"]) ?? ""
        if !status.isEmpty && !["passing", "warning", "critical"].contains(status) {
            throw APIError(400, "Invalid check status: '\(status)'")
        }
        let id = try requireString(json, ["CheckID", "ID", "check_id"]).flatMap { $0.isEmpty ? nil : $0 }
        let name = try requireString(json, ["Name"]).flatMap { $0.isEmpty ? nil : $0 } ?? defaultName
        guard let checkID = id ?? defaultID ?? (name.isEmpty ? nil : name) else { throw APIError(400, "Missing check name") }
        return CheckRecord(
            id: checkID, name: name, status: status.isEmpty ? "critical" : status, notes: try requireString(json, ["Notes"]) ?? "",
            output: "", serviceID: serviceID, serviceName: serviceName, kind: kind, interval: interval, timeout: timeout,
            deregisterCriticalServiceAfter: try requireDuration(json, ["DeregisterCriticalServiceAfter", "deregister_critical_service_after"]),
            createIndex: index, modifyIndex: index)
    }

    func registerService(_ call: Call) async throws(APIError) -> APIResponse {
        guard let body = try parseBody(call.request), body.objectValue != nil else {
            throw APIError(400, "Request decode failed: EOF")
        }
        try rejectUnknownFields(body, allowed: Self.serviceFields)
        guard let name = try requireString(body, ["Name"]), !name.isEmpty else { throw APIError(400, "Missing service name") }
        let id = try requireString(body, ["ID"]).flatMap { $0.isEmpty ? nil : $0 } ?? name
        let address = try requireString(body, ["Address"]) ?? ""
        if address == "0.0.0.0" || address == "::" || address == "[::]" { throw APIError(400, "Invalid service address") }
        var port = 0
        if let p = body.member("Port"), !p.isNull {
            guard let value = p.int64Value, (0...65535).contains(value) else { throw decodeFailure("Port", expected: "int", got: p) }
            port = Int(value)
        }
        var meta: [(String, String)] = []
        if let m = body.member("Meta"), !m.isNull {
            guard let members = m.objectValue else { throw decodeFailure("Meta", expected: "map[string]string", got: m) }
            for (k, v) in members {
                guard let s = v.stringValue else { throw decodeFailure("Meta", expected: "string", got: v) }
                if k.hasPrefix("consul-") { throw APIError(400, "Invalid Service Meta: Key \"\(k)\" is reserved for internal use") }
                meta.append((k, s))
            }
        }
        var enableTagOverride = false
        if let e = body.member(anyOf: ["EnableTagOverride", "enable_tag_override"]), !e.isNull {
            guard let b = e.boolValue else { throw decodeFailure("EnableTagOverride", expected: "bool", got: e) }
            enableTagOverride = b
        }
        let tags = try requireStrings(body, ["Tags"]) ?? []
        var definitions: [JSONValue] = []
        if let one = body.member("Check"), !one.isNull, one != .object([]) { definitions.append(one) }
        if let many = body.member("Checks"), !many.isNull {
            guard let items = many.arrayValue else { throw decodeFailure("Checks", expected: "structs.CheckTypes", got: many) }
            definitions += items
        }
        let replace = call.query.has("replace-existing-checks") && call.query.value("replace-existing-checks") != "false"
        let checkDefinitions = definitions
        let plannedService = ServiceRecord(
            id: id, name: name, tags: tags, address: address, port: port, meta: meta, enableTagOverride: enableTagOverride,
            createIndex: 0, modifyIndex: 0)
        // Parse checks up front so that a bad one rejects the whole registration.
        var checks: [CheckRecord] = []
        for (i, definition) in checkDefinitions.enumerated() {
            let defaultID = checkDefinitions.count == 1 ? "service:\(id)" : "service:\(id):\(i + 1)"
            checks.append(
                try parseCheck(definition, defaultID: defaultID, defaultName: "Service '\(name)' check", serviceID: id, serviceName: name, index: 0))
        }
        let planned = checks
        try await store.write { s, index, _ in
            var service = plannedService
            service.createIndex = index
            service.modifyIndex = index
            let stamped = planned.map { c -> CheckRecord in
                var c = c
                c.createIndex = index
                c.modifyIndex = index
                return c
            }
            return Operations.registerService(s, index: index, service: service, checks: stamped, replaceExistingChecks: replace)
        }
        checkRunner.reconcile()
        return .empty
    }

    func deregisterService(_ call: Call) async throws(APIError) -> APIResponse {
        let id = call.rest
        try await store.write { s, index, _ throws(APIError) in try Operations.deregisterService(s, index: index, id: id) }
        checkRunner.reconcile()
        return .empty
    }

    func registerCheck(_ call: Call) async throws(APIError) -> APIResponse {
        guard let body = try parseBody(call.request) else { throw APIError(400, "Request decode failed: EOF") }
        let serviceID = try requireString(body, ["ServiceID", "service_id"]) ?? ""
        let check = try parseCheck(body, defaultID: nil, defaultName: "", serviceID: serviceID, serviceName: "", index: 0)
        try await store.write { s, index, _ throws(APIError) in
            var c = check
            c.createIndex = index
            c.modifyIndex = index
            return try Operations.registerCheck(s, index: index, check: c)
        }
        checkRunner.reconcile()
        return .empty
    }

    func deregisterCheck(_ call: Call) async throws(APIError) -> APIResponse {
        let id = call.rest
        try await store.write { s, index, _ throws(APIError) in try Operations.deregisterCheck(s, index: index, id: id) }
        checkRunner.reconcile()
        return .empty
    }

    /// pass/warn/fail (`status` given, output from `?note`) and update (status and output from the body).
    func updateTTL(_ call: Call, _ status: String?) async throws(APIError) -> APIResponse {
        let id = call.rest
        var newStatus = status ?? ""
        var output = call.query.value("note") ?? ""
        if status == nil {
            let body = try parseBody(call.request) ?? .object([])
            newStatus = try requireString(body, ["Status"]) ?? ""
            output = try requireString(body, ["Output"]) ?? ""
            guard ["passing", "warning", "critical"].contains(newStatus) else {
                throw APIError(400, "Invalid check status: '\(newStatus)'")
            }
        }
        let finalStatus = newStatus
        let finalOutput = output
        try await store.write { s, index, _ throws(APIError) in
            try Operations.updateCheck(s, index: index, id: id, status: finalStatus, output: finalOutput, requireTTL: true)
        }
        // Every update restarts the TTL timer, even one that changes nothing.
        store.mutateRuntime { s in
            if let check = s.checks[id], case .ttl(let ttl) = check.kind {
                s.checkDeadlines[id] = ContinuousClock.now.advanced(by: ttl.swiftDuration)
            }
        }
        return .empty
    }
}
