import Dispatch
import Foundation
import Synchronization

/// Runs many seeds and sums them up.
public enum SeedRange {
    public struct Report: Sendable {
        public var seeds = 0
        public var faults = 0
        public var steps = 0
        public var promotions = 0
        /// Promotions while another standby was further ahead (``Simulation/Counts/lessAdvancedPromotions``).
        public var lessAdvancedPromotions = 0
        public var acknowledged = 0
        /// ``Simulation/Counts/switchoverPauses``.
        public var switchoverPauses = 0
        /// ``Simulation/Counts/synchronousPrimaryTicks`` and ``Simulation/Counts/unprotectedTicks``.
        public var synchronousPrimaryTicks = 0
        public var unprotectedTicks = 0
        public var violations: [Simulation.Violation] = []
        public var seconds = 0.0

        /// The fraction of a synchronous-mode primary's time in which nobody could have been promoted
        /// automatically without losing an acknowledged commit.
        public var unprotectedFraction: Double { synchronousPrimaryTicks == 0 ? 0 : Double(unprotectedTicks) / Double(synchronousPrimaryTicks) }

        /// Violations by invariant, most first.
        public var byInvariant: [(String, Int)] {
            Dictionary(grouping: violations, by: \.invariant).map { ($0.key, $0.value.count) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        }

        public var summary: String {
            let rate = seconds > 0 ? Double(seeds) / seconds : 0
            var text = "\(seeds) seeds in \(String(format: "%.1f", seconds)) s (\(Int(rate)) seeds/s): \(faults) faults, \(steps) steps, "
            text += "\(promotions) promotions (\(lessAdvancedPromotions) of a standby less advanced than another), \(acknowledged) acknowledged commits; \(violations.count) violations"
            if switchoverPauses > 0 { text += "\n  \(switchoverPauses) switchovers whose pgbouncers' pause was checked throughout" }
            if synchronousPrimaryTicks > 0 {
                text += String(format: "\n  %.2f %% of the primary's time with no synchronous standby recorded", unprotectedFraction * 100)
            }
            for (invariant, count) in byInvariant { text += "\n  \(count) × \(invariant) (first: seed \(violations.first { $0.invariant == invariant }!.seed))" }
            return text
        }
    }

    /// Runs seeds `from` … `from + count - 1` on `workers` threads; `found` sees each violating run, in
    /// the order of their seeds, once all ran. With `untilFirstViolation` the workers stop once one of
    /// them found a violation (a mutant's test needs one, not all).
    public static func run(
        from: UInt64, count: Int, options: SimulationOptions, workers: Int = 2, untilFirstViolation: Bool = false,
        found: (Simulation.Violation, [String]) -> Void = { _, _ in }
    ) -> Report {
        let start = Date()
        let shared = Mutex((report: Report(), traces: [UInt64: [String]]()))
        let violated = Atomic<Bool>(false)
        DispatchQueue.concurrentPerform(iterations: max(1, workers)) { worker in
            var local = Report()
            var traces: [UInt64: [String]] = [:]
            var seed = from + UInt64(worker)
            while seed < from + UInt64(count), !(untilFirstViolation && violated.load(ordering: .relaxed)) {
                let run = Simulation(seed: seed, options: options)
                if let violation = run.run() {
                    local.violations.append(violation)
                    traces[seed] = run.trace
                    violated.store(true, ordering: .relaxed)
                }
                local.seeds += 1
                local.faults += run.counts.faults
                local.steps += run.counts.steps
                local.promotions += run.counts.promotions
                local.lessAdvancedPromotions += run.counts.lessAdvancedPromotions
                local.acknowledged += run.counts.acknowledged
                local.switchoverPauses += run.counts.switchoverPauses
                local.synchronousPrimaryTicks += run.counts.synchronousPrimaryTicks
                local.unprotectedTicks += run.counts.unprotectedTicks
                seed += UInt64(max(1, workers))
            }
            shared.withLock { all in
                all.report.seeds += local.seeds
                all.report.faults += local.faults
                all.report.steps += local.steps
                all.report.promotions += local.promotions
                all.report.lessAdvancedPromotions += local.lessAdvancedPromotions
                all.report.acknowledged += local.acknowledged
                all.report.switchoverPauses += local.switchoverPauses
                all.report.synchronousPrimaryTicks += local.synchronousPrimaryTicks
                all.report.unprotectedTicks += local.unprotectedTicks
                all.report.violations += local.violations
                all.traces.merge(traces) { a, _ in a }
            }
        }
        var (report, traces) = shared.withLock { $0 }
        report.violations.sort { $0.seed < $1.seed }
        for violation in report.violations { found(violation, traces[violation.seed] ?? []) }
        report.seconds = Date().timeIntervalSince(start)
        return report
    }

    /// The command-line flags that give `options` (for a replay line).
    public static func flags(_ options: SimulationOptions) -> String {
        var flags = ""
        if options.nodes != 3 { flags += " --nodes \(options.nodes)" }
        if options.synchronousMode != .off { flags += " --sync \(options.synchronousMode.rawValue)" }
        if options.faults != SimulationOptions().faults { flags += " --faults \(options.faults)" }
        if options.kinds.count != FaultKind.allCases.count { flags += " --kinds \(options.kinds.map(\.rawValue).joined(separator: ","))" }
        if let mutant = options.mutant { flags += " --mutant \(mutant.rawValue)" }
        if !options.bouncers { flags += " --bouncers off" }
        return flags
    }
}
