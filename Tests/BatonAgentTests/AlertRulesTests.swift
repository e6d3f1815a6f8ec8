import Foundation
import Testing

/// Deploy/prometheus and Deploy/grafana: the alerting rules pass Prometheus' own checker and their
/// unit tests, the dashboard's queries are PromQL Prometheus parses, and both use only metrics the
/// monitor serves (issue 25).
@Suite("Prometheus alerting rules and the Grafana dashboard")
struct AlertRulesTests {
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/prometheus").standardized.path
    static let grafana = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/grafana").standardized.path
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/BatonAgent").standardized.path

    /// Runs promtool (Debian's prometheus package; `.ci/run` installs it) and returns its status and output.
    func promtool(_ arguments: [String], in directory: String = deploy) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    @Test("promtool check rules and promtool test rules pass")
    func promtoolPasses() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool"), "promtool is missing: apt-get install prometheus (.ci/run does)")
        let check = try promtool(["check", "rules", "baton-alerts.yml"])
        #expect(check.0 == 0, "\(check.1)")
        let test = try promtool(["test", "rules", "baton-alerts.test.yml"])
        #expect(test.0 == 0, "\(test.1)")
    }

    /// The metric names (`baton_…`) in a text, and the monitor's code.
    func metricNames(in text: String) -> Set<String> {
        Set(text.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).map(String.init).filter { $0.hasPrefix("baton_") })
    }
    func monitorCode() throws -> String {
        try FileManager.default.contentsOfDirectory(atPath: Self.sources).filter { $0.hasSuffix(".swift") }
            .map { try String(contentsOfFile: Self.sources + "/" + $0, encoding: .utf8) }.joined()
    }

    @Test("every metric the rules use is one the monitor records")
    func rulesUseServedMetrics() throws {
        let used = metricNames(in: try String(contentsOfFile: Self.deploy + "/baton-alerts.yml", encoding: .utf8))
        let code = try monitorCode()
        #expect(used.count >= 8, "\(used)")
        for name in used { #expect(code.contains("\"\(name)\""), "\(name) is not a metric the monitor records") }
    }

    /// Every panel's queries, with the dashboard's variables given the values Grafana would.
    func dashboardQueries() throws -> [(panel: String, expr: String)] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.grafana + "/baton-dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        let ids = panels.compactMap { $0["id"] as? Int }
        #expect(ids.count == panels.count && Set(ids).count == ids.count, "every panel needs its own id")
        var queries: [(String, String)] = []
        for panel in panels where panel["type"] as? String != "row" {
            let title = panel["title"] as? String ?? "?"
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "panel \(title) has no query")
            for target in targets {
                let expr = try #require(target["expr"] as? String, "panel \(title)")
                queries.append((title, expr.replacingOccurrences(of: "$__rate_interval", with: "1m").replacingOccurrences(of: "$cluster", with: ".*")))
            }
        }
        return queries
    }

    @Test("the Grafana dashboard's queries parse as PromQL (promtool) and use only metrics the monitor records")
    func dashboardQueriesAreValid() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool"), "promtool is missing: apt-get install prometheus (.ci/run does)")
        let queries = try dashboardQueries()
        #expect(queries.count >= 15)
        let code = try monitorCode()
        for name in metricNames(in: queries.map(\.expr).joined(separator: "\n")) {
            #expect(code.contains("\"\(name)\""), "\(name) is not a metric the monitor records")
        }
        // promtool parses rule files: every query as a recording rule of its own.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("baton-dashboard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }  // ignored: a temporary directory left behind
        var rules = "groups:\n  - name: dashboard\n    rules:\n"
        for (i, query) in queries.enumerated() {
            let quoted = String(decoding: try JSONSerialization.data(withJSONObject: query.expr, options: .fragmentsAllowed), as: UTF8.self)
            rules += "      - record: dashboard:query\(i)\n        expr: \(quoted)\n"
        }
        try rules.write(to: directory.appendingPathComponent("dashboard.yml"), atomically: true, encoding: .utf8)
        let check = try promtool(["check", "rules", "dashboard.yml"], in: directory.path)
        #expect(check.0 == 0, "\(check.1)")
    }
}
