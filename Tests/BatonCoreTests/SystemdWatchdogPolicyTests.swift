import BatonCore
import Testing

@Suite("systemd watchdog policy")
struct SystemdWatchdogPolicyTests {
    let s: UInt64 = 1_000_000_000

    @Test("pings while the loop completes or a program runs; stops once the loop has been stuck past the stall limit with nothing running")
    func table() {
        let policy = SystemdWatchdogPolicy(interval: .seconds(60))
        #expect(policy.pingEvery == .seconds(20) && policy.stallLimit == .seconds(120))
        let short = SystemdWatchdogPolicy(interval: .seconds(3))
        #expect(short.pingEvery == .seconds(1) && short.stallLimit == .seconds(60), "a minute at least: slow Consul and SQL calls have their own timeouts")
        let cases: [(now: UInt64, loop: UInt64, started: UInt64, running: Int, alive: Bool)] = [
            (1000 * s, 999 * s, 0, 0, true),  // the loop just ran
            (1000 * s, 881 * s, 0, 0, true),  // 119 s ago
            (1000 * s, 880 * s, 0, 0, false),  // 120 s ago: wedged
            (1000 * s, 100 * s, 0, 1, true),  // a clone running for 15 min
            (1000 * s, 0, 950 * s, 0, true),  // no loop yet: counted from the start
            (1000 * s, 0, 800 * s, 0, false),  // no loop in 200 s since the start
            (1000 * s, 1001 * s, 0, 0, true),  // a reading from just after `now`
        ]
        for c in cases {
            #expect(policy.alive(now: c.now, loopRanAt: c.loop, startedAt: c.started, programsRunning: c.running) == c.alive, "\(c)")
        }
    }
}
