import BatonSettings
import BatonCore
import BatonPostgres
import ConsulAPI
import Foundation

/// What a node's API answers to a member's signed `GET /report` (`baton report`): its monitor's last
/// log lines, pg_controldata, the tail of PostgreSQL's log and the node's file — passwords removed.
enum NodeDiagnostics {
    /// How much of PostgreSQL's log is sent.
    static let postgresLogBytes = 64 * 1024

    static func collect(settings: BootstrapSettings, recentLog: RecentLogLines?) async -> JSONValue {
        let control = PostgresControl(binDirectory: settings.pgBindir.value, dataDirectory: settings.pgdata.value, osUser: settings.pgOSUser)
        let controlData: JSONValue
        do { controlData = .string(try await control.controlDataText()) } catch { controlData = .string("pg_controldata failed: \(error)") }
        return Redaction.redact(
            .object([
                ("node", .string(settings.node.value)), ("cluster", .string(settings.cluster.value)), ("time", .string(rfc3339Now())),
                ("monitor_log", .array((recentLog?.all ?? []).map { .string($0) })),
                ("pg_controldata", controlData),
                ("postgresql_log", .string(tail(of: settings.postgresLog, bytes: postgresLogBytes) ?? "(cannot read \(settings.postgresLog))")),
                ("node_config", .string(settings.nodeConfigYAML())),
            ]))
    }

    /// The last `bytes` of a file, from the first whole line; nil when it cannot be read.
    static func tail(of path: String, bytes: Int) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }  // ignored: a read-only descriptor
        guard let size = try? handle.seekToEnd() else { return nil }
        let start = size > UInt64(bytes) ? size - UInt64(bytes) : 0
        guard (try? handle.seek(toOffset: start)) != nil, let data = try? handle.readToEnd() else { return nil }
        var text = String(decoding: data, as: UTF8.self)
        if start > 0, let newline = text.firstIndex(of: "\n") { text = String(text[text.index(after: newline)...]) }
        return text
    }
}
