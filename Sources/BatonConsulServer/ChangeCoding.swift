import BatonConsulStore
import ConsulAPI

/// How changes are written to the log and read back.
enum ChangeCoding {
    static func encode(_ changes: [Change], index: UInt64) -> JSONValue {
        .object([
            ("index", .int(index)),
            ("changes", .array(changes.compactMap(encode))),
        ])
    }

    private static func encode(_ change: Change) -> JSONValue? {
        switch change {
        case .kvPut(let pair): return .object([("op", .string("kv")), ("v", pair.json)])
        case .kvDelete(let key): return .object([("op", .string("kv-")), ("key", .string(key))])
        case .sessionPut(let s): return .object([("op", .string("session")), ("v", s.json)])
        case .sessionDelete(let id): return .object([("op", .string("session-")), ("id", .string(id))])
        case .servicePut(let s): return .object([("op", .string("service")), ("v", encode(s))])
        case .serviceDelete(let id): return .object([("op", .string("service-")), ("id", .string(id))])
        case .checkPut(let c): return .object([("op", .string("check")), ("v", encode(c))])
        case .checkDelete(let id): return .object([("op", .string("check-")), ("id", .string(id))])
        case .tombstonesReaped(let upTo): return .object([("op", .string("reap")), ("upTo", .int(upTo))])
        case .lockDelay: return nil
        }
    }

    static func decode(_ json: JSONValue) throws -> (index: UInt64, changes: [Change]) {
        guard let index = json.member("index")?.uint64Value, let items = json.member("changes")?.arrayValue else {
            throw ConsulDecodingError("log record without index or changes")
        }
        var changes: [Change] = []
        for item in items {
            let value = item.member("v") ?? .null
            switch item.member("op")?.stringValue {
            case "kv": changes.append(.kvPut(try KVPair(json: value)))
            case "kv-": changes.append(.kvDelete(key: try string(item, "key")))
            case "session": changes.append(.sessionPut(try SessionEntry(json: value)))
            case "session-": changes.append(.sessionDelete(id: try string(item, "id")))
            case "service": changes.append(.servicePut(try decodeService(value)))
            case "service-": changes.append(.serviceDelete(id: try string(item, "id")))
            case "check": changes.append(.checkPut(try decodeCheck(value)))
            case "check-": changes.append(.checkDelete(id: try string(item, "id")))
            case "reap":
                guard let upTo = item.member("upTo")?.uint64Value else { throw ConsulDecodingError("log record without upTo") }
                changes.append(.tombstonesReaped(upTo: upTo))
            default: throw ConsulDecodingError("log record with an unknown change")
            }
        }
        return (index, changes)
    }

    private static func string(_ json: JSONValue, _ name: String) throws -> String {
        guard let s = json.member(name)?.stringValue else { throw ConsulDecodingError("log record without \(name)") }
        return s
    }

    static func encode(_ s: ServiceRecord) -> JSONValue {
        .object([
            ("ID", .string(s.id)), ("Service", .string(s.name)), ("Tags", .array(s.tags.map { .string($0) })),
            ("Address", .string(s.address)), ("Port", .int(s.port)),
            ("Meta", .object(s.meta.map { ($0.0, .string($0.1)) })), ("EnableTagOverride", .bool(s.enableTagOverride)),
            ("CreateIndex", .int(s.createIndex)), ("ModifyIndex", .int(s.modifyIndex)),
        ])
    }

    static func decodeService(_ j: JSONValue) throws -> ServiceRecord {
        ServiceRecord(
            id: try string(j, "ID"), name: try string(j, "Service"),
            tags: j.member("Tags")?.arrayValue?.compactMap(\.stringValue) ?? [],
            address: j.member("Address")?.stringValue ?? "", port: Int(j.member("Port")?.int64Value ?? 0),
            meta: (j.member("Meta")?.objectValue ?? []).map { ($0.0, $0.1.stringValue ?? "") },
            enableTagOverride: j.member("EnableTagOverride")?.boolValue ?? false,
            createIndex: j.member("CreateIndex")?.uint64Value ?? 0, modifyIndex: j.member("ModifyIndex")?.uint64Value ?? 0)
    }

    static func encode(_ c: CheckRecord) -> JSONValue {
        var kind: [(String, JSONValue)]
        switch c.kind {
        case .serf: kind = [("Kind", .string("serf"))]
        case .ttl(let ttl): kind = [("Kind", .string("ttl")), ("TTL", .int(ttl.nanoseconds))]
        case .http(let url, let method, let headers, let body, let skip):
            kind = [
                ("Kind", .string("http")), ("HTTP", .string(url)), ("Method", .string(method)),
                ("Header", .object(headers.sorted { $0.key < $1.key }.map { ($0.key, .array($0.value.map { .string($0) })) })),
                ("Body", .string(body)), ("TLSSkipVerify", .bool(skip)),
            ]
        case .tcp(let address): kind = [("Kind", .string("tcp")), ("TCP", .string(address))]
        }
        var members: [(String, JSONValue)] = [
            ("CheckID", .string(c.id)), ("Name", .string(c.name)), ("Status", .string(c.status)), ("Notes", .string(c.notes)),
            ("Output", .string(c.output)), ("ServiceID", .string(c.serviceID)), ("ServiceName", .string(c.serviceName)),
            ("CreateIndex", .int(c.createIndex)), ("ModifyIndex", .int(c.modifyIndex)),
        ]
        members += kind
        if let i = c.interval { members.append(("Interval", .int(i.nanoseconds))) }
        if let t = c.timeout { members.append(("Timeout", .int(t.nanoseconds))) }
        if let d = c.deregisterCriticalServiceAfter { members.append(("Deregister", .int(d.nanoseconds))) }
        return .object(members)
    }

    static func decodeCheck(_ j: JSONValue) throws -> CheckRecord {
        func duration(_ name: String) -> GoDuration? { j.member(name)?.int64Value.map { GoDuration(nanoseconds: $0) } }
        let kind: CheckRecord.Kind
        switch j.member("Kind")?.stringValue {
        case "serf": kind = .serf
        case "ttl": kind = .ttl(duration("TTL") ?? .seconds(10))
        case "http":
            var headers: [String: [String]] = [:]
            for (k, v) in j.member("Header")?.objectValue ?? [] { headers[k] = v.arrayValue?.compactMap(\.stringValue) ?? [] }
            kind = .http(
                url: try string(j, "HTTP"), method: j.member("Method")?.stringValue ?? "GET", headers: headers,
                body: j.member("Body")?.stringValue ?? "", tlsSkipVerify: j.member("TLSSkipVerify")?.boolValue ?? false)
        case "tcp": kind = .tcp(try string(j, "TCP"))
        default: throw ConsulDecodingError("log record with an unknown check kind")
        }
        return CheckRecord(
            id: try string(j, "CheckID"), name: j.member("Name")?.stringValue ?? "", status: j.member("Status")?.stringValue ?? "critical",
            notes: j.member("Notes")?.stringValue ?? "", output: j.member("Output")?.stringValue ?? "",
            serviceID: j.member("ServiceID")?.stringValue ?? "", serviceName: j.member("ServiceName")?.stringValue ?? "", kind: kind,
            interval: duration("Interval"), timeout: duration("Timeout"), deregisterCriticalServiceAfter: duration("Deregister"),
            createIndex: j.member("CreateIndex")?.uint64Value ?? 0, modifyIndex: j.member("ModifyIndex")?.uint64Value ?? 0)
    }

    /// The whole state as one record, for a snapshot.
    static func snapshot(of state: State) -> JSONValue {
        var changes: [Change] = []
        changes += state.kv.keys.sorted().map { .kvPut(state.kv[$0]!) }
        changes += state.tombstones.keys.sorted().map { .kvDelete(key: $0) }
        changes += state.sessions.keys.sorted().map { .sessionPut(state.sessions[$0]!) }
        changes += state.services.keys.sorted().map { .servicePut(state.services[$0]!) }
        changes += state.checks.keys.sorted().map { .checkPut(state.checks[$0]!) }
        var json = encode(changes, index: state.index)
        // Tombstones keep their own indexes, and the table indexes must survive too.
        if case .object(var members) = json {
            members.append(("tombstones", .object(state.tombstones.sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) })))
            members.append(("kvIndex", .int(state.kvIndex)))
            members.append(("sessionsIndex", .int(state.sessionsIndex)))
            members.append(("catalogIndex", .int(state.catalogIndex)))
            members.append(("serviceIndex", .object(state.serviceIndex.sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) })))
            json = .object(members)
        }
        return json
    }

    static func restore(snapshot json: JSONValue, now: ContinuousClock.Instant) throws -> State {
        var state = State()
        let (index, changes) = try decode(json)
        state.apply(changes, index: index, now: now)
        for (key, deleted) in json.member("tombstones")?.objectValue ?? [] { state.tombstones[key] = deleted.uint64Value ?? index }
        // Tombstones loaded at a start are reaped a TTL after it.
        if let newest = state.tombstones.values.max() { state.tombstoneMarks = [(now, newest)] }
        state.kvIndex = json.member("kvIndex")?.uint64Value ?? index
        state.sessionsIndex = json.member("sessionsIndex")?.uint64Value ?? index
        state.catalogIndex = json.member("catalogIndex")?.uint64Value ?? index
        for (name, i) in json.member("serviceIndex")?.objectValue ?? [] { state.serviceIndex[name] = i.uint64Value ?? index }
        return state
    }
}
