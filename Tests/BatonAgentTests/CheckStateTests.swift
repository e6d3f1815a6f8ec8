import BatonCore
import Testing

@Suite("baton check")
struct CheckStateTests {
    let second: UInt64 = 1_000_000_000

    @Test func passesOnlyWhileTheLeaseHoldsAndTheMonitorWrites() {
        let leading = CheckState(leading: true, deadline: 3 * second, written: 0, loopWait: second).text
        #expect(CheckState.verdict(leading, now: 2 * second) == .primary)
        #expect(CheckState.verdict(leading, now: 3 * second) != .primary, "the lease ran out: the watchdog fences now")
        let longLease = CheckState(leading: true, deadline: 60 * second, written: 0, loopWait: second).text
        #expect(CheckState.verdict(longLease, now: 4 * second) != .primary, "a dead monitor's state is stale")
        #expect(CheckState.verdict(CheckState(leading: false, deadline: 9 * second, written: 0, loopWait: second).text, now: 1) != .primary)
        #expect(CheckState.verdict(nil, now: 1) != .primary)
        for bad in ["", "primary", "primary x y z", "primary 1 2", "leader 1 2 3", "primary 1 2 3 4"] {
            #expect(CheckState.verdict(bad, now: 1) != .primary, "\(bad)")
        }
    }

    @Test("beside the tracked file: every live monitor passes; one whose file says it leads only with a live lease")
    func besideTheTrackFile() {
        let replica = CheckState(leading: false, deadline: 0, written: 0, loopWait: second).text
        let leading = CheckState(leading: true, deadline: 3 * second, written: 0, loopWait: second).text
        #expect(CheckState.besideTrackFile(replica, trackFile: "1\n", now: second) == nil, "a replica's monitor is alive: the file keeps it FAULT")
        #expect(CheckState.besideTrackFile(replica, trackFile: nil, now: second) == nil)
        #expect(CheckState.besideTrackFile(leading, trackFile: "0\n", now: 2 * second) == nil)
        #expect(CheckState.besideTrackFile(leading, trackFile: "0\n", now: 3 * second) != nil, "the file still says leading, the lease ran out")
        #expect(CheckState.besideTrackFile(replica, trackFile: "0", now: second) != nil, "the file says leading, the state does not")
        #expect(CheckState.besideTrackFile(replica, trackFile: "1", now: 4 * second) != nil, "a dead monitor fails either way")
        #expect(CheckState.besideTrackFile(nil, trackFile: "1", now: 1) != nil)
        #expect(CheckState.besideTrackFile("primary 1 2", trackFile: "1", now: 1) != nil)
    }

    @Test("a state file left by the machine's previous boot never passes: its clock readings are ahead of this boot's")
    func aPreviousBootsStateIsStale() {
        // The leader's machine crashed at 5 days of uptime and started again: keepalived runs `baton check`
        // 10 s into the new boot, before the monitor wrote anything.
        let day = 86_400 * second
        let leftOver = CheckState(leading: true, deadline: 5 * day + 3 * second, written: 5 * day, loopWait: second).text
        #expect(CheckState.verdict(leftOver, now: 10 * second) != .primary)
        #expect(CheckState.besideTrackFile(leftOver, trackFile: "0\n", now: 10 * second) != nil)
        #expect(CheckState(text: leftOver)?.staleness(now: 10 * second)?.contains("previous boot") == true)
    }

    @Test func theTextRoundTrips() {
        let state = CheckState(leading: true, deadline: 42, written: 7, loopWait: 1000)
        #expect(CheckState(text: state.text) == state)
        #expect(CheckState(leading: false, deadline: 42, written: 7, loopWait: 1000).deadline == 0)
    }
}
