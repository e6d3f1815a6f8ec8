import BatonCore
import BatonSim
import Foundation

/// `baton-sim`: runs the simulator over a range of seeds and prints what it found (scripts/sim.sh).
let usage = """
    usage: baton-sim [--seeds N] [--from S] [--nodes 3..5] [--sync off|on|strict] [--failsafe on|off] [--bouncers on|off] [--faults N] [--kinds K,…] [--mutant M] [--workers N] [--replay SEED]
      --seeds N      how many seeds to run (default 1000)
      --from S       the first seed (default 1)
      --nodes N      nodes per cluster, 3 to 5 (default 3)
      --sync MODE    synchronous_mode of the cluster (default off)
      --failsafe M   failsafe_mode of the cluster (default: Baton's shipped default, on)
      --bouncers M   a pgbouncer and its agent on each node (default on; off replays a seed found before
                     the agents joined the simulator, 2026-12-07, as it was found)
      --faults N     faults per run (default 4)
      --kinds K,…    draw faults from these kinds only: \(FaultKind.allCases.map(\.rawValue).joined(separator: ", "))
      --mutant M     break a rule on purpose: \(Mutant.allCases.map(\.rawValue).joined(separator: ", "))
      --workers N    threads to run seeds on (default: one per core)
      --replay SEED  run one seed and print its whole trace
    """

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("baton-sim: \(message)\n\(usage)\n".utf8))
    exit(2)
}

var options = SimulationOptions()
var seeds = 1000
var from: UInt64 = 1
var replay: UInt64? = nil
var workers = ProcessInfo.processInfo.activeProcessorCount
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    if flag == "--help" || flag == "-h" {
        print(usage)
        exit(0)
    }
    guard let value = arguments.popFirst() else { fail("\(flag) needs a value") }
    switch flag {
    case "--seeds":
        guard let n = Int(value), n > 0 else { fail("--seeds takes a positive whole number, not \(value)") }
        seeds = n
    case "--from":
        guard let n = UInt64(value) else { fail("--from takes a seed (a whole number), not \(value)") }
        from = n
    case "--nodes":
        guard let n = Int(value), (3...5).contains(n) else { fail("--nodes takes 3, 4 or 5, not \(value)") }
        options.nodes = n
    case "--sync":
        guard let mode = SynchronousMode(rawValue: value) else { fail("--sync takes off, on or strict, not \(value)") }
        options.synchronousMode = mode
    case "--failsafe":
        guard value == "on" || value == "off" else { fail("--failsafe takes on or off, not \(value)") }
        options.failsafeMode = value == "on"
    case "--bouncers":
        guard value == "on" || value == "off" else { fail("--bouncers takes on or off, not \(value)") }
        options.bouncers = value == "on"
    case "--faults":
        guard let n = Int(value), (0...50).contains(n) else { fail("--faults takes 0 to 50, not \(value)") }
        options.faults = n
    case "--kinds":
        var kinds: [FaultKind] = []
        for name in value.split(separator: ",") {
            guard let kind = FaultKind(rawValue: String(name)) else { fail("unknown fault kind \(name)") }
            kinds.append(kind)
        }
        options.kinds = kinds
    case "--mutant":
        guard let mutant = Mutant(rawValue: value) else { fail("unknown mutant \(value)") }
        options.mutant = mutant
    case "--workers":
        guard let n = Int(value), (1...64).contains(n) else { fail("--workers takes 1 to 64, not \(value)") }
        workers = n
    case "--replay":
        guard let n = UInt64(value) else { fail("--replay takes a seed (a whole number), not \(value)") }
        replay = n
    default:
        fail("unknown option \(flag)")
    }
}

guard replay != nil || from <= UInt64.max - UInt64(seeds) else { fail("--from \(from) with --seeds \(seeds) runs past the last seed") }

if let replay {
    let run = Simulation(seed: replay, options: options)
    let violation = run.run()
    for line in run.trace { print(line) }
    print(violation.map { "VIOLATION \($0)" } ?? "seed \(replay): every invariant held")
    exit(violation == nil ? 0 : 1)
}

let report = SeedRange.run(from: from, count: seeds, options: options, workers: workers) { violation, trace in
    print("VIOLATION \(violation)")
    for line in trace.suffix(40) { print("  \(line)") }
    print("  replay: scripts/sim.sh --replay \(violation.seed)\(SeedRange.flags(options))")
}
print(report.summary)
exit(report.violations.isEmpty ? 0 : 1)
