/// Times and decimals as text, computed here rather than by Foundation's formatters: those go through
/// ICU, whose code and data every log line would otherwise keep resident in the daemons.
public enum TimeText {
    /// RFC 3339 in UTC with milliseconds, `2026-11-28T12:43:57.123Z`, of a time since the Unix epoch.
    public static func rfc3339(seconds: Int64, nanoseconds: Int64) -> String {
        let wholeSeconds = rfc3339(seconds: seconds)
        return wholeSeconds.dropLast() + ".\(padded(nanoseconds / 1_000_000, 3))Z"
    }

    /// RFC 3339 in UTC to the second, `2026-11-28T12:43:57Z`, of a time since the Unix epoch.
    public static func rfc3339(seconds: Int64) -> String {
        let (days, secondOfDay) = floorDivision(seconds, 86_400)
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        return "\(padded(year, 4))-\(padded(month, 2))-\(padded(day, 2))T\(padded(secondOfDay / 3600, 2)):"
            + "\(padded(secondOfDay / 60 % 60, 2)):\(padded(secondOfDay % 60, 2))Z"
    }

    /// `value` with exactly `places` decimals, rounded half away from zero: `fixed(12.3456, places: 3)` is
    /// "12.346". For finite values whose scaled magnitude fits in an Int64; others print as "0".
    public static func fixed(_ value: Double, places: Int) -> String {
        var scale: Double = 1
        for _ in 0..<places { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        guard scaled.isFinite, scaled < 9.2e18 else { return "0" }
        let units = Int64(scaled)
        let whole = units / Int64(scale), fraction = units % Int64(scale)
        let sign = value < 0 && units != 0 ? "-" : ""
        return places == 0 ? "\(sign)\(whole)" : "\(sign)\(whole).\(padded(fraction, places))"
    }

    /// Year, month, day of the proleptic Gregorian calendar (H. Hinnant's days_from_civil, inverted).
    static func civilDate(daysSinceEpoch: Int64) -> (Int64, Int64, Int64) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func floorDivision(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
        let remainder = a % b
        return remainder < 0 ? (a / b - 1, remainder + b) : (a / b, remainder)
    }

    static func padded(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
