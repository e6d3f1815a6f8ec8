import BatonAgent
import ConsulAPI
import Logging
import Testing

/// `log-format: json`: one object a line with the fixed keys a log shipper can rely on (issue 25).
@Suite("JSON log lines")
struct JSONLinesHandlerTests {
    let handler = JSONLinesHandler(label: "baton.monitor", node: "pg1", cluster: "prod")

    func parse(_ line: String) throws -> JSONValue { try JSONValue.parse(Array(line.utf8)) }

    @Test("the fixed keys come first; event and reason from the metadata; the rest follows under its own keys")
    func fixedKeys() throws {
        let line = handler.line(.notice, "Cluster event", metadata: ["event": "promote", "reason": "promoted to primary on timeline 3", "monitor.timeline": "3"], time: "2026-12-06T17:00:00Z")
        let object = try parse(line)
        #expect(object.objectValue?.map(\.0) == ["time", "level", "node", "cluster", "event", "reason", "message", "logger", "monitor.timeline"])
        #expect(object.member("time")?.stringValue == "2026-12-06T17:00:00Z" && object.member("level")?.stringValue == "notice")
        #expect(object.member("node")?.stringValue == "pg1" && object.member("cluster")?.stringValue == "prod")
        #expect(object.member("event")?.stringValue == "promote" && object.member("reason")?.stringValue == "promoted to primary on timeline 3")
        #expect(object.member("monitor.timeline")?.stringValue == "3")
        #expect(!line.contains("\n"))
    }

    @Test("without event metadata the message is the event; the reason is the error, else null; quotes and newlines stay inside one line")
    func fallbacks() throws {
        let failed = try parse(handler.line(.warning, "Cannot read the cluster from Consul", metadata: ["error": "connection refused \"x\"\nline two"], time: "t"))
        #expect(failed.member("event")?.stringValue == "Cannot read the cluster from Consul")
        #expect(failed.member("reason")?.stringValue == "connection refused \"x\"\nline two")
        #expect(failed.member("error")?.stringValue == "connection refused \"x\"\nline two")
        let plain = try parse(handler.line(.info, "Monitor starting", metadata: nil, time: "t"))
        #expect(plain.member("reason") == .null && plain.member("event")?.stringValue == "Monitor starting")
    }
}

@Suite("recent log lines")
struct RecentLogLinesTests {
    @Test("keeps the last lines, oldest first")
    func ring() {
        let recent = RecentLogLines(capacity: 3)
        #expect(recent.all.isEmpty)
        for i in 1...2 { recent.append("\(i)") }
        #expect(recent.all == ["1", "2"])
        for i in 3...7 { recent.append("\(i)") }
        #expect(recent.all == ["5", "6", "7"])
        let handler = JSONLinesHandler(label: "l", node: "pg1", cluster: "c", recent: recent)
        handler.log(event: LogEvent(level: .info, message: "kept", metadata: nil, source: "t", file: #fileID, function: #function, line: #line))
        #expect(recent.all.last?.contains("\"message\":\"kept\"") == true)
    }
}
