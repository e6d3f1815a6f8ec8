import BatonChaosCore

/// The simulator's only source of chance: the chaos suite's SplitMix64 behind a few helpers, so that
/// one seed fixes every choice and a run replays exactly on any machine.
public struct SimRandom: Sendable {
    private var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    public mutating func next() -> UInt64 { generator.next() }

    /// A whole number in `range`.
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool {
        Double(next() >> 11) / Double(1 << 53) < p
    }

    /// A duration between `low` and `high`, in whole milliseconds.
    public mutating func duration(_ low: Duration, _ high: Duration) -> Duration {
        .milliseconds(int(in: Int(low.milliseconds)...Int(high.milliseconds)))
    }

    public mutating func pick<T>(_ items: [T]) -> T { items[int(in: 0...(items.count - 1))] }
}

extension Duration {
    /// Whole milliseconds (rounded down).
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }

    /// Seconds with three decimals, for traces.
    var traceText: String {
        let ms = milliseconds
        let fraction = String(ms % 1000)
        return "\(ms / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
    }
}
