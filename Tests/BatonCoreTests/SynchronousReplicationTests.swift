import BatonCore
import Testing

@Suite("synchronous replication")
struct SynchronousReplicationTests {
    let a = try! NodeName("a")
    let b = try! NodeName("b")
    func peer(_ n: NodeName, _ streaming: Bool = true, _ flush: UInt64 = 100) -> ReplicationPeer { ReplicationPeer(name: n, streaming: streaming, flushPosition: LSN(flush)) }
    func next(_ mode: SynchronousMode = .on, recorded: NodeName? = nil, names: String = "", peers: [ReplicationPeer], candidates: [NodeName]? = nil, start: UInt64? = 50) -> SyncAction {
        SynchronousReplication.next(
            mode: mode, recorded: recorded, standbyNames: names, peers: peers, candidates: candidates ?? peers.map(\.name), startPosition: start.map(LSN.init))
    }

    @Test func aStandbyIsNamedOnlyAfterPostgresWaitsForItAndItCaughtUp() {
        #expect(next(peers: [peer(a)]) == .setStandbyNames("\"a\""))
        #expect(next(names: "\"a\"", peers: [peer(a, true, 40)], start: 50) == .none, "not caught up yet: not named")
        #expect(next(names: "\"a\"", peers: [peer(a, true, 60)], start: 50) == .record(a))
        #expect(next(names: "\"a\"", peers: [peer(a, true, 60)], start: nil) == .none, "without a start position, never named")
    }

    @Test func aHealthyRecordedStandbyIsKept() {
        #expect(next(recorded: a, names: "\"a\"", peers: [peer(a), peer(b, true, 999)], candidates: [b, a]) == .none)
        #expect(next(recorded: a, names: "", peers: [peer(a)]) == .setStandbyNames("\"a\""), "PostgreSQL must wait for it")
    }

    @Test func aDeadRecordedStandbyIsReplacedWithoutNamingAnyoneEarly() {
        let dead = [peer(a, false), peer(b, true, 10)]
        #expect(next(recorded: a, names: "\"a\"", peers: dead, candidates: [b]) == .setStandbyNames("\"b\""))
        #expect(next(recorded: a, names: "\"b\"", peers: dead, candidates: [b], start: 50) == .none, "the key keeps naming a until b caught up")
        #expect(next(recorded: a, names: "\"b\"", peers: [peer(a, false), peer(b, true, 50)], candidates: [b], start: 50) == .record(b))
    }

    @Test func withNobodyToWaitForNonStrictStopsRelyingFirstStrictKeepsWaiting() {
        #expect(next(.on, recorded: a, names: "\"a\"", peers: [peer(a, false)], candidates: []) == .record(nil))
        #expect(next(.on, recorded: nil, names: "\"a\"", peers: [], candidates: []) == .setStandbyNames(""))
        #expect(next(.strict, recorded: a, names: "\"a\"", peers: [peer(a, false)], candidates: []) == .none, "strict: writes wait")
        #expect(next(.strict, recorded: nil, names: "", peers: [], candidates: []) == .setStandbyNames("*"))
    }

    @Test func turningItOffClearsTheKeyBeforeTheSetting() {
        #expect(next(.off, recorded: a, names: "\"a\"", peers: [peer(a)]) == .record(nil))
        #expect(next(.off, recorded: nil, names: "\"a\"", peers: [peer(a)]) == .setStandbyNames(""))
        #expect(next(.off, recorded: nil, names: "", peers: [peer(a)]) == .none)
    }
}
