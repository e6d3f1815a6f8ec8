import BatonCore
import Testing

@Suite("synchronous replication")
struct SynchronousReplicationTests {
    let a = try! NodeName("a")
    let b = try! NodeName("b")
    let primary = try! NodeName("p")
    func peer(_ n: NodeName, _ streaming: Bool = true, _ flush: UInt64 = 100) -> ReplicationPeer { ReplicationPeer(name: n, streaming: streaming, flushPosition: LSN(flush)) }
    func record(_ n: NodeName, at position: UInt64 = 50) -> SyncRecord { SyncRecord(standby: n, leader: primary, position: LSN(position)) }
    func next(
        _ mode: SynchronousMode = .on, recorded: SyncRecord? = nil, names: String = "", peers: [ReplicationPeer], candidates: [NodeName]? = nil,
        since: UInt64? = 50
    ) -> SyncAction {
        SynchronousReplication.next(
            mode: mode, recorded: recorded, standbyNames: names, peers: peers, candidates: candidates ?? peers.map(\.name),
            waitingSince: since.map(LSN.init), me: primary)
    }

    @Test func aStandbyIsRecordedOnlyAfterPostgresWaitsForItAloneAndItFlushedPastThatMoment() {
        #expect(next(peers: [peer(a)]) == .setStandbyNames("\"a\""))
        #expect(next(names: "\"a\"", peers: [peer(a, true, 60)], since: nil) == .rememberPosition, "the position is taken once PostgreSQL waits for it")
        #expect(next(names: "\"a\"", peers: [peer(a, true, 40)], since: 50) == .none, "not caught up yet: not recorded")
        #expect(next(names: "\"a\"", peers: [peer(a, true, 60)], since: 50) == .record(a, position: LSN(50)))
    }

    @Test func aHealthyRecordedStandbyIsKept() {
        #expect(next(recorded: record(a), names: "\"a\"", peers: [peer(a), peer(b, true, 999)], candidates: [b, a]) == .none)
        #expect(next(peers: [peer(a), peer(b, true, 999)], candidates: [b, a]) == .setStandbyNames("\"b\""), "nobody recorded: the best")
        #expect(next(names: "\"a\"", peers: [peer(a), peer(b, true, 999)], candidates: [b, a], since: nil) == .rememberPosition, "keeps the one it waits for")
    }

    /// The flapping-standby loss: the key must stop naming a standby before commits may be acknowledged
    /// without it.
    @Test func theKeyIsClearedBeforeTheSettingLeavesTheRecordedStandby() {
        let dead = [peer(a, false), peer(b, true, 10)]
        #expect(next(recorded: record(a), names: "\"a\"", peers: dead, candidates: [b]) == .clear, "cleared first, names untouched")
        #expect(next(recorded: nil, names: "\"a\"", peers: dead, candidates: [b]) == .setStandbyNames("\"b\""), "then the setting moves")
        #expect(next(recorded: nil, names: "\"b\"", peers: dead, candidates: [b], since: 50) == .none, "not recorded until caught up")
        #expect(next(recorded: nil, names: "\"b\"", peers: [peer(a, true, 99), peer(b, true, 50)], candidates: [a, b], since: 50) == .record(b, position: LSN(50)))
        // A record that does not match what PostgreSQL waits for is never trusted.
        #expect(next(recorded: record(a), names: "\"b\"", peers: [peer(a), peer(b)]) == .clear)
        #expect(next(recorded: record(a), names: "*", peers: [peer(a), peer(b)]) == .clear)
        #expect(next(recorded: record(primary), names: "*", peers: [peer(a)]) == .clear, "the new primary's own name, left from before its promotion")
    }

    @Test func withNobodyToWaitForNonStrictStopsRelyingFirstStrictKeepsWaiting() {
        #expect(next(.on, recorded: record(a), names: "\"a\"", peers: [peer(a, false)], candidates: []) == .clear)
        #expect(next(.on, recorded: nil, names: "\"a\"", peers: [], candidates: []) == .setStandbyNames(""))
        #expect(
            next(.strict, recorded: record(a), names: "\"a\"", peers: [peer(a, false)], candidates: []) == .none,
            "strict: writes wait for it, and it stays the node failover may promote (it has every acknowledged commit)")
        #expect(next(.strict, recorded: record(a), names: "\"a\"", peers: [peer(a, false), peer(b)], candidates: [b]) == .clear, "replaced: cleared first")
        #expect(next(.strict, recorded: nil, names: "\"a\"", peers: [peer(a, false)], candidates: []) == .none, "strict: writes wait")
        #expect(next(.strict, recorded: nil, names: "", peers: [], candidates: []) == .setStandbyNames("*"))
    }

    /// Finding 14: a WAL receiver that flaps is waited for during the grace (commits wait for it, so it
    /// keeps every acknowledged one and stays the node failover may promote); past it, the key is cleared.
    @Test func anAbsentRecordedStandbyIsWaitedForDuringTheGrace() {
        func step(_ mode: SynchronousMode, absent: Duration?, peers: [ReplicationPeer], candidates: [NodeName]) -> SyncAction {
            SynchronousReplication.next(
                mode: mode, recorded: record(a), standbyNames: "\"a\"", peers: peers, candidates: candidates, waitingSince: LSN(50),
                recordedAbsentFor: absent, grace: .seconds(2), me: primary)
        }
        for mode in [SynchronousMode.on, .strict] {
            #expect(step(mode, absent: .seconds(1), peers: [peer(a, false), peer(b)], candidates: [b]) == .none, "\(mode): within the grace")
            #expect(step(mode, absent: .seconds(2), peers: [peer(a, false), peer(b)], candidates: [b]) == .clear, "\(mode): past it, replaced")
        }
        #expect(step(.on, absent: .seconds(1), peers: [], candidates: []) == .none)
        #expect(step(.on, absent: .seconds(3), peers: [], candidates: []) == .clear, "on: asynchronous after the grace")

        // The memory times the absence on the monitor's clock, from the first loop that saw it.
        var memory = SynchronousMemory()
        memory.waitingSince = LSN(50)
        let t0 = ContinuousClock.now
        func loop(_ peers: [ReplicationPeer], at t: Duration) -> SyncAction {
            memory.next(mode: .on, grace: .seconds(2), recorded: record(a), standbyNames: "\"a\"", peers: peers, candidates: [b], me: primary, at: t0 + t)
        }
        #expect(loop([peer(a), peer(b)], at: .zero) == .none)
        #expect(loop([peer(b)], at: .seconds(1)) == .none, "gone: first seen")
        #expect(loop([peer(b)], at: .milliseconds(2_900)) == .none, "1.9 s absent")
        #expect(loop([peer(a), peer(b)], at: .seconds(3)) == .none, "back: the absence ends")
        #expect(loop([peer(b)], at: .seconds(4)) == .none, "gone again: timed afresh")
        #expect(loop([peer(b)], at: .seconds(6)) == .clear, "2 s absent")
    }

    @Test func turningItOffClearsTheKeyBeforeTheSetting() {
        #expect(next(.off, recorded: record(a), names: "\"a\"", peers: [peer(a)]) == .clear)
        #expect(next(.off, recorded: nil, names: "\"a\"", peers: [peer(a)]) == .setStandbyNames(""))
        #expect(next(.off, recorded: nil, names: "", peers: [peer(a)]) == .none)
    }

    @Test func theRecordRoundTripsAndBadOnesAreRefused() throws {
        let r = record(a, at: 0x3000060)
        #expect(try SyncRecord.parse(r.json.serializedBytes(), key: "sync") == r)
        #expect(try SyncRecord.parse(SyncRecord.cleared(by: primary).serializedBytes(), key: "sync") == nil)
        #expect(try SyncRecord.parse(nil, key: "sync") == nil)
        for bad in [#"{"standby":"a b","leader":"p","position":"0/1"}"#, #"{"standby":"a","leader":"p"}"#, #"{"standby":"a","leader":"p","position":"x"}"#, #"{"standby":1}"#, "[]"] {
            #expect(throws: ValidationProblem.self) { try SyncRecord.parse(Array(bad.utf8), key: "sync") }
        }
    }
}
