@testable import BatonAgent
import BatonBootstrap
import BatonSettings
import BatonCore
import BatonPostgres
import BatonTestSupport
import Foundation
import Testing

@Suite("the monitor's view of a starting PostgreSQL, live", .serialized, .enabled(if: LiveCluster.available, "PostgreSQL 15 is not installed (apt-get install postgresql-15)"))
struct ProcessStateLiveTests {
    /// A postmaster belongs to its data directory only once it has changed into it. Asked "is there a
    /// postmaster?" before and "are there processes?" just after that moment, the monitor saw processes
    /// without their postmaster — a dead postmaster, which it fences — while PostgreSQL was starting (the
    /// cluster-restart flake of 2026-11-28). Sampled without pause through five starts, the observation
    /// is only ever "down", "unresponsive with its postmaster", or the server's answer.
    @Test("a starting postmaster is never seen as processes left without their postmaster")
    func startingPostmasterIsNeverSeenDead() async throws {
        try await LiveCluster.with { cluster in
            let port = try FreePort.pick()
            _ = try await cluster.bootstrap(.master, "pg1", port: port)
            let settings = try cluster.settings(.master, "pg1", port: port)
            let node = PostgresNode(settings: settings)
            let control = node.control
            for start in 1...5 {
                try await control.stop()
                // pg_ctl returns once the PID file is gone; the postmaster may still be in /proc a moment
                // longer on a loaded machine (CI saw it), so "down" is waited for.
                let down = await eventually(timeout: .seconds(10), interval: .milliseconds(5)) { node.processState() == .down(standbySignal: false) }
                #expect(down, "start \(start): stopped, but \(node.processState())")
                async let launched: Void = control.launch(logFile: settings.postgresLog)
                var observed: [String: Int] = [:]
                var deadPostmaster = 0
                let deadline = ContinuousClock.now + .seconds(20)
                var afterPostmaster = 0
                // Until the postmaster was seen, and a while after (its children start then).
                while afterPostmaster < 300, ContinuousClock.now < deadline {
                    let state = node.processState()
                    observed["\(state)", default: 0] += 1
                    if case .unresponsive(_, postmaster: true) = state { afterPostmaster += 1 }
                    if case .unresponsive(_, postmaster: false) = state { deadPostmaster += 1 }
                }
                try await launched
                #expect(deadPostmaster == 0, "start \(start): \(observed)")
                #expect(afterPostmaster >= 300, "start \(start): the postmaster was never seen: \(observed)")
            }
        }
    }
}
