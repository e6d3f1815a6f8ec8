import ConsulAPI

extension ConsulClient {
    /// Applies KV operations together at one index, or none (`PUT /v1/txn`): each sees what the earlier
    /// ones did. A rolled-back transaction is an outcome, not an error.
    /// - Throws: ``ConsulError`` when Consul cannot be reached or refuses the request itself.
    public func transaction(_ operations: [KVOperation], consistency: Consistency = .default, timeout: Duration? = nil) async throws
        -> TransactionOutcome
    {
        for op in operations { _ = try kvPath(op.key, allowEmpty: op.verb == .getTree || op.verb == .deleteTree) }
        var query: [(String, String?)] = []
        switch consistency {
        case .default: break
        case .consistent: query.append(("consistent", nil))
        case .stale: query.append(("stale", nil))
        }
        let body = JSONValue.array(operations.map(\.json)).serializedBytes()
        let response = try await send("PUT", "/v1/txn", query: query, body: body, timeout: timeout)
        guard response.status == 200 || response.status == 409 else { throw failure(response, "a transaction of \(operations.count) operations") }
        let json = try json(response, "a transaction")
        if response.status == 409 {
            let errors = json.member("Errors")?.arrayValue ?? []
            return .rolledBack(
                errors.map { TransactionError(operation: Int($0.member("OpIndex")?.uint64Value ?? 0), what: $0.member("What")?.stringValue ?? "") })
        }
        var entries: [KVPair] = []
        for result in json.member("Results")?.arrayValue ?? [] {
            guard let kv = result.member("KV") else { continue }
            do { entries.append(try KVPair(json: kv)) } catch {
                throw ConsulError(.decoding, "Consul's answer to a transaction has an entry that cannot be read: \(error)")
            }
        }
        return .committed(entries)
    }
}
