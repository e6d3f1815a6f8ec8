import ConsulAPI
import Foundation
import Logging

/// One JSON object a line on stderr, with fixed keys first — `time`, `level`, `node`, `cluster`,
/// `event`, `reason`, `message` — so that a log shipper needs no parser: `event` is the line's
/// `event` metadata (a cluster event's kind, a decision's kind) or else its message; `reason` its
/// `reason` metadata, else its `error`, else null. The rest of the metadata follows under its own keys.
public struct JSONLinesHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let node: String
    let cluster: String
    /// Where the last lines are also kept (`GET /report`).
    let recent: RecentLogLines?

    public init(label: String, node: String, cluster: String, recent: RecentLogLines? = nil) {
        (self.label, self.node, self.cluster, self.recent) = (label, node, cluster, recent)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let text = line(event.level, event.message.description, metadata: event.metadata, time: rfc3339Now())
        recent?.append(text)
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// The line for one log call (without its newline).
    public func line(_ level: Logger.Level, _ message: String, metadata extra: Logger.Metadata?, time: String) -> String {
        var merged = metadata.merging(extra ?? [:]) { _, new in new }
        let event = merged.removeValue(forKey: "event").map { "\($0)" } ?? message
        let reason = (merged.removeValue(forKey: "reason") ?? merged["error"]).map { JSONValue.string("\($0)") } ?? .null
        var fields: [(String, JSONValue)] = [
            ("time", .string(time)), ("level", .string(level.rawValue)), ("node", .string(node)), ("cluster", .string(cluster)),
            ("event", .string(event)), ("reason", reason), ("message", .string(message)), ("logger", .string(label)),
        ]
        let fixed = Set(fields.map(\.0))
        for key in merged.keys.sorted() where !fixed.contains(key) { fields.append((key, .string("\(merged[key]!)"))) }
        return JSONValue.object(fields).serialized()
    }
}
