import BatonConsulStore
import BatonHTTP
import ConsulAPI

extension HTTPAPI {
    /// `PUT /v1/txn`: KV operations applied all together at one index, or none (consul-api.md §3).
    /// A transaction of reads and checks alone is served as a read (consistency flags honoured).
    func transaction(_ call: Call) async throws(APIError) -> APIResponse {
        let body: JSONValue
        do { body = try JSONValue.parse(call.request.body) } catch { throw APIError(400, "Failed to parse body: \(error.message)") }
        guard let items = body.arrayValue else { throw APIError(400, "Failed to parse body: the body must be a JSON array of operations") }
        guard items.count <= Operations.maximumTransactionOperations else {
            throw APIError(413, "Transaction contains too many operations (\(items.count) > \(Operations.maximumTransactionOperations))")
        }
        var parsed: [KVOperation] = []
        for item in items {
            do { parsed.append(try KVOperation(json: item)) } catch { throw APIError(400, "Failed to parse body: \(error.message)") }
        }
        let operations = parsed
        for op in operations where (op.value?.count ?? 0) > settings.maxValueSize {
            throw APIError(413, "Value for key \"\(op.key)\" is too large (\(op.value?.count ?? 0) > \(settings.maxValueSize) bytes)")
        }
        let outcome: TransactionOutcome
        var headers: [(String, String)] = []
        if operations.allSatisfy(\.verb.readOnly) {
            outcome = try store.read { s throws(APIError) in try Operations.transaction(s, index: s.index, now: .now, operations: operations).result }
            headers = leaderHeaders
        } else {
            outcome = try await store.write { s, index, now throws(APIError) in try Operations.transaction(s, index: index, now: now, operations: operations) }
        }
        switch outcome {
        case .committed(let entries):
            let results = JSONValue.array(entries.map { .object([("KV", $0.json)]) })
            return .json(.object([("Results", results), ("Errors", .null)]), headers: headers)
        case .rolledBack(let errors):
            let list = JSONValue.array(errors.map { .object([("OpIndex", .int($0.operation)), ("What", .string($0.what))]) })
            let body = JSONValue.object([("Results", .null), ("Errors", list)]).serializedBytes()
            return APIResponse(status: 409, headers: headers + [("Content-Type", "application/json")], body: body)
        }
    }
}
