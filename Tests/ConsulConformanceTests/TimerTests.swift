import BatonConsul
import BatonTestSupport
@testable import BatonConsulServer
import ConsulAPI
import Foundation
import Synchronization
import Testing

/// The embedded server's one timer task sleeps until the earliest deadline it knows; these check that
/// a deadline set while it sleeps towards a later one still falls due on time.
struct TimerTests {
    @Test("the alarm: an earlier request ends the sleep, a later one does not, one made while awake ends the next sleep at once")
    func alarm() async throws {
        let alarm = Alarm()
        alarm.awake()
        let first = ContinuousClock.now
        let woke = Atomic(false)
        let sleeper = Task {
            await alarm.sleep(until: first + .seconds(30))
            woke.store(true, ordering: .sequentiallyConsistent)
        }
        // Asleep first: a request made before that (while it still looks at its deadlines) would end
        // its sleep at once, by design (checked below).
        #expect(await eventually(timeout: .seconds(10)) { alarm.sleeping }, "the sleeper never went to sleep")
        alarm.request(first + .seconds(40))  // later: keeps sleeping
        try await Task.sleep(for: .milliseconds(200))
        let wokeEarly = woke.load(ordering: .sequentiallyConsistent)
        #expect(!wokeEarly, "a later deadline woke the sleeper")
        alarm.request(first + .seconds(5))  // earlier: wakes it
        await sleeper.value
        #expect(ContinuousClock.now - first < .seconds(5))

        // A request while the sleeper looks at its deadlines (after awake, before sleep) is not lost.
        alarm.awake()
        alarm.request(first + .seconds(60))
        var start = ContinuousClock.now
        await alarm.sleep(until: start + .seconds(30))
        #expect(ContinuousClock.now - start < .seconds(5))

        // Nothing requested: it sleeps until the instant.
        alarm.awake()
        start = .now
        await alarm.sleep(until: start + .milliseconds(300))
        #expect(ContinuousClock.now - start >= .milliseconds(300))
    }

    @Test("while the timer sleeps towards a long session's expiry, a short blocked query returns at its wait and a short session expires at 2×TTL")
    func earlierDeadlinesWakeTheTimer() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            // The embedded server's timer task; a real Consul has its own.
            guard !Target.isRealConsul else { return }
            // The timer now sleeps until this session's deadline, a minute away.
            _ = try await t.session(#"{"TTL":"30s"}"#)
            try await Task.sleep(for: .milliseconds(200))
            let key = t.key("quiet")
            try await t.client.put(key, "v")
            let index = try #require(try await t.client.get(key).value).modifyIndex
            let (_, waited) = try await Harness.timed { try await t.client.get(key, QueryOptions(index: index, wait: .seconds(1))) }
            #expect(waited >= 0.9 && waited < 3, "a 1 s blocked query returned after \(waited) s")

            let start = ContinuousClock.now
            let short = try await t.session(#"{"TTL":"1s","LockDelay":"0s"}"#)
            let expired = try await eventually(timeout: .seconds(10)) { try await t.client.sessionInfo(short).value == nil }
            #expect(expired)
            let lived = ContinuousClock.now - start
            #expect(lived >= .seconds(1) && lived < .seconds(4), "a 1 s TTL session lived \(lived)")
        }
    }

    @Test("at rest — sessions renewed, a blocked query waiting, writes — the timer task looks at its deadlines only when one is due")
    func restingTimerSleeps() async throws {
        try await Harness.withTarget { (t: Target) async throws in
            guard let server = t.server else { return }
            let sessions = [try await t.session(#"{"TTL":"10s"}"#), try await t.session(#"{"TTL":"20s"}"#)]
            let key = t.key("watched")
            try await t.client.put(key, "v")
            let index = try #require(try await t.client.get(key).value).modifyIndex
            let before = server.checkRunner.looks.load(ordering: .relaxed)
            async let blocked = t.client.get(key, QueryOptions(index: index, wait: .seconds(30)))
            for round in 0..<20 {
                for session in sessions { try await t.client.renewSession(session) }
                try await t.client.put(t.key("other"), "\(round)")
                try await Task.sleep(for: .milliseconds(100))
            }
            let looks = server.checkRunner.looks.load(ordering: .relaxed) - before
            // Each write that adds no earlier deadline leaves it asleep; the old timer ticked 20 times a second.
            #expect(looks <= 5, "the timer task looked \(looks) times in 2 s at rest")
            try await t.client.put(key, "changed")
            #expect(try await blocked.value?.stringValue == "changed")
        }
    }
}
