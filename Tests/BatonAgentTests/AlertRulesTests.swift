import Foundation
import Testing

/// Deploy/prometheus: the alerting rules pass Prometheus' own checker and their unit tests, and alert
/// only on metrics the monitor serves (issue 25).
@Suite("Prometheus alerting rules")
struct AlertRulesTests {
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/prometheus").standardized.path
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/BatonAgent").standardized.path

    /// Runs promtool (Debian's prometheus package; `.ci/run` installs it) and returns its status and output.
    func promtool(_ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: Self.deploy)
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

    @Test("every metric the rules use is one the monitor records")
    func rulesUseServedMetrics() throws {
        let rules = try String(contentsOfFile: Self.deploy + "/baton-alerts.yml", encoding: .utf8)
        let code = try FileManager.default.contentsOfDirectory(atPath: Self.sources).filter { $0.hasSuffix(".swift") }
            .map { try String(contentsOfFile: Self.sources + "/" + $0, encoding: .utf8) }.joined()
        let used = Set(rules.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).map(String.init).filter { $0.hasPrefix("baton_") })
        #expect(used.count >= 8, "\(used)")
        for name in used { #expect(code.contains("\"\(name)\""), "\(name) is not a metric the monitor records") }
    }
}
