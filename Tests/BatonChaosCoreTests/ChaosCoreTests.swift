import BatonChaosCore
import ConsulAPI
import Testing

@Suite("chaos schedule")
struct ChaosScheduleTests {
    @Test func theSameSeedReplaysTheSameSchedule() {
        let a = ChaosSchedule.make(seed: 42, count: 200, synchronous: true)
        #expect(a == ChaosSchedule.make(seed: 42, count: 200, synchronous: true))
        #expect(a != ChaosSchedule.make(seed: 43, count: 200, synchronous: true))
        // A longer run starts with the shorter run's faults.
        #expect(Array(ChaosSchedule.make(seed: 42, count: 300, synchronous: true).prefix(200)) == a)
    }

    @Test func everyKindAndTargetComesUpAndDurationsStayInRange() {
        let faults = ChaosSchedule.make(seed: 1, count: 2000, synchronous: true)
        #expect(Set(faults.map(\.kind)) == Set(FaultKind.allCases))
        #expect(Set(faults.map(\.target)) == Set(TargetRole.allCases))
        for f in faults {
            #expect(f.kind.durations.contains(f.duration) || (f.duration - f.kind.durations.upperBound).magnitude < 0.06)
            #expect((0.5...3.0).contains(f.delay))
            if f.kind == .overlap { #expect(f.parts.count == 2 && !f.parts.contains { $0.kind == .overlap }) }
        }
        let asynchronous = ChaosSchedule.make(seed: 1, count: 2000, synchronous: false)
        #expect(!asynchronous.contains { $0.kind == .syncLinkFlap || $0.target == .synchronousStandby })
    }

    @Test("--only draws from the kinds named (an overlap's parts too), both come up, and a seed without it replays as before")
    func onlyTheKindsNamed() {
        let only: Set<FaultKind> = [.freezeNode, .consulCut, .overlap]
        let faults = ChaosSchedule.make(seed: 5, count: 300, synchronous: true, only: only)
        #expect(Set(faults.map(\.kind)) == only)
        #expect(Set(faults.flatMap(\.parts).map(\.kind)) == [.freezeNode, .consulCut])
        #expect(faults == ChaosSchedule.make(seed: 5, count: 300, synchronous: true, only: only))
        #expect(ChaosSchedule.make(seed: 5, count: 50, synchronous: true, only: nil) == ChaosSchedule.make(seed: 5, count: 50, synchronous: true))
        #expect(ChaosSchedule.make(seed: 5, count: 50, synchronous: true, only: Set(FaultKind.allCases)) == ChaosSchedule.make(seed: 5, count: 50, synchronous: true))
        #expect(ChaosSchedule.problem(only: [.overlap], synchronous: true) != nil)
        #expect(ChaosSchedule.problem(only: [.syncLinkFlap], synchronous: false) != nil)
        #expect(ChaosSchedule.problem(only: [.syncLinkFlap, .overlap], synchronous: false) != nil)
        #expect(ChaosSchedule.problem(only: [.consulCut], synchronous: false) == nil)
    }
}

@Suite("chaos history checker")
struct HistoryCheckerTests {
    func ack(_ id: String, _ at: Double, _ server: String, _ timeline: Int) -> Acknowledgement {
        Acknowledgement(id: id, client: "c", at: at, server: server, timeline: timeline)
    }

    func ack(_ id: String, _ at: Double, _ server: String, _ timeline: Int, ran: Double?) -> Acknowledgement {
        Acknowledgement(id: id, client: "c", at: at, server: server, timeline: timeline, ran: ran)
    }

    @Test("an old primary's answer that only came late — run before the new primary's first write, in the final history — is no window; any other is")
    func lateAnswersAreNotSplitBrain() {
        // n2 began at 3.0 (ran its first write at 2.9); n1's "x" arrived at 3.4 but ran at 1.2.
        let new = [ack("a", 1, "n1", 1, ran: 0.9), ack("b", 3, "n2", 2, ran: 2.9), ack("c", 4, "n2", 2, ran: 3.95)]
        let lateOnly = new + [ack("x", 3.4, "n1", 1, ran: 1.2)]
        let everything: Set<String> = ["a", "b", "c", "x", "y"]
        #expect(HistoryChecker.splitBrainWindows(lateOnly, present: everything).isEmpty)
        #expect(HistoryChecker.late(lateOnly, present: everything).map(\.0.id) == ["x"])
        #expect(HistoryChecker.splitBrainWindows(lateOnly).count == 1, "without the final history, nothing is excused")
        #expect(HistoryChecker.splitBrainWindows(lateOnly, present: ["a", "b", "c"]).count == 1, "not in the final history: it committed after the histories parted")
        let ranAfter = new + [ack("x", 3.4, "n1", 1, ran: 2.95)]
        #expect(HistoryChecker.splitBrainWindows(ranAfter, present: everything).map(\.writes) == [1], "run after the new primary's first write")
        let noTime = new + [ack("x", 3.4, "n1", 1, ran: nil)]
        #expect(HistoryChecker.splitBrainWindows(noTime, present: everything).count == 1, "no server-side time: it counts")
        var untimedNew = new
        untimedNew[2].ran = nil
        #expect(HistoryChecker.splitBrainWindows(untimedNew + [ack("x", 3.4, "n1", 1, ran: 1.2)], present: everything).count == 1, "the new primary's start unknown")
        let both = lateOnly + [ack("y", 3.6, "n1", 1, ran: 3.5)]
        let windows = HistoryChecker.splitBrainWindows(both, present: everything)
        #expect(windows.map(\.writes) == [1] && windows.first.map { ($0.end - 3.6).magnitude < 1e-9 } == true, "\(windows)")
        #expect(HistoryChecker.late(both, present: everything).map(\.0.id) == ["x"])
    }

    @Test func aCleanFailoverHasNoSplitBrain() {
        let history = [ack("1", 1, "n1", 1), ack("2", 2, "n1", 1), ack("3", 3.5, "n2", 2), ack("4", 4, "n2", 2), ack("5", 9, "n1", 3)]
        #expect(HistoryChecker.splitBrainWindows(history).isEmpty, "n1 came back later on a new timeline: no overlap")
    }

    @Test func theOldPrimaryAcknowledgingAfterTheNewOneBeganIsAWindow() {
        let history = [ack("1", 1, "n1", 1), ack("2", 3, "n2", 2), ack("3", 3.4, "n1", 1), ack("4", 3.9, "n1", 1), ack("5", 4, "n2", 2)]
        let windows = HistoryChecker.splitBrainWindows(history)
        #expect(windows.count == 1)
        #expect(windows.first?.old == "n1" && windows.first?.new == "n2" && windows.first?.writes == 2)
        #expect(windows.first.map { ($0.length - 0.9).magnitude < 1e-9 } == true)
        // Two primaries on the same timeline (a broken timeline claim) count too.
        #expect(HistoryChecker.splitBrainWindows([ack("a", 1, "n1", 2), ack("b", 2, "n2", 2), ack("c", 3, "n1", 2)]).count == 1)
    }

    @Test func lostWritesAreAttributedToTheFaultUnderWay() {
        let history = [ack("1", 1, "n1", 1), ack("2", 5, "n1", 1), ack("3", 12, "n2", 2)]
        let lost = HistoryChecker.lost(history, present: ["1", "3"])
        #expect(lost.map(\.id) == ["2"])
        #expect(HistoryChecker.fault(at: 5, starts: [0, 4, 10]) == 1)
        #expect(HistoryChecker.fault(at: 0.5, starts: [1, 4]) == nil)
    }

    @Test func theReportNamesEveryViolationAndParses() throws {
        let fault = PlannedFault(kind: .freezeNode, target: .primary, duration: 4)
        var outcome = FaultOutcome(index: 0, fault: fault, targets: ["n1"], start: 1, healed: 5, leaderBefore: "n1")
        outcome.convergence = 3.2
        var stuck = FaultOutcome(index: 1, fault: PlannedFault(kind: .killPostmaster, target: .replica, duration: 0), targets: ["n2"], start: 9, healed: 9, leaderBefore: "n2")
        stuck.convergence = nil
        let window = SplitBrainWindow(old: "n1", oldTimeline: 1, new: "n2", newTimeline: 2, start: 3, end: 3.5, writes: 4)
        let report = ChaosReport(
            seed: 7, synchronous: true, nodes: 3, date: "d", machine: "m", settings: "s", outcomes: [outcome, stuck], acknowledged: 10,
            lost: [(ack("x", 2, "n1", 1), fault: 0)], windows: [(window, fault: 0)], convergenceBound: 60)
        #expect(report.violations.count == 3, "\(report.violations)")
        let json = try JSONValue.parse(Array(report.json.serialized().utf8))
        #expect(json.member("faults")?.int64Value == 2)
        #expect(json.member("lost_acknowledged")?.arrayValue?.count == 1)
        #expect(json.member("split_brain_windows")?.arrayValue?.count == 1)
        #expect(json.member("max_convergence_s")?.doubleValue == 3.2)
        #expect(report.markdown.contains("| freeze-node | 1 | 1 |"))
        #expect(!report.markdown.contains("Late answers"))
        var withLate = report
        withLate.late = [(ack("y", 3.2, "n1", 1, ran: 2.1), fault: 0)]
        #expect(withLate.violations == report.violations, "late answers are no violation")
        #expect(withLate.markdown.contains("Late answers, no split brain: 1 acknowledgement(s)") && withLate.markdown.contains("(faults #1)"))
        let late = try JSONValue.parse(Array(withLate.json.serialized().utf8)).member("late_acknowledgements")?.arrayValue
        #expect(late?.first?.member("ran")?.doubleValue == 2.1 && late?.first?.member("fault")?.int64Value == 1)
        let asynchronous = ChaosReport(
            seed: 7, synchronous: false, nodes: 3, date: "d", machine: "m", settings: "s", outcomes: [outcome], acknowledged: 10,
            lost: [(ack("x", 2, "n1", 1), fault: 0)], windows: [], convergenceBound: 60)
        #expect(asynchronous.violations.isEmpty, "asynchronous losses are reported, not a violation")
    }

    @Test("a primary that moved during Consul's own trouble is an unnecessary failover, a violation; during a node's death it is not")
    func unnecessaryFailover() {
        var election = FaultOutcome(
            index: 0, fault: PlannedFault(kind: .consulElection, target: .random, duration: 5), targets: [], start: 1, healed: 6, leaderBefore: "n1")
        election.leaderAfter = "n2"
        election.convergence = 1
        var death = FaultOutcome(
            index: 1, fault: PlannedFault(kind: .nodeDeath, target: .primary, duration: 5), targets: ["n2"], start: 10, healed: 15, leaderBefore: "n2")
        death.leaderAfter = "n3"
        death.convergence = 3
        var stayed = FaultOutcome(
            index: 2, fault: PlannedFault(kind: .agentRestart, target: .primary, duration: 0), targets: ["n3"], start: 20, healed: 20, leaderBefore: "n3")
        stayed.leaderAfter = "n3"
        stayed.convergence = 0.1
        let report = ChaosReport(
            seed: 7, synchronous: true, nodes: 3, date: "d", machine: "m", settings: "s", outcomes: [election, death, stayed], acknowledged: 10,
            lost: [], windows: [], convergenceBound: 60)
        #expect(report.unnecessaryFailovers.map(\.index) == [0])
        #expect(report.violations.count == 1 && report.violations[0].contains("only Consul misbehaved"), "\(report.violations)")
    }
}
