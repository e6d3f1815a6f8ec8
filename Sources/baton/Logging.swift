import BatonAgent
import BatonBootstrap
import BatonSettings
import Foundation
import Logging

/// Structured log lines on stderr in logfmt: `ts=… level=info msg="…" key=value`.
struct LogfmtHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    let label: String
    /// Where the last lines are also kept (`GET /report`).
    var recent: RecentLogLines? = nil

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = "ts=\(rfc3339Now()) level=\(event.level) msg=\(Self.quote(event.message.description))"
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for key in merged.keys.sorted() { line += " \(key)=\(Self.quote("\(merged[key]!)"))" }
        recent?.append(line)
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func quote(_ s: String) -> String {
        if !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:/@".contains($0) }) { return s }
        return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}

enum Logs {
    /// The daemons' last log lines, which their node API hands to `baton report`.
    static let recent = RecentLogLines(capacity: 500)

    /// logfmt on stderr: the one-shot commands, and the daemons until they have read their config.
    static func bootstrap(level: Logger.Level = .info) {
        LoggingSystem.bootstrap { label in
            var handler = LogfmtHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// The daemons' logs as the node's config asks (`log-format`), the last lines kept in ``recent``;
    /// read once at start (a change needs a restart of the daemon).
    static func bootstrap(_ settings: BootstrapSettings) {
        switch settings.logFormat {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = LogfmtHandler(label: label)
                handler.recent = recent
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                JSONLinesHandler(label: label, node: settings.node.value, cluster: settings.cluster.value, recent: recent)
            }
        }
    }
}
