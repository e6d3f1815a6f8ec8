import BatonHTTP
import BatonConsulStore
import ConsulAPI

extension HTTPAPI {
    /// Services as the catalog sees them: the agent's plus the built-in `consul` service.
    private func catalogServiceRecords(_ s: borrowing State) -> [ServiceRecord] {
        [consulService] + s.services.keys.sorted().map { s.services[$0]! }
    }

    private func serviceIndex(_ s: borrowing State, _ name: String) -> UInt64 {
        s.serviceIndex[name] ?? max(s.catalogIndex, State.bootIndex)
    }

    private func nodeChecks(_ s: borrowing State) -> [CheckRecord] {
        s.checks.values.filter { $0.serviceID.isEmpty }.sorted { $0.id < $1.id }
    }

    private func tagsMatch(_ service: ServiceRecord, _ query: QueryParameters) -> Bool {
        query.values("tag").allSatisfy { service.tags.contains($0) }
    }

    func healthService(_ call: Call) async throws(APIError) -> APIResponse {
        let name = call.rest
        var passingOnly = false
        if let passing = call.query.value("passing") {
            switch passing.lowercased() {
            case "", "1", "t", "true": passingOnly = true
            case "0", "f", "false": passingOnly = false
            default: throw APIError(400, "Invalid value for ?passing")
            }
        }
        let query = call.query
        return try await blockingRead(call) { s in
            let nodeChecks = self.nodeChecks(s)
            var entries: [JSONValue] = []
            for service in self.catalogServiceRecords(s) where service.name == name && self.tagsMatch(service, query) {
                let checks = s.checks.values.filter { $0.serviceID == service.id }.sorted { $0.id < $1.id } + nodeChecks
                if passingOnly && !checks.allSatisfy({ $0.status == "passing" }) { continue }
                entries.append(
                    .object([
                        ("Node", self.nodeJSON(s.index)),
                        ("Service", self.serviceJSON(service, withIndexes: true)),
                        ("Checks", .array(checks.map { self.checkJSON($0, services: s.services) })),
                    ]))
            }
            return (self.serviceIndex(s, name), false, .json(.array(entries)))
        }
    }

    func healthChecks(_ call: Call) async throws(APIError) -> APIResponse {
        let name = call.rest
        return try await blockingRead(call) { s in
            let checks = s.checks.values.filter { $0.serviceName == name && !$0.serviceID.isEmpty }.sorted { $0.id < $1.id }
            return (self.serviceIndex(s, name), false, .json(.array(checks.map { self.checkJSON($0, services: s.services) })))
        }
    }

    func healthState(_ call: Call) async throws(APIError) -> APIResponse {
        let state = call.rest
        guard !state.isEmpty else { throw APIError(400, "Missing check state") }
        return try await blockingRead(call) { s in
            let checks = s.checks.values.filter { state == "any" || $0.status == state }.sorted { $0.id < $1.id }
            return (max(s.catalogIndex, State.bootIndex), false, .json(.array(checks.map { self.checkJSON($0, services: s.services) })))
        }
    }

    func healthNode(_ call: Call) async throws(APIError) -> APIResponse {
        let node = call.rest
        return try await blockingRead(call) { s in
            let checks = node == self.settings.nodeName ? s.checks.values.sorted { $0.id < $1.id } : []
            return (max(s.catalogIndex, State.bootIndex), false, .json(.array(checks.map { self.checkJSON($0, services: s.services) })))
        }
    }

    func catalogServices(_ call: Call) async throws(APIError) -> APIResponse {
        try await blockingRead(call) { s in
            var tags: [String: [String]] = [:]
            var order: [String] = []
            for service in self.catalogServiceRecords(s) {
                if tags[service.name] == nil { order.append(service.name) }
                var union = tags[service.name] ?? []
                for t in service.tags where !union.contains(t) { union.append(t) }
                tags[service.name] = union
            }
            let body = JSONValue.object(order.sorted().map { ($0, .array(tags[$0]!.sorted().map { .string($0) })) })
            return (max(s.catalogIndex, State.bootIndex), false, .json(body))
        }
    }

    func catalogService(_ call: Call) async throws(APIError) -> APIResponse {
        let name = call.rest
        let query = call.query
        return try await blockingRead(call) { s in
            let entries = self.catalogServiceRecords(s).filter { $0.name == name && self.tagsMatch($0, query) }.map { service in
                JSONValue.object([
                    ("ID", .string(self.nodeID)), ("Node", .string(self.settings.nodeName)),
                    ("Address", .string(self.settings.advertiseAddress)), ("Datacenter", .string(self.settings.datacenter)),
                    ("TaggedAddresses", .object([("lan", .string(self.settings.advertiseAddress))])),
                    ("NodeMeta", .object([("consul-network-segment", .string(""))])), ("ServiceKind", .string("")),
                    ("ServiceID", .string(service.id)), ("ServiceName", .string(service.name)),
                    ("ServiceTags", .array(service.tags.map { .string($0) })), ("ServiceAddress", .string(service.address)),
                    ("ServiceWeights", Self.defaultWeights), ("ServiceMeta", .object(service.meta.map { ($0.0, .string($0.1)) })),
                    ("ServicePort", .int(service.port)), ("ServiceEnableTagOverride", .bool(service.enableTagOverride)),
                    ("ServiceProxy", .object([])), ("ServiceConnect", .object([])),
                    ("CreateIndex", .int(service.createIndex)), ("ModifyIndex", .int(service.modifyIndex)),
                ])
            }
            return (self.serviceIndex(s, name), false, .json(.array(entries)))
        }
    }

    func catalogNodes(_ call: Call) async throws(APIError) -> APIResponse {
        try await blockingRead(call) { s in (State.bootIndex, false, .json(.array([self.nodeJSON(s.index)]))) }
    }

    func catalogNode(_ call: Call) async throws(APIError) -> APIResponse {
        let node = call.rest
        return try await blockingRead(call) { s in
            guard node == self.settings.nodeName else { return (max(s.catalogIndex, State.bootIndex), true, .json(.null)) }
            let services = self.catalogServiceRecords(s).map { ($0.id, self.serviceJSON($0, withIndexes: true)) }
            return (
                max(s.catalogIndex, State.bootIndex), false,
                .json(.object([("Node", self.nodeJSON(s.index)), ("Services", .object(services))]))
            )
        }
    }
}
