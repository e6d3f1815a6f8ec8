import BatonCore
import BatonSim
import Foundation
import Testing

/// The simulator's proofs: Baton's rules from BatonCore, run over simulated PostgreSQL and the embedded
/// Consul server's store, thousands of seeds, every invariant checked after every step.
@Suite("simulation")
struct SimulationTests {
    /// The fault kinds whose safety the simulator proves on every CI run. A kind joins when the
    /// findings it reaches are closed (see ``openFindings``).
    static let proven: [FaultKind] = [
        .postmasterKill, .nodeDeath, .monitorFreeze, .nodeFreeze, .consulCut, .consulElection, .agentRestart, .laggingReplicas,
        .fenceTimeoutLowered, .unknownConfigKey, .malformedConfig, .syncStandbyFlaps, .switchoverThenDeath, .pausedFailure, .switchover,
        .guardiansKilled,
    ]

    /// The proven kinds before `guardians-killed` joined them: the seeds found then are replayed with
    /// the kinds they drew from.
    static let provenBeforeGuardians = proven.filter { $0 != .guardiansKilled }

    /// Issue 23's findings, each as the fault kind that reached it: main broke an invariant under each
    /// (two writable primaries, a promotion past the lag limit, an acknowledged commit lost); these
    /// seeds are runs that did, kept as regressions.
    static let findings: [(kind: FaultKind, sync: SynchronousMode, seeds: [UInt64])] = [
        (.laggingReplicas, .off, [1, 2, 3]),
        (.fenceTimeoutLowered, .off, [1, 2, 3]),
        (.agentRestart, .off, [98]),
    ]

    /// How many seeds CI runs, per synchronous mode (BATON_SIM_SEEDS for more).
    static var budget: Int {
        Int(ProcessInfo.processInfo.environment["BATON_SIM_SEEDS"] ?? "") ?? 5_000
    }

    static func options(sync: SynchronousMode, kinds: [FaultKind], mutant: Mutant? = nil, faults: Int = 4) -> SimulationOptions {
        var options = SimulationOptions()
        options.synchronousMode = sync
        options.kinds = kinds
        options.mutant = mutant
        options.faults = faults
        return options
    }

    /// The violations of a seed range, each with the end of its trace, for a failure message.
    static func describe(_ report: SeedRange.Report, traces: [UInt64: [String]]) -> String {
        report.summary + "\n"
            + report.violations.prefix(3).map { v in
                "\(v)\n" + (traces[v.seed] ?? []).suffix(25).map { "  " + $0 }.joined(separator: "\n")
            }.joined(separator: "\n")
    }

    @Test("one seed replays exactly: the same trace, the same outcome")
    func deterministic() {
        let options = Self.options(sync: .on, kinds: FaultKind.allCases, faults: 8)
        for seed: UInt64 in [1, 7, 42] {
            let first = Simulation(seed: seed, options: options)
            let a = first.run()
            let second = Simulation(seed: seed, options: options)
            let b = second.run()
            #expect(first.trace == second.trace, "seed \(seed)")
            #expect(a?.description == b?.description, "seed \(seed)")
            #expect(first.trace.count > 20, "a run does something: \(first.trace.count) trace lines")
        }
    }

    /// Each synchronous mode with the shipped defaults (failsafe on), and asynchronous with failsafe
    /// off — the strict rule an operator may choose: the invariants hold for both. The run with failsafe
    /// off also proves the takeover's timing alone: no candidate asks the silent leader's PostgreSQL (a
    /// second line; without it, a leader whose monitor and watchdog were killed is not covered, so that
    /// kind is left out there).
    @Test(
        "every invariant holds after every step, over the CI seed budget",
        arguments: [(SynchronousMode.off, true), (.off, false), (.on, true), (.strict, true)])
    func invariantsHold(sync: SynchronousMode, failsafe: Bool) {
        var traces: [UInt64: [String]] = [:]
        let seeds = Self.budget / 2
        var options = Self.options(sync: sync, kinds: failsafe ? Self.proven : Self.provenBeforeGuardians)
        options.failsafeMode = failsafe
        options.askSilentLeader = failsafe
        let report = SeedRange.run(from: 1, count: seeds, options: options) { v, trace in traces[v.seed] = trace }
        print("simulation, synchronous_mode=\(sync.rawValue), failsafe_mode=\(failsafe ? "on" : "off")\(failsafe ? "" : ", the silent leader not asked"): \(report.summary)")
        #expect(report.violations.isEmpty, "\(Self.describe(report, traces: traces))")
        #expect(report.seeds == seeds && report.faults >= seeds * 3, "the faults were simulated: \(report.summary)")
        #expect(report.promotions > seeds / 2, "failovers happened: \(report.summary)")
        #expect(report.acknowledged > seeds * 100, "the workload ran: \(report.summary)")
        #expect(report.switchoverPauses > seeds / 50, "switchovers held clients with (h) checked throughout: \(report.summary)")
    }

    /// Each rule broken on purpose is caught within a small seed budget: the checker's power, checked
    /// on every run.
    @Test("every mutant is caught", arguments: Mutant.allCases.filter { $0 != .rankOnReports })
    func mutantCaught(mutant: Mutant) {
        // A failsafe promise timed by the member's own period is wrong only when the leader's is longer
        // and the member has not read it yet: a raised fence_timeout meeting a Consul election — a
        // coincidence the mix of all kinds draws once in about 2,000 seeds, this mix in about 250.
        var options: SimulationOptions
        let seeds: Int
        switch mutant {
        case .failsafeOwnPeriod:
            options = Self.options(sync: .off, kinds: [.fenceTimeoutLowered, .consulElection], mutant: mutant, faults: 12)
            seeds = 1_000
        case .failsafeForADeadPrimary:
            options = Self.cutThenKilled(mutant: mutant)
            seeds = 20
        case .dropFlappingStandby:
            options = Self.flapsThenDeath(mutant: mutant)
            seeds = 20
        case .ignorePause:
            options = Self.options(sync: .on, kinds: [.pausedFailure], mutant: mutant)
            seeds = 20
        case .takeOverUnasked:
            // Main's rule: the leader's monitor and watchdog killed, its PostgreSQL running on.
            options = Self.options(sync: .off, kinds: [.guardiansKilled], mutant: mutant)
            seeds = 20
        case .resumeBeforeLeads:
            // Every switchover hands over or is called off: the mutant agents send clients to a standby.
            options = Self.options(sync: .off, kinds: [.switchover], mutant: mutant)
            seeds = 20
        case .handOverUnreceived:
            // Asynchronous: every commit is acknowledged at once, so a target that missed the last ones
            // loses acknowledged commits (in synchronous mode the primary waits for its target anyway).
            options = Self.options(sync: .off, kinds: [.switchover], mutant: mutant)
            seeds = 20
        case .noFencingPromise:
            // With failsafe on, a member that promised times a takeover by its own promise, not by the
            // key's: the rule this mutant breaks is the key's, which decides without failsafe.
            options = Self.options(sync: .on, kinds: Self.proven, mutant: mutant)
            options.failsafeMode = false
            seeds = 100
        case .renewAfterLostCAS:
            // With failsafe on, a beat that did not get through renews through the members' promises
            // anyway: the rule this mutant breaks is the one without failsafe. And a candidate asks the
            // other nodes' APIs before it takes the lock, so the mutant leader must not answer: its
            // monitor frozen, as `fence-timeout-lowered` does, after a cut from Consul (9 of 100 seeds).
            options = Self.options(sync: .on, kinds: [.consulCut, .fenceTimeoutLowered], mutant: mutant)
            options.failsafeMode = false
            seeds = 100
        default:
            options = Self.options(sync: .on, kinds: Self.proven, mutant: mutant)
            seeds = 100
        }
        // A candidate about to take over asks the silent leader's PostgreSQL: a second line, which hides
        // a broken takeover rule whenever the leader's PostgreSQL answers in time (live, it may not).
        // The checker's power over the rules themselves is measured without it.
        if mutant != .takeOverUnasked { options.askSilentLeader = false }
        let report = SeedRange.run(from: 1, count: seeds, options: options, untilFirstViolation: true)
        #expect(!report.violations.isEmpty, "\(mutant.rawValue) went unnoticed over \(seeds) seeds: \(report.summary)")
    }

    /// Issue 24: Consul's own everyday trouble — elections (every call 500 for up to 15 s), a
    /// restarted agent dropping a node's sessions, a node cut from Consul — while every PostgreSQL is
    /// healthy is never a reason to fail over (the invariant "needless failover" holds in runs of only
    /// these kinds). Main, failsafe off by default: 278 of 300 seeds failed over.
    @Test("Consul's everyday trouble moves nothing: no failover in runs of only Consul faults", arguments: [SynchronousMode.off, .on])
    func consulTroubleIsANonEvent(sync: SynchronousMode) {
        var traces: [UInt64: [String]] = [:]
        let options = Self.options(sync: sync, kinds: FaultKind.allCases.filter(\.isConsulTrouble), faults: 6)
        let report = SeedRange.run(from: 1, count: 500, options: options) { v, trace in traces[v.seed] = trace }
        #expect(report.violations.isEmpty, "\(Self.describe(report, traces: traces))")
        #expect(report.promotions == 0 && report.faults >= 500 * 5, "\(report.summary)")
    }

    /// Issue 23, finding 5: the primary cut from Consul (40 s), its postmaster killed 2 s later. The
    /// replicas still reach Consul and see it holding the lock; if it kept asking for failsafe grants
    /// they would promise again and again not to take over — no primary for as long as the cut lasts.
    /// The run ends 27 s in, the cut still on: one node must lead a writable primary by then.
    static func cutThenKilled(mutant: Mutant? = nil) -> SimulationOptions {
        scripted(
            sync: .off, [Fault(kind: .consulCut, at: .seconds(10), length: .seconds(40)), Fault(kind: .postmasterKill, at: .seconds(12), length: .zero)],
            mutant: mutant)
    }

    /// A scenario spelled out: `script` from 10 s in, the run ending 27 s in (before faults of 40 s heal).
    static func scripted(sync: SynchronousMode, _ script: [Fault], mutant: Mutant? = nil) -> SimulationOptions {
        let kinds = script.map(\.kind).reduce(into: [FaultKind]()) { if !$0.contains($1) { $0.append($1) } }
        var options = Self.options(sync: sync, kinds: kinds, mutant: mutant)
        options.script = script
        options.faultPhase = .seconds(15)
        options.quietPhase = .seconds(12)
        return options
    }

    /// Seeds 1–20 of a scripted scenario: no invariant broken, and exactly one failover.
    static func expectOneFailover(_ options: SimulationOptions) {
        for seed: UInt64 in 1...20 {
            let run = Simulation(seed: seed, options: options)
            let violation = run.run()
            #expect(violation == nil, "seed \(seed): \(violation.map(String.init(describing:)) ?? "")\n\(run.trace.suffix(20).joined(separator: "\n"))")
            #expect(run.counts.promotions == 1, "seed \(seed): one failover")
        }
    }

    @Test("a leader cut from Consul whose PostgreSQL died asks for no failsafe grant: a replica takes over while the cut lasts")
    func failsafeNotForADeadPrimary() { Self.expectOneFailover(Self.cutThenKilled()) }

    /// Issue 23, finding 14: synchronous mode on, the synchronous standby's WAL receiver killed three
    /// times 0.4 s apart, and the primary's machine dies as the standby streams again (for 40 s; the run
    /// ends 27 s in, before it is back). If the primary dropped the standby from the `sync` key at its
    /// first disconnect and recorded it again only a loop after it caught up, nobody may promote: no
    /// primary until the old one returns.
    static func flapsThenDeath(mutant: Mutant? = nil) -> SimulationOptions {
        scripted(
            sync: .on,
            [Fault(kind: .syncStandbyFlaps, at: .seconds(10), length: .zero), Fault(kind: .nodeDeath, at: .milliseconds(11_300), length: .seconds(40))],
            mutant: mutant)
    }

    @Test("a synchronous standby whose receiver flaps stays recorded: when the primary then dies it takes over, every acknowledged commit kept")
    func flappingSynchronousStandby() { Self.expectOneFailover(Self.flapsThenDeath()) }

    /// Issue 23, finding 8 (a): synchronous mode on, a switchover to the asynchronous standby requested,
    /// and the leader's machine dies before it steps down. The request must not make its target the
    /// one node that takes over: it may lack acknowledged commits.
    @Test("a pending switchover never promotes a standby that may lack acknowledged commits when the leader dies first")
    func switchoverThenDeath() {
        Self.expectOneFailover(Self.scripted(sync: .on, [Fault(kind: .switchoverThenDeath, at: .seconds(10), length: .seconds(40))]))
    }

    /// The switchover's steps (``StepDown``) as the leader carries them out in the simulator, each taking
    /// time: to a standby that streams, the target takes over with every commit; to one whose WAL
    /// receiver died as it was asked, the clean stop's checkpoint never reaches it and the switchover is
    /// called off — the old primary proves the lock and starts again, nobody is promoted. The pgbouncer
    /// agents hold their clients from before the stop until the new primary leads.
    @Test("a switchover hands over every commit, clients held meanwhile; to a target that stopped receiving it is called off", arguments: [SynchronousMode.off, .on])
    func switchoverSteps(sync: SynchronousMode) {
        // Choices 0 and 1 ask for one standby each, link up; 500 and 501 the same, their receivers down
        // 8 s. In synchronous mode `baton switchover`'s check refuses the standby that is not the
        // synchronous one: one of each pair runs.
        for (choices, handsOver) in [([0, 1], true), ([500, 501], false)] {
            for seed: UInt64 in 1...5 {
                var asked = 0
                for choice in choices {
                    let options = Self.scripted(sync: sync, [Fault(kind: .switchover, at: .seconds(10), length: .seconds(8), choice: choice)])
                    let run = Simulation(seed: seed, options: options)
                    let violation = run.run()
                    let context = "choice \(choice), seed \(seed): \(violation.map(String.init(describing:)) ?? "")\n\(run.trace.suffix(15).joined(separator: "\n"))"
                    #expect(violation == nil, "\(context)")
                    guard let request = run.trace.first(where: { $0.contains("FAULT switchover to") }),
                        let target = request.split(separator: " ").drop(while: { $0 != "to" }).dropFirst().first
                    else { continue }
                    asked += 1
                    if handsOver {
                        #expect(run.trace.contains { $0.contains("pg1 stepped down for \(target)") }, "\(context)")
                        #expect(run.counts.promotions == 1 && run.trace.contains { $0.contains("\(target) promoted") }, "\(context)")
                        // Every pgbouncer held its clients before the stop and took them up on the new
                        // primary, invariant (h) checked after every step in between.
                        #expect(run.trace.contains { $0.contains("\(target) ended the pgbouncers' pause") }, "\(context)")
                        #expect(run.counts.switchoverPauses == 1, "\(context)")
                    } else {
                        #expect(run.trace.contains { $0.contains("pg1 called the switchover off: \(target) did not receive WAL") }, "\(context)")
                        #expect(run.counts.promotions == 0, "\(context)")
                    }
                }
                #expect(asked >= (sync == .off ? 2 : 1), "seed \(seed): the requests were accepted")
            }
        }
    }

    /// Finding 14, measured: runs of eight flaps each in synchronous mode, the share of the primary's
    /// time (with a standby following it) in which the `sync` key named nobody — no failover possible
    /// without losing commits. 2026-12-06, 300 seeds: 3.7 % waiting out the grace (the first record
    /// after the start, nothing else), 13.7 % dropping the standby at its first absence.
    @Test("waiting out a flapping synchronous standby leaves the cluster less often with nobody to promote")
    func flappingStandbyMeasured() {
        let damped = SeedRange.run(from: 1, count: 300, options: Self.options(sync: .on, kinds: [.syncStandbyFlaps], faults: 8))
        let dropped = SeedRange.run(from: 1, count: 300, options: Self.options(sync: .on, kinds: [.syncStandbyFlaps], mutant: .dropFlappingStandby, faults: 8))
        print(String(format: "no synchronous standby recorded: %.2f %% of the primary's time waiting out the grace, %.2f %% dropping at once", damped.unprotectedFraction * 100, dropped.unprotectedFraction * 100))
        #expect(damped.violations.isEmpty, "\(damped.summary)")
        #expect(damped.unprotectedFraction < dropped.unprotectedFraction / 2, "damped \(damped.summary)\ndropped \(dropped.summary)")
    }

    /// Issue 23, finding 12: candidates ranked on the others' reports (up to 1.5 loops old) could
    /// promote a standby while another was further ahead; asked over their node APIs first, fewer do
    /// (2026-12-06: 34 of 1,051 promotions on reports alone, 9 of 1,053 asking — those left are peers
    /// still starting up when asked). A measurement over the same seeds, not an invariant:
    /// asynchronous replication allows it within the lag limit.
    @Test("asking the other candidates' node APIs before taking the lock promotes a less advanced standby less often")
    func livePositionsBeforePromoting() {
        let kinds: [FaultKind] = [.nodeFreeze, .monitorFreeze, .laggingReplicas, .postmasterKill, .nodeDeath]
        let live = SeedRange.run(from: 1, count: 500, options: Self.options(sync: .off, kinds: kinds))
        let reports = SeedRange.run(from: 1, count: 500, options: Self.options(sync: .off, kinds: kinds, mutant: .rankOnReports))
        print("less advanced promotions: \(live.lessAdvancedPromotions) of \(live.promotions) asking the node APIs, \(reports.lessAdvancedPromotions) of \(reports.promotions) on reports alone")
        #expect(live.violations.isEmpty, "\(live.summary)")
        #expect(live.lessAdvancedPromotions < reports.lessAdvancedPromotions, "live \(live.summary)\nreports \(reports.summary)")
    }

    /// Failsafe on by default met a raised fence_timeout: a member that had not read it yet promised
    /// the leader 3 s while the leader armed 8 s on the strength of it; the promise ran out, a replica
    /// took over a leader still writable (seed 1,544 of the mix of all kinds, asynchronous). The request
    /// now carries the leader's period and the promise outlasts it.
    @Test("a failsafe promise outlasts the leader's fence period, not the member's own")
    func failsafePromiseOutlastsTheLeader() {
        // The kinds proven when the seed was found (the seed draws its faults from them).
        let kinds = Self.provenBeforeGuardians.filter { ![.syncStandbyFlaps, .switchoverThenDeath, .pausedFailure, .switchover].contains($0) }
        // Found before the pgbouncer agents joined the simulator: replayed as it was found.
        var options = Self.options(sync: .off, kinds: kinds)
        options.bouncers = false
        let run = Simulation(seed: 1544, options: options)
        let violation = run.run()
        #expect(violation == nil, "\(violation.map(String.init(describing:)) ?? "")\n\(run.trace.suffix(20).joined(separator: "\n"))")
        #expect(run.trace.contains { $0.contains("failsafe: every member confirmed") }, "the seed still plays a failsafe round")
    }

    /// The first 20,000 seeds with `switchover` among the kinds (asynchronous) found seed 207,052: a
    /// switchover handed over to pg3 while its monitor was frozen; pg1 led again when pg3 did not come,
    /// wrote on, and died while the receivers were stopped; pg3 thawed and took the free lock by the old
    /// handover, 1.6 MB behind pg1's last report — past `maximum_lag_on_failover`. A handover now vouches
    /// only for the history up to where it was handed over (`TakeoverRequest.handedOverAt`).
    @Test("a handover outlived by a newer primary promotes nobody past the lag limit")
    func staleHandover() {
        // Found before the pgbouncer agents joined the simulator: replayed as it was found.
        var options = Self.options(sync: .off, kinds: Self.provenBeforeGuardians)
        options.bouncers = false
        let run = Simulation(seed: 207_052, options: options)
        let violation = run.run()
        #expect(violation == nil, "\(violation.map(String.init(describing:)) ?? "")\n\(run.trace.suffix(20).joined(separator: "\n"))")
        #expect(run.trace.contains { $0.contains("pg1 stepped down for pg3") }, "the seed still hands over")
    }

    @Test("the seeds that broke main's rules hold now", arguments: 0..<3)
    func findingsClosed(finding: Int) {
        let (kind, sync, seeds) = Self.findings[finding]
        for seed in seeds {
            let run = Simulation(seed: seed, options: Self.options(sync: sync, kinds: [kind]))
            let violation = run.run()
            #expect(violation == nil, "\(kind.rawValue), seed \(seed): \(violation.map(String.init(describing:)) ?? "")\n\(run.trace.suffix(20).joined(separator: "\n"))")
        }
    }

    /// Consul restored from an older snapshot. A stale node no longer leads on a leader key that came
    /// back, nor trusts a report that came back (main before: 292 violations in 3,000 seeds of this mix).
    /// A restore that forgets a leader's last heartbeats, or its whole tenure, while its watchdog still
    /// counts on them no longer lets a second primary write: whoever notices Consul going back takes no
    /// lock for a fence, and no node takes the lock while another node's API answers that it runs a
    /// writable primary (main before: 19 of 3,000 seeds with two writable primaries, first 69, 175, 392 —
    /// these seeds included). What remains, bounded here so that it cannot grow unseen: in asynchronous
    /// mode a restore that forgot the last primary's newest reports lets a failover measure the lag
    /// against older ones (2 of these 1,000 seeds) — no monitor can read a write Consul forgot.
    @Test("Consul restored from a snapshot: never two writable primaries; what remains, bounded")
    func consulRestore() {
        var traces: [UInt64: [String]] = [:]
        let options = Self.options(sync: .off, kinds: [.consulRestore, .postmasterKill, .nodeDeath, .monitorFreeze], faults: 6)
        let report = SeedRange.run(from: 1, count: 1000, options: options) { v, trace in traces[v.seed] = trace }
        let twoWritable = report.violations.filter { $0.invariant == "two writable primaries" }
        #expect(twoWritable.isEmpty, "\(twoWritable.map(\.description))\n\(Self.describe(report, traces: traces))")
        #expect(report.violations.count <= 5, "\(Self.describe(report, traces: traces))")
    }

    /// Every kind, seeds 525 and 629 (2026-12-07): a restore of Consul also took back a raised
    /// `fence_timeout` and the leader key's promise with it; the replica that noticed the restore waited
    /// out the old, shorter fence and took over a leader that had armed the longer one. The wait after a
    /// restore now counts the longest fence the monitor ever read. Seed 404,141 of the proven kinds found
    /// the simulator reading a promoted target's current position where `pg_last_wal_receive_lsn()`
    /// stays where its recovery ended: a switchover whose target was promoted by a failover meanwhile
    /// is called off, not counted as handed over.
    @Test("a restore that took back a raised fence_timeout, and a switchover overtaken by a failover, hold")
    func restoreOfARaisedFenceAndAnOvertakenSwitchover() {
        for seed: UInt64 in [525, 629] {
            let run = Simulation(seed: seed, options: Self.options(sync: .off, kinds: FaultKind.allCases.filter { $0 != .guardiansKilled }))
            let violation = run.run()
            #expect(violation == nil, "seed \(seed): \(violation.map(String.init(describing:)) ?? "")\n\(run.trace.suffix(20).joined(separator: "\n"))")
        }
        let run = Simulation(seed: 404_141, options: Self.options(sync: .off, kinds: Self.provenBeforeGuardians))
        let violation = run.run()
        #expect(violation == nil, "\(violation.map(String.init(describing:)) ?? "")\n\(run.trace.suffix(20).joined(separator: "\n"))")
        #expect(run.trace.contains { $0.contains("pg1 called the switchover off (pg2 did not receive WAL") }, "the seed still overtakes its switchover")
    }

    @Test("a violation names its seed, the invariant and a trace that ends with it; the seed replays it")
    func violationReport() throws {
        var options = Self.options(sync: .on, kinds: Self.proven, mutant: .takeOverBeforeDeadline)
        options.askSilentLeader = false  // the second line would hide the mutant (`mutantCaught`)
        let found = (UInt64(1)...50).lazy.compactMap { seed -> (Simulation, Simulation.Violation)? in
            let run = Simulation(seed: seed, options: options)
            return run.run().map { (run, $0) }
        }.first
        let (run, violation) = try #require(found, "the mutant is caught within 50 seeds")
        #expect(violation.invariant == "two writable primaries")
        #expect(run.trace.last?.contains("VIOLATION two writable primaries") == true, "\(run.trace.suffix(3))")
        let replay = Simulation(seed: violation.seed, options: options)
        #expect(replay.run()?.description == violation.description)
        #expect(replay.trace == run.trace)
    }
}
