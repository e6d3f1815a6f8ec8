import BatonChaosCore
import BatonConsul
import BatonCore
import BatonPostgres
import BatonProxy
import Foundation
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// `baton-chaos`: random faults in the namespace lab, under a workload that records every
/// acknowledged write, then a history check — never two writable primaries, never a lost acknowledged
/// commit in synchronous mode — and a report anyone can rerun with the same seed. `scripts/chaos.sh`
/// runs it. `baton-chaos proxy …` is the delaying proxy the lab puts in front of Consul.
@main
struct BatonChaos {
    struct Options {
        var faults = 100
        var seed = UInt64.random(in: 1...999_999)
        var synchronous = true
        var nodes = 3
        var report = "chaos-report.json"
        var labScript = "scripts/lab.sh"
        var labDirectory = "/tmp/baton-chaos-lab"
        var convergenceBound = 60.0
        /// Print the schedule and stop.
        var planOnly = false
        /// The fault kinds to draw from (nil: all).
        var only: Set<FaultKind>?

        static let usage = """
            usage: baton-chaos [--faults N] [--seed S] [--sync on|off] [--nodes 3] [--report FILE.json]
                               [--only KIND,KIND…] [--lab-script scripts/lab.sh] [--lab-dir DIR] [--plan]
                   baton-chaos proxy --listen HOST:PORT --upstream HOST:PORT --delay-file FILE
            """

        init(_ arguments: [String]) throws {
            var rest = arguments[...]
            while let flag = rest.popFirst() {
                if flag == "--plan" {
                    planOnly = true
                    continue
                }
                guard let value = rest.popFirst() else { throw ChaosError("\(flag) needs a value") }
                switch flag {
                case "--faults":
                    guard let n = Int(value), (1...10_000).contains(n) else { throw ChaosError("--faults must be 1 to 10000") }
                    faults = n
                case "--seed":
                    guard let s = UInt64(value) else { throw ChaosError("--seed must be a number") }
                    seed = s
                case "--sync":
                    guard value == "on" || value == "off" else { throw ChaosError("--sync must be on or off") }
                    synchronous = value == "on"
                case "--nodes":
                    guard let n = Int(value), (3...9).contains(n) else { throw ChaosError("--nodes must be 3 to 9") }
                    nodes = n
                case "--only":
                    var kinds: Set<FaultKind> = []
                    for name in value.split(separator: ",", omittingEmptySubsequences: false) {
                        guard let kind = FaultKind(rawValue: String(name)) else {
                            throw ChaosError("--only: no fault kind \"\(name)\"; the kinds are \(FaultKind.allCases.map(\.rawValue).joined(separator: ", "))")
                        }
                        kinds.insert(kind)
                    }
                    only = kinds
                case "--report": report = value
                case "--lab-script": labScript = value
                case "--lab-dir": labDirectory = value
                default: throw ChaosError("unknown option \(flag)")
                }
            }
            if let only, let problem = ChaosSchedule.problem(only: only, synchronous: synchronous) { throw ChaosError("--only: \(problem)") }
        }

        var schedule: [PlannedFault] { ChaosSchedule.make(seed: seed, count: faults, synchronous: synchronous, only: only) }
    }

    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "proxy" {
            exit(proxy(Array(arguments.dropFirst())))
        }
        let options: Options
        do { options = try Options(arguments) } catch {
            FileHandle.standardError.write(Data("baton-chaos: \(error)\n\(Options.usage)\n".utf8))
            exit(2)
        }
        if options.planOnly {
            for (i, fault) in options.schedule.enumerated() {
                print("[\(i + 1)] \(fault.description)")
            }
            exit(0)
        }
        guard getuid() == 0 else {
            FileHandle.standardError.write(Data("baton-chaos: needs root (network namespaces); run scripts/chaos.sh\n".utf8))
            exit(2)
        }
        let status = await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await run(options) }
            group.addTask {
                for await signal in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                    say("\(signal): stopping; the lab is torn down")
                    return nil
                }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            // The run tears the lab down before it returns, also when cancelled.
            let second = await group.next() ?? nil
            return first ?? second ?? 130
        }
        exit(status)
    }

    static func say(_ line: String) {
        let stamp = String(format: "%.1f", Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 86_400))
        FileHandle.standardOutput.write(Data("[\(stamp)] \(line)\n".utf8))
    }

    /// The whole run; the lab is torn down at the end, whatever happens.
    static func run(_ options: Options) async -> Int32 {
        let baton = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("baton").path
        let lab: ChaosLab
        do {
            lab = try ChaosLab(directory: options.labDirectory, script: options.labScript, baton: baton, nodes: options.nodes)
        } catch {
            say("\(error)")
            return 2
        }
        let status: Int32
        do {
            status = try await chaos(options, lab: lab)
        } catch {
            say(error is CancellationError ? "stopped" : "chaos run failed: \(error)")
            status = error is CancellationError ? 130 : 2
        }
        // A run that found something keeps every daemon's log for the post-mortem.
        do { try await lab.down(keepingLogs: status != 0) } catch { say("tearing the lab down failed: \(error)") }
        if status != 0 { say("the daemons' logs are kept in \(options.labDirectory).kept") }
        return status
    }

    static func chaos(_ options: Options, lab: ChaosLab) async throws -> Int32 {
        let schedule = options.schedule
        let kinds = options.only.map { ", only " + $0.map(\.rawValue).sorted().joined(separator: ",") } ?? ""
        say("seed \(options.seed)\(kinds): \(options.faults) faults, synchronous_mode \(options.synchronous ? "on" : "off"), \(options.nodes) nodes")
        try await lab.lab("up", String(options.nodes), timeout: .seconds(600))
        let consul = try lab.consul()
        let setting = try await lab.runner.run(
            baton(lab), ["config", "set", "--config", lab.configPath("n1"), "synchronous_mode=\(options.synchronous ? "on" : "off")"])
        guard setting.succeeded else { throw ChaosError("cannot set synchronous_mode: \(setting.output)") }
        let primary = try await lab.connect("n1")
        for table in ["chaos_writes", "chaos_probe"] {
            try await primary.query("CREATE TABLE \(table) (id text PRIMARY KEY, client text, at timestamptz DEFAULT clock_timestamp())")
            try await primary.query("GRANT ALL ON \(table) TO app")
        }
        primary.close()
        let convergence = Convergence(lab: lab, consul: consul)
        let bound = Duration.seconds(options.convergenceBound)
        let (settled, why) = await convergence.await(bound: bound)
        guard settled != nil else { throw ChaosError("the lab never settled: \(why ?? "?")") }
        if options.synchronous {
            for _ in 0..<100 where await lab.synchronousStandby(consul) == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let history = History()
        let injector = FaultInjector(lab: lab, consul: consul)
        var outcomes: [FaultOutcome] = []
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await Workload(lab: lab, history: history).run() }
            try await Task.sleep(for: .seconds(2))
            for (index, fault) in schedule.enumerated() {
                try Task.checkCancellation()
                let leader = await lab.leader(consul)
                let sync = options.synchronous ? await lab.synchronousStandby(consul) : nil
                let start = history.now
                let done = await injector.perform(fault, leader: leader, sync: sync)
                var outcome = FaultOutcome(index: index, fault: fault, targets: done.targets, start: start, healed: history.now, leaderBefore: leader)
                outcome.note = done.note
                let (took, missing) = await convergence.await(bound: bound)
                outcome.convergence = took
                if took == nil { outcome.note += (outcome.note.isEmpty ? "" : "; ") + "not converged: \(missing ?? "?")" }
                outcome.leaderAfter = await lab.leader(consul)
                outcomes.append(outcome)
                let line = String(format: "[%3d/%d] %@ on %@ → leader %@, %@%@", index + 1, schedule.count, fault.description,
                    done.targets.joined(separator: ",").isEmpty ? "-" : done.targets.joined(separator: ","), outcome.leaderAfter ?? "none",
                    took.map { String(format: "converged in %.1fs", $0) } ?? "NOT converged within \(Int(options.convergenceBound))s",
                    done.note.isEmpty ? "" : " (\(done.note))")
                say(line)
            }
            try await Task.sleep(for: .seconds(2))
            group.cancelAll()
        }
        // The history, checked against the final primary.
        _ = await convergence.await(bound: bound)
        let acknowledgements = history.acknowledgements
        guard let final = await lab.leader(consul), let connection = try? await lab.connect(final) else {
            throw ChaosError("no primary at the end to check the history against")
        }
        var present = Set<String>()
        for table in ["chaos_writes", "chaos_probe"] {
            for row in try await connection.query("SELECT id FROM \(table)", timeout: .seconds(60)) { if let id = row[0] { present.insert(id) } }
        }
        connection.close()
        let starts = outcomes.map(\.start)
        let lost = HistoryChecker.lost(acknowledgements, present: present).map { ($0, fault: HistoryChecker.fault(at: $0.at, starts: starts)) }
        let windows = HistoryChecker.splitBrainWindows(acknowledgements, present: present).map {
            ($0, fault: HistoryChecker.fault(at: $0.start, starts: starts))
        }
        let late = HistoryChecker.late(acknowledgements, present: present)
        for (a, fault) in lost { if let fault { outcomes[fault].lost += 1 } else { _ = a } }
        for (w, fault) in windows {
            guard let fault else { continue }
            outcomes[fault].splitBrainWindows += 1
            outcomes[fault].splitBrainSeconds += w.length
        }
        var report = ChaosReport(
            seed: options.seed, synchronous: options.synchronous, nodes: options.nodes, date: ISO8601DateFormatter().string(from: Date()),
            machine: machine(),
            settings: "ttl 10s, loop_wait 1s, fence_timeout 3s, primary_start_timeout 60s, probe every 50 ms, 3 writers"
                + (options.only.map { ", faults only of the kinds " + $0.map(\.rawValue).sorted().joined(separator: ",") } ?? ""),
            outcomes: outcomes, acknowledged: acknowledgements.count, lost: lost, windows: windows, convergenceBound: options.convergenceBound)
        report.late = late.map { a, _ in (a, fault: HistoryChecker.fault(at: a.at, starts: starts)) }
        try report.json.serialized().write(toFile: options.report, atomically: true, encoding: .utf8)
        let markdownPath = options.report.hasSuffix(".json") ? String(options.report.dropLast(5)) + ".md" : options.report + ".md"
        try report.markdown.write(toFile: markdownPath, atomically: true, encoding: .utf8)
        FileHandle.standardOutput.write(Data(("\n" + report.markdown + "\n").utf8))
        say("\(acknowledgements.count) acknowledged writes (\(history.attempted) attempted), \(lost.count) lost, \(windows.count) split-brain window(s)")
        // Answers an old primary sent before the new one began that arrived after (a frozen server, a
        // held-up link): no split brain, but shown, so that a reader can check each.
        if !late.isEmpty {
            say("\(late.count) acknowledgement(s) of an old primary arrived after a newer one began but only came late — run before its first write and in the final history:")
        }
        for (a, w) in late.prefix(20) { say(describe(a, w)) }
        say("report: \(options.report) and \(markdownPath)")
        let violations = report.violations
        if violations.isEmpty {
            say("no invariant violated")
            return 0
        }
        for v in violations { say("VIOLATION: \(v)") }
        // Each split brain's late acknowledgements: which client, when it arrived and when the server ran
        // the INSERT (the lab's nodes share this machine's clock), on the run's clock.
        let excused = Set(late.map(\.0.id))
        for (w, _) in windows {
            for a in acknowledgements where a.server == w.old && a.timeline == w.oldTimeline && a.at > w.start && !excused.contains(a.id) {
                say(describe(a, w))
            }
        }
        return 1
    }

    /// One acknowledgement that arrived after `w.new` began: its client, when it arrived and when the
    /// server ran the INSERT, on the run's clock.
    static func describe(_ a: Acknowledgement, _ w: SplitBrainWindow) -> String {
        let ran = a.ran.map { String(format: "%.3f", $0) } ?? "?"
        return String(format: "  late: %@ (%@) arrived %.3f, ran on %@ at %@; %@ began at %.3f", a.id, a.client, a.at, a.server, ran, w.new, w.start)
    }

    static func baton(_ lab: ChaosLab) -> String { lab.baton }

    static func machine() -> String {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let memory = ProcessInfo.processInfo.physicalMemory / (1 << 30)
        return "\(cores) cores, \(memory) GiB"
    }

    /// `baton-chaos proxy`: a TCP proxy whose delay follows a file (milliseconds), until killed.
    static func proxy(_ arguments: [String]) -> Int32 {
        var listen: String?
        var upstream: String?
        var delayFile: String?
        var rest = arguments[...]
        while let flag = rest.popFirst(), let value = rest.popFirst() {
            switch flag {
            case "--listen": listen = value
            case "--upstream": upstream = value
            case "--delay-file": delayFile = value
            default: break
            }
        }
        guard let listen, let upstream, let delayFile, let l = listen.split(separator: ":").last.flatMap({ Int($0) }),
            let u = upstream.split(separator: ":").last.flatMap({ Int($0) })
        else {
            FileHandle.standardError.write(Data("baton-chaos proxy: needs --listen HOST:PORT --upstream HOST:PORT --delay-file FILE\n".utf8))
            return 2
        }
        let proxy: SeverableProxy
        do {
            proxy = try SeverableProxy(
                listenHost: String(listen.split(separator: ":").first ?? ""), listenPort: l, upstreamHost: String(upstream.split(separator: ":").first ?? ""),
                upstreamPort: u)
        } catch {
            FileHandle.standardError.write(Data("baton-chaos proxy: \(error)\n".utf8))
            return 1
        }
        while true {
            let text = (try? String(contentsOfFile: delayFile, encoding: .utf8)) ?? "0"
            proxy.setDelay(.milliseconds(Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0))
            usleep(100_000)
        }
    }
}
