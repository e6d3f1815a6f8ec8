@testable import BatonAgent
import Logging
import Synchronization
import Testing

/// Collects what is logged, for tests of what the operator reads.
final class CollectedLogs: Sendable {
    let lines = Mutex<[(message: String, metadata: Logger.Metadata)]>([])

    struct Handler: LogHandler {
        let logs: CollectedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            logs.lines.withLock { $0.append(("\(event.message)", event.metadata ?? [:])) }
        }
    }

    var logger: Logger { Logger(label: "test") { _ in Handler(logs: self) } }
}

@Suite("repeated warnings")
struct RepeatedWarningsTests {
    @Test("a warning repeated every loop is logged once per period, with the count in between; cleared, at once again")
    func throttled() {
        let logs = CollectedLogs()
        var warnings = RepeatedWarnings(every: .seconds(30))
        let start = ContinuousClock.now
        for second in 0..<65 { warnings.warning(logs.logger, "Consul is unreachable", now: start + .seconds(second)) }
        warnings.warning(logs.logger, "another cause", now: start + .seconds(65))
        var lines = logs.lines.withLock { $0 }
        #expect(lines.map(\.message) == ["Consul is unreachable", "Consul is unreachable", "Consul is unreachable", "another cause"])
        #expect(lines[1].metadata["log.repeated"] == "29 times since the last report")
        warnings.clear()
        warnings.warning(logs.logger, "Consul is unreachable", now: start + .seconds(66))
        lines = logs.lines.withLock { $0 }
        #expect(lines.count == 5)
    }
}
