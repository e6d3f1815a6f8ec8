import ConsulAPI

/// What one fault did.
public struct FaultOutcome: Sendable, Equatable {
    public var index: Int
    public var fault: PlannedFault
    /// The nodes it hit.
    public var targets: [String]
    /// Seconds since the run began.
    public var start: Double
    public var healed: Double
    public var leaderBefore: String?
    public var leaderAfter: String?
    /// Seconds from the heal until the cluster converged; nil when it did not within the bound.
    public var convergence: Double?
    /// Acknowledged writes lost whose acknowledgement came while this fault was under way.
    public var lost: Int = 0
    public var splitBrainWindows: Int = 0
    public var splitBrainSeconds: Double = 0
    /// What happened, in words (a switchover refused, a node that stayed down…).
    public var note: String = ""

    public init(index: Int, fault: PlannedFault, targets: [String], start: Double, healed: Double, leaderBefore: String?) {
        self.index = index
        self.fault = fault
        self.targets = targets
        self.start = start
        self.healed = healed
        self.leaderBefore = leaderBefore
    }
}

/// A chaos run's report: JSON for machines, a Markdown table per fault kind for README.
public struct ChaosReport: Sendable {
    public var seed: UInt64
    public var synchronous: Bool
    public var nodes: Int
    public var date: String
    public var machine: String
    public var settings: String
    public var outcomes: [FaultOutcome]
    public var acknowledged: Int
    public var lost: [(Acknowledgement, fault: Int?)]
    public var windows: [(SplitBrainWindow, fault: Int?)]
    /// The bound on convergence, in seconds.
    public var convergenceBound: Double
    /// An old primary's answers that arrived after a newer one began but only came late (no split
    /// brain: see ``HistoryChecker/splitBrainWindows(_:present:)``), with the fault under way.
    public var late: [(Acknowledgement, fault: Int?)] = []

    public init(
        seed: UInt64, synchronous: Bool, nodes: Int, date: String, machine: String, settings: String, outcomes: [FaultOutcome], acknowledged: Int,
        lost: [(Acknowledgement, fault: Int?)], windows: [(SplitBrainWindow, fault: Int?)], convergenceBound: Double
    ) {
        self.seed = seed
        self.synchronous = synchronous
        self.nodes = nodes
        self.date = date
        self.machine = machine
        self.settings = settings
        self.outcomes = outcomes
        self.acknowledged = acknowledged
        self.lost = lost
        self.windows = windows
        self.convergenceBound = convergenceBound
    }

    public var maxConvergence: Double? { outcomes.compactMap(\.convergence).max() }

    /// Faults of Consul's own trouble alone (``FaultKind/isConsulTrouble``) after which another node
    /// led: a failover the database did not need.
    public var unnecessaryFailovers: [FaultOutcome] {
        outcomes.filter { $0.fault.kind.isConsulTrouble && $0.leaderBefore != nil && $0.leaderAfter != $0.leaderBefore }
    }

    /// The invariants this run broke: a split brain, an acknowledged commit lost in synchronous mode, a
    /// cluster that did not converge within the bound.
    public var violations: [String] {
        var found: [String] = []
        for (window, fault) in windows {
            found.append(
                "split brain: \(window.old) (timeline \(window.oldTimeline)) acknowledged \(window.writes) write(s) for \(format(window.length)) s after \(window.new) (timeline \(window.newTimeline)) began, during fault \(fault.map { "#\($0 + 1)" } ?? "?")"
            )
        }
        if synchronous, !lost.isEmpty {
            let byFault = Dictionary(grouping: lost, by: { $0.fault ?? -1 })
            for (fault, items) in byFault.sorted(by: { $0.key < $1.key }) {
                found.append("\(items.count) acknowledged commit(s) lost in synchronous mode, during fault #\(fault + 1)")
            }
        }
        for outcome in unnecessaryFailovers {
            found.append(
                "fault #\(outcome.index + 1) (\(outcome.fault.description)): the primary moved from \(outcome.leaderBefore ?? "?") to \(outcome.leaderAfter ?? "nobody") although only Consul misbehaved"
            )
        }
        for outcome in outcomes where outcome.convergence == nil {
            found.append("fault #\(outcome.index + 1) (\(outcome.fault.description)): no convergence within \(format(convergenceBound)) s")
        }
        return found
    }

    public var json: JSONValue {
        .object([
            ("seed", .number(String(seed))), ("synchronous", .bool(synchronous)), ("nodes", .int(nodes)), ("date", .string(date)),
            ("machine", .string(machine)), ("settings", .string(settings)), ("faults", .int(outcomes.count)),
            ("acknowledged", .int(acknowledged)),
            (
                "lost_acknowledged",
                .array(
                    lost.map { a, fault in
                        .object([
                            ("id", .string(a.id)), ("client", .string(a.client)), ("server", .string(a.server)), ("at", .number(format(a.at))),
                            ("fault", fault.map { .int($0 + 1) } ?? .null),
                        ])
                    })
            ),
            (
                "split_brain_windows",
                .array(
                    windows.map { w, fault in
                        .object([
                            ("old", .string(w.old)), ("old_timeline", .int(w.oldTimeline)), ("new", .string(w.new)), ("new_timeline", .int(w.newTimeline)),
                            ("start", .number(format(w.start))), ("length_s", .number(format(w.length))), ("writes", .int(w.writes)),
                            ("fault", fault.map { .int($0 + 1) } ?? .null),
                        ])
                    })
            ),
            (
                "late_acknowledgements",
                .array(
                    late.map { a, fault in
                        .object([
                            ("id", .string(a.id)), ("client", .string(a.client)), ("server", .string(a.server)), ("at", .number(format(a.at))),
                            ("ran", a.ran.map { .number(format($0)) } ?? .null), ("fault", fault.map { .int($0 + 1) } ?? .null),
                        ])
                    })
            ),
            ("max_convergence_s", maxConvergence.map { .number(format($0)) } ?? .null),
            ("convergence_bound_s", .number(format(convergenceBound))),
            ("violations", .array(violations.map { .string($0) })),
            (
                "outcomes",
                .array(
                    outcomes.map { o in
                        .object([
                            ("fault", .int(o.index + 1)), ("kind", .string(o.fault.kind.rawValue)), ("description", .string(o.fault.description)),
                            ("targets", .array(o.targets.map { .string($0) })), ("start", .number(format(o.start))), ("healed", .number(format(o.healed))),
                            ("leader_before", o.leaderBefore.map { .string($0) } ?? .null), ("leader_after", o.leaderAfter.map { .string($0) } ?? .null),
                            ("convergence_s", o.convergence.map { .number(format($0)) } ?? .null), ("lost", .int(o.lost)),
                            ("split_brain_windows", .int(o.splitBrainWindows)), ("note", .string(o.note)),
                        ])
                    })
            ),
        ])
    }

    /// A table per fault kind (faults of an overlap count under `overlap`).
    public var markdown: String {
        var out = "Chaos run: seed \(seed), \(outcomes.count) faults, synchronous_mode \(synchronous ? "on" : "off"), \(nodes) nodes, \(date), \(machine)\n"
        out += "Settings: \(settings)\n\n"
        out += "| fault | n | converged ≤ \(format(convergenceBound)) s | convergence median (max) [s] | lost acknowledged | split-brain windows |\n"
        out += "| --- | --- | --- | --- | --- | --- |\n"
        for kind in FaultKind.allCases {
            let these = outcomes.filter { $0.fault.kind == kind }
            guard !these.isEmpty else { continue }
            let times = these.compactMap(\.convergence).sorted()
            let median = times.isEmpty ? "-" : format(times[times.count / 2])
            let max = times.last.map(format) ?? "-"
            out += "| \(kind.rawValue) | \(these.count) | \(times.count) | \(median) (\(max)) | \(these.map(\.lost).reduce(0, +)) | \(these.map(\.splitBrainWindows).reduce(0, +)) |\n"
        }
        out += "| **all** | \(outcomes.count) | \(outcomes.filter { $0.convergence != nil }.count) | \(maxConvergence.map { "max " + format($0) } ?? "-") | \(lost.count) of \(acknowledged) | \(windows.count) |\n"
        if !late.isEmpty {
            out += "\nLate answers, no split brain: \(late.count) acknowledgement(s) of an old primary arrived after a newer one began, "
            out += "for writes it had run before the newer one's first and that the final primary holds (faults "
            out += Set(late.compactMap(\.fault)).sorted().map { "#\($0 + 1)" }.joined(separator: ", ") + ").\n"
        }
        return out
    }

    func format(_ value: Double) -> String {
        let scaled = (value * 100).rounded() / 100
        return String(scaled)
    }
}
