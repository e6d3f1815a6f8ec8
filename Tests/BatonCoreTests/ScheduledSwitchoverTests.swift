import BatonCore
import Testing

@Suite("scheduled switchover")
struct ScheduledSwitchoverTests {
    let pg1 = try! NodeName("pg1")
    let pg2 = try! NodeName("pg2")
    let pg3 = try! NodeName("pg3")

    @Test("waits until due, runs within ten minutes of it, and is dropped if another leader or its target leads, or it is stale")
    func verdicts() {
        let s = ScheduledSwitchover(to: pg2, from: pg1, at: 1_000_000, asked: "t", by: "pg3")
        let cases: [(Int64, NodeName?, ScheduledSwitchover.Verdict)] = [
            (999_999, pg1, .wait),
            (1_000_000, pg1, .due),
            (1_000_600, pg1, .due),
            (1_000_601, pg1, .drop("due 601 s ago, when no leader could run it; schedule it again")),
            (999_000, pg3, .drop("scheduled for pg1's tenure, and pg3 leads now")),
            (1_000_000, pg2, .drop("scheduled for pg1's tenure, and pg2 leads now")),
            (1_000_000, nil, .due),
        ]
        for (now, leader, verdict) in cases { #expect(s.verdict(now: now, leader: leader) == verdict, "\(now) \(String(describing: leader))") }
    }

    @Test("only the future, at most 30 days ahead")
    func refusals() {
        #expect(ScheduledSwitchover.refusal(at: 100, now: 100) != nil)
        #expect(ScheduledSwitchover.refusal(at: 101, now: 100) == nil)
        #expect(ScheduledSwitchover.refusal(at: 100 + 30 * 86_400, now: 100) == nil)
        #expect(ScheduledSwitchover.refusal(at: 101 + 30 * 86_400, now: 100) != nil)
    }

    @Test("its record reads back the same; a malformed one is refused with the key")
    func record() throws {
        let s = ScheduledSwitchover(to: pg2, from: pg1, at: 1_796_000_000, asked: "2026-12-06T17:00:00Z", by: "pg3")
        #expect(try ScheduledSwitchover(bytes: s.json.serializedBytes(), key: "k") == s)
        #expect(throws: ValidationProblem.self) { try ScheduledSwitchover(bytes: Array(#"{"to":"pg2","from":"pg1","at":"soon"}"#.utf8), key: "k") }
        #expect(throws: ValidationProblem.self) { try ScheduledSwitchover(bytes: Array(#"{"to":"pg2","at":5}"#.utf8), key: "k") }
    }

    @Test("UTC times as people read them")
    func utc() {
        #expect(ScheduledSwitchover.utc(0) == "1970-01-01T00:00:00Z")
        #expect(ScheduledSwitchover.utc(1_700_000_000) == "2023-11-14T22:13:20Z")
        #expect(ScheduledSwitchover.utc(951_782_400) == "2000-02-29T00:00:00Z")
        #expect(ScheduledSwitchover.utc(-1) == "1969-12-31T23:59:59Z")
        #expect(ScheduledSwitchover.utc(4_102_444_799) == "2099-12-31T23:59:59Z")
    }
}
