import BatonHTTP
import BatonConsulStore
import ConsulAPI

extension HTTPAPI {
    func kv(_ call: Call) async throws(APIError) -> APIResponse {
        switch call.request.method {
        case "GET": return try await kvGet(call)
        case "PUT": return try await kvPut(call)
        default: return try await kvDelete(call)
        }
    }

    private func validateKey(_ key: String, allowEmpty: Bool) throws(APIError) {
        if let problem = KeyPath.problem(with: key, allowEmpty: allowEmpty) { throw APIError(400, problem) }
    }

    private func kvGet(_ call: Call) async throws(APIError) -> APIResponse {
        let key = call.rest
        let query = call.query
        if query.has("keys") {
            try validateKey(key, allowEmpty: true)
            let separator = query.value("separator") ?? query.value("seperator") ?? ""
            return try await blockingRead(call) { s in
                var keys: [String] = []
                var seen = Set<String>()
                for k in s.kvPairs(prefix: key).map(\.key) {
                    var shown = k
                    if !separator.isEmpty, let range = k.dropFirst(key.count).range(of: separator) {
                        shown = String(k[..<range.upperBound])
                    }
                    if seen.insert(shown).inserted { keys.append(shown) }
                }
                let index = s.kvListIndex(prefix: key)
                if keys.isEmpty && !key.isEmpty { return (index, true, APIResponse(status: 404, headers: [], body: [])) }
                return (index, keys.isEmpty, .json(.array(keys.map { .string($0) })))
            }
        }
        if query.has("recurse") {
            try validateKey(key, allowEmpty: true)
            return try await blockingRead(call) { s in
                let entries = s.kvPairs(prefix: key)
                let index = s.kvListIndex(prefix: key)
                if entries.isEmpty { return (index, true, APIResponse(status: 404, headers: [], body: [])) }
                return (index, false, .json(.array(entries.map(\.json))))
            }
        }
        try validateKey(key, allowEmpty: false)
        let raw = query.has("raw")
        return try await blockingRead(call) { s in
            guard let entry = s.kv[key] else { return (s.kvIndex, true, APIResponse(status: 404, headers: [], body: [])) }
            if raw {
                return (
                    entry.modifyIndex, false,
                    APIResponse(
                        status: 200,
                        headers: [
                            ("Content-Type", "text/plain"), ("X-Content-Type-Options", "nosniff"),
                            ("Content-Security-Policy", "sandbox"),
                        ], body: entry.value ?? [])
                )
            }
            return (entry.modifyIndex, false, .json(.array([entry.json])))
        }
    }

    private static func parseUnsigned(_ text: String) throws(APIError) -> UInt64 {
        guard let value = UInt64(text) else {
            throw APIError(500, "strconv.ParseUint: parsing \"\(text)\": invalid syntax")
        }
        return value
    }

    private func kvPut(_ call: Call) async throws(APIError) -> APIResponse {
        let key = call.rest
        let query = call.query
        try validateKey(key, allowEmpty: false)
        let modes = ["cas", "acquire", "release"].filter { query.has($0) }
        if modes.count > 1 { throw APIError(400, "Conflicting flags: \(query.raw)") }
        let flags = try query.value("flags").map { (t) throws(APIError) -> UInt64 in try Self.parseUnsigned(t) } ?? 0
        if call.request.body.count > settings.maxValueSize {
            throw APIError(
                413,
                "Request body(\(call.request.body.count) bytes) too large, max size: \(settings.maxValueSize) bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
            )
        }
        let mode: Operations.PutMode
        if let cas = query.value("cas") {
            mode = .cas(try Self.parseUnsigned(cas))
        } else if let session = query.value("acquire") {
            mode = .acquire(session)
        } else if let session = query.value("release") {
            mode = .release(session)
        } else {
            mode = .plain
        }
        let value: [UInt8]? = call.request.body.isEmpty ? nil : call.request.body
        let applied = try await store.write { s, index, now throws(APIError) in
            try Operations.put(s, index: index, now: now, key: key, value: value, flags: flags, mode: mode)
        }
        return .json(.bool(applied))
    }

    private func kvDelete(_ call: Call) async throws(APIError) -> APIResponse {
        let key = call.rest
        let query = call.query
        if query.has("recurse") && query.has("cas") { throw APIError(400, "Conflicting flags: \(query.raw)") }
        if query.has("recurse") {
            try validateKey(key, allowEmpty: true)
            let done = try await store.write { s, _, _ in Operations.deleteTree(s, prefix: key) }
            return .json(.bool(done))
        }
        try validateKey(key, allowEmpty: false)
        let cas = try query.value("cas").map { (t) throws(APIError) -> UInt64 in try Self.parseUnsigned(t) }
        let done = try await store.write { s, _, _ in Operations.delete(s, key: key, cas: cas) }
        return .json(.bool(done))
    }
}
