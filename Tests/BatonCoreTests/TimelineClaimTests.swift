import BatonCore
import ConsulAPI
import Testing

@Suite("timeline claims")
struct TimelineClaimTests {
    @Test func aPromotionAlwaysGetsATimelineNobodyUsed() {
        #expect(TimelineClaim(localNewest: 1, claimed: nil) == TimelineClaim(timeline: 2, placeholders: []))
        #expect(TimelineClaim(localNewest: 1, claimed: 1) == TimelineClaim(timeline: 2, placeholders: []))
        // Another node promoted to 2 and died before this node saw its history: skip 2.
        #expect(TimelineClaim(localNewest: 1, claimed: 2) == TimelineClaim(timeline: 3, placeholders: [2]))
        #expect(TimelineClaim(localNewest: 2, claimed: 5) == TimelineClaim(timeline: 6, placeholders: [3, 4, 5]))
        // PostgreSQL's own choice is already higher (histories copied from elsewhere): take it.
        #expect(TimelineClaim(localNewest: 7, claimed: 3) == TimelineClaim(timeline: 8, placeholders: []))
    }

    @Test func historyFilesAreNamedAndWrittenAsPostgresDoes() {
        #expect(TimelineClaim.historyFileName(2) == "00000002.history")
        #expect(TimelineClaim.historyFileName(26) == "0000001A.history")
        #expect(
            TimelineClaim.placeholderHistory(parentHistory: "1\t0/3000060\tno recovery target specified", parent: 2, switchpoint: LSN(0x4000028), timeline: 3)
                == "1\t0/3000060\tno recovery target specified\n2\t0/4000028\ttimeline 3 was used by another node; skipped by baton\n")
        #expect(TimelineClaim.placeholderHistory(parentHistory: "", parent: 1, switchpoint: LSN(0x10), timeline: 2).hasPrefix("1\t0/10\t"))
    }

    @Test func theKeyRoundTripsAndBadValuesAreProblems() throws {
        let key = "baton/main/timeline"
        #expect(try TimelineClaim.claimed(TimelineClaim.record(4, node: try NodeName("pg2")).serializedBytes(), key: key) == 4)
        #expect(try TimelineClaim.claimed(nil, key: key) == nil)
        for bad in ["4", #"{"timeline":"4"}"#, #"{"timeline":0}"#, #"{"timeline":-1}"#, #"{"node":"pg1"}"#] {
            #expect(throws: ValidationProblem.self) { try TimelineClaim.claimed(Array(bad.utf8), key: key) }
        }
    }

    /// Finding 8 (b): the claim, the lock and (synchronous mode) the `sync` key change together, before
    /// the promotion; the record is the promoting node's from then on.
    @Test func thePromotionClaimIsOneTransactionWithTheLockAndTheSyncRecord() throws {
        let keys = ClusterKeys(cluster: try ClusterName("c"))
        let me = try NodeName("b")
        let old = try NodeName("a")
        let asynchronous = PromotionClaim.operations(keys: keys, node: me, session: "s1", timeline: 3, timelineIndex: 7, synchronous: nil)
        #expect(asynchronous.map(\.verb) == [.checkSession, .cas] && asynchronous[0].key == keys.leader && asynchronous[0].session == "s1")
        #expect(asynchronous[1].key == keys.timeline && asynchronous[1].index == 7)
        let mine = SyncRecord(standby: me, leader: old, position: LSN(500))
        let synchronous = PromotionClaim.operations(keys: keys, node: me, session: "s1", timeline: 3, timelineIndex: 7, synchronous: (9, mine))
        #expect(synchronous.count == 3 && synchronous[2].verb == .cas && synchronous[2].key == keys.sync && synchronous[2].index == 9)
        let written = try SyncRecord.parse(synchronous[2].value, key: keys.sync)
        #expect(written == SyncRecord(standby: me, leader: me, position: LSN(500)), "the recorded standby names itself, as the leader: still eligible should the promotion stop")
        let other = SyncRecord(standby: try NodeName("c"), leader: old, position: LSN(500))
        let cleared = PromotionClaim.operations(keys: keys, node: me, session: "s1", timeline: 3, timelineIndex: 7, synchronous: (9, other))
        #expect(try SyncRecord.parse(cleared[2].value, key: keys.sync) == nil, "another node's record ends: nobody until this one records a standby")
        #expect(try JSONValue.parse(cleared[2].value ?? []).member("leader")?.stringValue == "b")
    }
}
