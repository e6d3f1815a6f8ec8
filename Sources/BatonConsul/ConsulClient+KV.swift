import ConsulAPI

/// How a KV write treats the existing entry.
public enum KVWriteMode: Sendable, Equatable {
    /// Overwrite whatever is there (a lock held on the key stays held).
    case plain
    /// Write only if the key's ModifyIndex is this one; 0 means "only if the key does not exist".
    case cas(UInt64)
    /// Write and take the key's lock for this session, if free or already ours.
    case acquire(session: String)
    /// Write and give up the key's lock held by this session. The body replaces the value.
    case release(session: String)
}

extension ConsulClient {
    func kvPath(_ key: String, allowEmpty: Bool) throws -> String {
        if let problem = KeyPath.problem(with: key, allowEmpty: allowEmpty) {
            throw ConsulError(.invalidArgument, "KV key \"\(key)\" cannot be used: \(problem)")
        }
        return "/v1/kv/" + KeyPath.escape(key)
    }

    /// Reads one key; `nil` when it does not exist. `timeout` replaces the configured request timeout
    /// (a call that must answer within what is left of a deadline).
    public func get(_ key: String, _ options: QueryOptions = .immediate, timeout: Duration? = nil) async throws -> QueryResult<KVPair?> {
        let response = try await read(try kvPath(key, allowEmpty: false), options, timeout: timeout)
        if response.status == 404 { return result(response, nil) }
        guard response.status == 200 else { throw failure(response, "reading key \(key)") }
        guard let first = try json(response, "a KV read").arrayValue?.first else {
            throw ConsulError(.decoding, "Consul's answer for key \(key) is not a list of entries")
        }
        return result(response, try KVPair(json: first))
    }

    /// Reads every key under `prefix` (a plain string prefix), sorted by key; `[]` when none.
    public func list(_ prefix: String, _ options: QueryOptions = .immediate) async throws -> QueryResult<[KVPair]> {
        let response = try await read(try kvPath(prefix, allowEmpty: true), options, extra: [("recurse", nil)])
        if response.status == 404 { return result(response, []) }
        guard response.status == 200 else { throw failure(response, "listing \(prefix)") }
        guard let items = try json(response, "a KV listing").arrayValue else {
            throw ConsulError(.decoding, "Consul's listing of \(prefix) is not a list")
        }
        var pairs: [KVPair] = []
        for item in items { pairs.append(try KVPair(json: item)) }
        return result(response, pairs)
    }

    /// The keys under `prefix`, cut after the first `separator` that follows the prefix.
    public func keys(_ prefix: String, separator: String? = nil, _ options: QueryOptions = .immediate) async throws
        -> QueryResult<[String]>
    {
        var extra: [(String, String?)] = [("keys", nil)]
        if let separator { extra.append(("separator", separator)) }
        let response = try await read(try kvPath(prefix, allowEmpty: true), options, extra: extra)
        if response.status == 404 { return result(response, []) }
        guard response.status == 200 else { throw failure(response, "listing keys under \(prefix)") }
        return result(response, try json(response, "a key listing").arrayValue?.compactMap(\.stringValue) ?? [])
    }

    /// Writes `value` under `key`. Returns whether Consul applied the write (`false` for a lost
    /// check-and-set or a lock held by another session).
    /// - Throws: ``ConsulError`` `.sessionNotFound` when acquiring with a session that does not exist.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], flags: UInt64 = 0, mode: KVWriteMode = .plain, timeout: Duration? = nil) async throws -> Bool {
        var query: [(String, String?)] = []
        if flags != 0 { query.append(("flags", String(flags))) }
        switch mode {
        case .plain: break
        case .cas(let index): query.append(("cas", String(index)))
        case .acquire(let session): query.append(("acquire", session))
        case .release(let session): query.append(("release", session))
        }
        let response = try await send("PUT", try kvPath(key, allowEmpty: false), query: query, body: value, timeout: timeout)
        guard response.status == 200 else { throw failure(response, "writing key \(key)") }
        return response.text.contains("true")
    }

    @discardableResult
    public func put(_ key: String, _ value: String, flags: UInt64 = 0, mode: KVWriteMode = .plain, timeout: Duration? = nil) async throws -> Bool {
        try await put(key, Array(value.utf8), flags: flags, mode: mode, timeout: timeout)
    }

    /// A check-and-set write that must win: throws `.casConflict` when the key changed since `index`.
    public func compareAndSet(_ key: String, _ value: [UInt8], index: UInt64) async throws {
        guard try await put(key, value, mode: .cas(index)) else {
            throw ConsulError(
                .casConflict,
                index == 0 ? "key \(key) already exists" : "key \(key) changed since index \(index) (check-and-set conflict)")
        }
    }

    /// Deletes one key (a missing key is not an error). With `cas`, only if its ModifyIndex matches.
    @discardableResult
    public func delete(_ key: String, cas: UInt64? = nil) async throws -> Bool {
        let query: [(String, String?)] = cas.map { [("cas", String($0))] } ?? []
        let response = try await send("DELETE", try kvPath(key, allowEmpty: false), query: query)
        guard response.status == 200 else { throw failure(response, "deleting key \(key)") }
        return response.text.contains("true")
    }

    /// Deletes every key that starts with `prefix`, in one write.
    public func deleteTree(_ prefix: String) async throws {
        let response = try await send("DELETE", try kvPath(prefix, allowEmpty: true), query: [("recurse", nil)])
        guard response.status == 200 else { throw failure(response, "deleting keys under \(prefix)") }
    }
}
