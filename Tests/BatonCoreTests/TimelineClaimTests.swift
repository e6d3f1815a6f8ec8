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
}
