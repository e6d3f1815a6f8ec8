import BatonCore
import BatonPostgres
import Foundation

/// The statements the monitor sends its PostgreSQL, typed: the SQL lives here once, and a test's
/// fake answers each call as what it means, never by matching SQL text.
extension PostgresNode {
    public func checkpoint(timeout: Duration) async throws {
        _ = try await query("CHECKPOINT", [], timeout: timeout)
    }

    public func checkpointTimeline() async throws -> Int {
        try await query("SELECT timeline_id FROM pg_control_checkpoint()").first?.first?.flatMap { Int($0) } ?? 1
    }

    public func checkpointBehindTimeline() async throws -> Bool {
        try await query(
            "SELECT (SELECT timeline_id FROM pg_control_checkpoint()) < ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
        ).first?.first == "t"
    }

    public func replayPosition() async throws -> LSN? {
        try await position("SELECT pg_last_wal_replay_lsn()::text")
    }

    public func currentPosition() async throws -> LSN? {
        try await position("SELECT pg_current_wal_lsn()::text")
    }

    public func pendingRestart() async throws -> [String] {
        try await query("SELECT name FROM pg_settings WHERE pending_restart ORDER BY name").compactMap { $0.first ?? nil }
    }

    public func slots() async throws -> [SlotReport] {
        try await query(
            "SELECT slot_name, active, coalesce((pg_current_wal_lsn() - restart_lsn)::bigint, 0), wal_status FROM pg_replication_slots WHERE slot_type = 'physical'"
        ).compactMap { row in
            guard row.count == 4, let name = row[0] else { return nil }
            return SlotReport(name: name, active: row[1] == "t", retainedBytes: row[2].flatMap { UInt64($0) } ?? 0, walStatus: row[3])
        }
    }

    public func createSlot(_ name: String) async throws {
        _ = try await query("SELECT pg_create_physical_replication_slot($1, true)", [name], timeout: .seconds(5))
    }

    public func dropSlot(_ name: String) async throws {
        _ = try await query("SELECT pg_drop_replication_slot($1)", [name], timeout: .seconds(5))
    }

    public func synchronousStandbyNames() async throws -> String {
        try await query("SHOW synchronous_standby_names").first?.first??.trimmingCharacters(in: .whitespaces) ?? ""
    }

    public func replicationPeers() async throws -> [ReplicationPeer] {
        try await query("SELECT application_name, state, flush_lsn::text FROM pg_stat_replication").compactMap { row in
            guard row.count == 3, let name = row[0].flatMap({ try? NodeName($0) }) else { return nil }
            return ReplicationPeer(name: name, streaming: row[1] == "streaming", flushPosition: row[2].flatMap { try? LSN(parsing: $0) } ?? LSN(0))
        }
    }

    public func replicationLag() async throws -> [(standby: String, bytes: UInt64, seconds: Double?)] {
        try await query(
            "SELECT application_name, greatest(0, pg_current_wal_lsn() - flush_lsn)::bigint, extract(epoch FROM replay_lag) FROM pg_stat_replication"
        ).compactMap { row in
            guard row.count == 3, let name = row[0], let bytes = row[1].flatMap({ UInt64($0) }) else { return nil }
            return (name, bytes, row[2].flatMap { Double($0) })
        }
    }

    public func archiverStatistics() async throws -> ArchiverStatistics {
        let row = try await query(
            "SELECT failed_count, extract(epoch FROM last_archived_time), extract(epoch FROM last_failed_time), last_failed_wal FROM pg_stat_archiver"
        ).first ?? []
        guard row.count == 4, let failed = row[0].flatMap({ UInt64($0) }) else { throw PostgresError("pg_stat_archiver gave no row") }
        return ArchiverStatistics(failedCount: failed, lastArchivedAt: row[1].flatMap { Double($0) }, lastFailedAt: row[2].flatMap { Double($0) }, lastFailedWAL: row[3])
    }

    private func position(_ sql: String) async throws -> LSN? {
        try await query(sql).first?.first?.flatMap { try? LSN(parsing: $0) }
    }
}
