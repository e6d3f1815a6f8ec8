import BatonConsulStore
import BatonHTTP
import ConsulAPI

extension HTTPAPI {
    /// The first member of this server's snapshot record: what `PUT /v1/snapshot` accepts.
    static let snapshotFormat = "baton-consul-snapshot 1"

    /// `GET /v1/snapshot`: the whole store — keys, tombstones, sessions, services, checks and the
    /// indexes — as one record at `X-Consul-Index`. Consul's own snapshots are a gzipped archive of
    /// Raft state that only Consul restores; this server's are JSON (`Content-Type: application/json`)
    /// that only this server restores. For backups, drills (`baton consul snapshot save|restore`) and
    /// the chaos suite's `consul-restore`.
    func saveSnapshot(_ call: Call) throws(APIError) -> APIResponse {
        let (record, index) = try store.read { s throws(APIError) in (ChangeCoding.snapshot(of: s), s.index) }
        guard case .object(let members) = record else { throw APIError(500, "the snapshot record is not an object") }
        let body = JSONValue.object([("format", .string(Self.snapshotFormat))] + members).serializedBytes()
        return APIResponse(status: 200, headers: [("Content-Type", "application/json"), ("X-Consul-Index", String(index))], body: body)
    }

    /// `PUT /v1/snapshot`: replaces the whole store with a snapshot `GET /v1/snapshot` gave (as Consul's
    /// restore does: keys, sessions and indexes roll back; sessions that come back count their TTL
    /// from now). A body that is not such a record is refused and changes nothing.
    func restoreSnapshot(_ call: Call) async throws(APIError) -> APIResponse {
        let record: JSONValue
        do { record = try JSONValue.parse(call.request.body) } catch { throw APIError(400, "Failed to parse the snapshot: \(error.message)") }
        guard record.member("format")?.stringValue == Self.snapshotFormat else {
            throw APIError(400, "not a snapshot of this server (\"format\": \"\(Self.snapshotFormat)\" expected); Consul's own archives restore only into Consul")
        }
        let restored: State
        do { restored = try ChangeCoding.restore(snapshot: record, now: .now) } catch { throw APIError(400, "the snapshot does not read: \(error)") }
        try await store.restore(restored)
        return APIResponse(status: 200, headers: [], body: [])
    }
}
