/// A duration in Go's `time.Duration` text form, the form Consul reads and writes (`"15s"`, `"0.001s"`,
/// `"1m30s"`, `"24h0m0s"`).
///
/// Both Consul's server and its clients speak exactly this grammar: Patroni sends `"15.0s"`,
/// consul-template `"15.000000s"`, the Go client `"60000ms"`. A bare number other than `"0"` has no unit
/// and is an error, as in Go.
public struct GoDuration: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public static func seconds(_ s: Int64) -> GoDuration { GoDuration(nanoseconds: s * 1_000_000_000) }
    public static func milliseconds(_ ms: Int64) -> GoDuration { GoDuration(nanoseconds: ms * 1_000_000) }
    public static let zero = GoDuration(nanoseconds: 0)

    public static func < (a: GoDuration, b: GoDuration) -> Bool { a.nanoseconds < b.nanoseconds }

    public var seconds: Double { Double(nanoseconds) / 1e9 }
    public var swiftDuration: Duration { .nanoseconds(nanoseconds) }

    /// Go's `Duration.String()`: `"0s"`, `"1.5ms"`, `"10s"`, `"1m30s"`, `"24h0m0s"`.
    public var description: String {
        if nanoseconds == 0 { return "0s" }
        let negative = nanoseconds < 0
        var u = nanoseconds.magnitude
        var text: String
        if u < 1_000_000_000 {
            let (precision, unit): (Int, String) =
                u < 1_000 ? (0, "ns") : u < 1_000_000 ? (3, "µs") : (6, "ms")
            let (fraction, whole) = GoDuration.fraction(u, precision: precision)
            text = String(whole) + fraction + unit
        } else {
            let (fraction, wholeSeconds) = GoDuration.fraction(u, precision: 9)
            u = wholeSeconds
            text = String(u % 60) + fraction + "s"
            u /= 60
            if u > 0 {
                text = String(u % 60) + "m" + text
                u /= 60
                if u > 0 { text = String(u) + "h" + text }
            }
        }
        return negative ? "-" + text : text
    }

    /// Splits `v` into `v / 10^precision` and the fraction's digits (".5", or "" when zero), as Go's
    /// `fmtFrac` does.
    private static func fraction(_ v: UInt64, precision: Int) -> (String, UInt64) {
        var v = v
        var digits: [Character] = []
        var printing = false
        for _ in 0..<precision {
            let digit = v % 10
            printing = printing || digit != 0
            if printing { digits.append(Character(String(digit))) }
            v /= 10
        }
        return (digits.isEmpty ? "" : "." + String(digits.reversed()), v)
    }
}

/// A duration string that Go's `time.ParseDuration` would reject; `message` is Go's own text.
public struct GoDurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension GoDuration {
    /// Parses Go's duration grammar: an optional sign, then one or more `<decimal><unit>` groups.
    public init(parsing text: String) throws(GoDurationError) {
        let quoted = "\"" + text + "\""
        let invalid = GoDurationError(message: "time: invalid duration " + quoted)
        var scalars = Array(text.unicodeScalars)
        var negative = false
        if let first = scalars.first, first == "-" || first == "+" {
            negative = first == "-"
            scalars.removeFirst()
        }
        if scalars.count == 1, scalars[0] == "0" {
            self.init(nanoseconds: 0)
            return
        }
        guard !scalars.isEmpty else { throw invalid }
        var total: UInt64 = 0
        var i = 0
        func isDigit(_ s: Unicode.Scalar) -> Bool { ("0"..."9").contains(s) }
        while i < scalars.count {
            // Integer and fraction parts are kept apart, as Go does, so "0.001s" is exactly 1 ms.
            var whole: UInt64 = 0
            var fraction: UInt64 = 0
            var fractionScale: UInt64 = 1
            var sawDigit = false
            while i < scalars.count, isDigit(scalars[i]) {
                let (m, o1) = whole.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(scalars[i].value - 48))
                guard !o1, !o2 else { throw invalid }
                whole = a
                i += 1
                sawDigit = true
            }
            if i < scalars.count, scalars[i] == "." {
                i += 1
                while i < scalars.count, isDigit(scalars[i]) {
                    if fractionScale < 1_000_000_000_000_000 {
                        fraction = fraction * 10 + UInt64(scalars[i].value - 48)
                        fractionScale *= 10
                    }
                    i += 1
                    sawDigit = true
                }
            }
            guard sawDigit else { throw invalid }
            var unit = ""
            while i < scalars.count, scalars[i] != ".", !isDigit(scalars[i]) { unit.unicodeScalars.append(scalars[i]); i += 1 }
            guard !unit.isEmpty else { throw GoDurationError(message: "time: missing unit in duration " + quoted) }
            let scale: UInt64
            switch unit {
            case "ns": scale = 1
            case "us", "µs", "μs": scale = 1_000
            case "ms": scale = 1_000_000
            case "s": scale = 1_000_000_000
            case "m": scale = 60_000_000_000
            case "h": scale = 3_600_000_000_000
            default:
                throw GoDurationError(message: "time: unknown unit \"\(unit)\" in duration " + quoted)
            }
            let (w, o1) = whole.multipliedReportingOverflow(by: scale)
            let fractional = UInt64(Double(fraction) * (Double(scale) / Double(fractionScale)))
            let (sum, o2) = w.addingReportingOverflow(fractional)
            let (grand, o3) = total.addingReportingOverflow(sum)
            guard !o1, !o2, !o3, grand <= UInt64(Int64.max) else { throw invalid }
            total = grand
        }
        let ns = Int64(total)
        self.init(nanoseconds: negative ? -ns : ns)
    }
}

extension GoDuration {
    /// The same span as a Swift `Duration` (to the nanosecond).
    public init(_ duration: Duration) { self.init(nanoseconds: duration.nanosecondCount) }
}

extension Duration {
    /// The span in whole nanoseconds.
    public var nanosecondCount: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
    /// The span in whole milliseconds.
    public var millisecondCount: Int64 { nanosecondCount / 1_000_000 }
}
