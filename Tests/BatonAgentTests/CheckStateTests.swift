import BatonAgent
import Testing

@Suite("baton check")
struct CheckStateTests {
    let second: UInt64 = 1_000_000_000

    @Test func passesOnlyOnAFreshPrimaryState() {
        #expect(CheckState.verdict("primary 100 1000000000\n", now: 100 + 2 * second) == .primary)
        #expect(CheckState.verdict("not-primary 100 1000000000\n", now: 100) != .primary)
        #expect(CheckState.verdict("primary 100 1000000000\n", now: 100 + 4 * second) != .primary, "a dead monitor's state is stale")
        #expect(CheckState.verdict(nil, now: 1) != .primary)
        for bad in ["", "primary", "primary x y", "primary 1 2 3"] { #expect(CheckState.verdict(bad, now: 1) != .primary) }
    }
}
