import BatonCore
import BatonPostgres
import Foundation

/// The monitor's view of its own PostgreSQL: one libpq connection over the Unix socket, reopened when
/// it breaks, and the files that say what the data directory is.
final class LocalPostgresProbe: @unchecked Sendable {
    // @unchecked: used by the monitor loop only, one call at a time.
    let conninfo: String
    let dataDirectory: String
    private var connection: PostgresConnection?

    init(socketDirectory: String, port: Int, dataDirectory: String) {
        conninfo = ConnInfo.make([
            ("host", socketDirectory), ("port", String(port)), ("user", "postgres"), ("dbname", "postgres"), ("connect_timeout", "2"),
            ("application_name", "baton-monitor"), ("options", "-c statement_timeout=2000"),
        ])
        self.dataDirectory = dataDirectory
    }

    var hasStandbySignal: Bool { FileManager.default.fileExists(atPath: dataDirectory + "/standby.signal") }

    /// Runs `sql` on the local server, reconnecting once if the connection was lost.
    func query(_ sql: String, _ parameters: [String?] = []) async throws -> [[String?]] {
        for attempt in 0..<2 {
            do {
                if connection == nil { connection = try await PostgresConnection.connect(conninfo) }
                return try await connection!.query(sql, parameters)
            } catch {
                connection?.close()
                connection = nil
                if attempt == 1 { throw error }
            }
        }
        throw PostgresError("unreachable")
    }

    func observe() async -> LocalPostgres {
        do {
            let rows = try await query(
                """
                SELECT pg_is_in_recovery(),
                       CASE WHEN pg_is_in_recovery()
                            THEN greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0'))::text
                            ELSE pg_current_wal_lsn()::text END,
                       (SELECT timeline_id FROM pg_control_checkpoint())::text,
                       (SELECT status FROM pg_stat_wal_receiver),
                       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver),
                       (SELECT received_tli::text FROM pg_stat_wal_receiver)
                """)
            guard let row = rows.first, let position = row[1].flatMap({ try? LSN(parsing: $0) }) else { return .down(standbySignal: hasStandbySignal) }
            var timeline = Int(row[2] ?? "") ?? 1
            if row[0] == "t" {
                if let received = row[5].flatMap({ Int($0) }) { timeline = max(timeline, received) }
                let upstream = try? currentUpstream()
                return .standby(position: position, timeline: timeline, upstream: upstream ?? row[4], streaming: row[3] == "streaming")
            }
            return .primary(position: position, timeline: timeline)
        } catch {
            return .down(standbySignal: hasStandbySignal)
        }
    }

    /// The host:port baton.conf's primary_conninfo names (what the standby is told to follow).
    func currentUpstream() throws -> String? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/" + PostgresFiles.settingsFile, encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("primary_conninfo") })
        else { return nil }
        var host: String?
        var port: String?
        for word in line.split(whereSeparator: { $0 == " " || $0 == "'" }) {
            if word.hasPrefix("host=") { host = String(word.dropFirst(5)) }
            if word.hasPrefix("port=") { port = String(word.dropFirst(5)) }
        }
        guard let host, let port else { return nil }
        return "\(host):\(port)"
    }

    func close() {
        connection?.close()
        connection = nil
    }
}
