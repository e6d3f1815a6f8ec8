import BatonCore
import Testing

@Suite("change tracker")
struct ChangeTrackerTests {
    let start = ContinuousClock.now

    @Test func freshnessIsJudgedOnTheObserversClockByTheIndexMoving() {
        var tracker = ChangeTracker<String>()
        tracker.observe("pg1", index: 10, at: start)
        #expect(tracker.isFresh("pg1", within: .seconds(4), at: start + .seconds(3)), "first seen: given one window")
        #expect(!tracker.isFresh("pg1", within: .seconds(4), at: start + .seconds(4)), "never changed since: gone")
        #expect(tracker.sinceChange("pg1", at: start + .seconds(1)) == nil, "no change seen yet")
        tracker.observe("pg1", index: 10, at: start + .seconds(5))
        #expect(!tracker.isFresh("pg1", within: .seconds(4), at: start + .seconds(5)), "the same index again is no sign of life")
        tracker.observe("pg1", index: 11, at: start + .seconds(6))
        #expect(tracker.isFresh("pg1", within: .seconds(4), at: start + .seconds(9)))
        #expect(tracker.sinceChange("pg1", at: start + .seconds(9)) == .seconds(3))
        #expect(tracker.fresh(within: .seconds(4), at: start + .seconds(9)) == ["pg1"])
        tracker.keep(only: [])
        #expect(!tracker.isFresh("pg1", within: .seconds(4), at: start + .seconds(9)), "a deleted key is forgotten")
    }
}
