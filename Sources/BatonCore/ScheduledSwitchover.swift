import ConsulAPI

/// `baton switchover --to N --at TIME` (Patroni's `--scheduled`): a switchover the leader asks for
/// itself when the time comes, in the `scheduled-switchover` key. Until then nothing changes; when it is
/// due, the leader checks it as `baton switchover` would at that moment and, if it stands, writes the
/// ordinary request (every rule of a switchover applies unchanged), else drops it and says why.
public struct ScheduledSwitchover: Sendable, Equatable {
    public var to: NodeName
    /// The leader it was scheduled for: another leader by then drops it.
    public var from: NodeName
    /// When, in seconds since 1970 (UTC), by the leader's clock.
    public var at: Int64
    /// When it was asked and by whom, shown only.
    public var asked: String
    public var by: String

    /// A schedule found this late (the leader was away when it fell due) is dropped rather than run
    /// at a moment nobody chose, as Patroni does.
    public static let staleAfter: Int64 = 600
    /// How far ahead one may be scheduled.
    public static let longestAhead: Int64 = 30 * 86_400

    public init(to: NodeName, from: NodeName, at: Int64, asked: String, by: String) {
        (self.to, self.from, self.at, self.asked, self.by) = (to, from, at, asked, by)
    }

    public var json: JSONValue {
        .object([
            ("to", .string(to.value)), ("from", .string(from.value)), ("at", .int(Int(at))), ("asked", .string(asked)), ("by", .string(by)),
        ])
    }

    public init(bytes: [UInt8]?, key: String) throws(ValidationProblem) {
        let json = try Record.object(bytes, key: key)
        to = try NodeName(try Record.string(json, "to", key: key), field: "\(key) to")
        from = try NodeName(try Record.string(json, "from", key: key), field: "\(key) from")
        at = Int64(try Record.int(json, "at", key: key))
        guard at > 0 else { throw ValidationProblem("Consul key \(key): at must be a time after 1970") }
        asked = json.member("asked")?.stringValue ?? ""
        by = json.member("by")?.stringValue ?? ""
    }

    /// What the leader does with it now.
    public enum Verdict: Sendable, Equatable {
        /// Not yet.
        case wait
        /// Check it and, if it stands, ask for the switchover.
        case due
        /// Drop it, for this reason.
        case drop(String)
    }

    /// - Parameters:
    ///   - now: the leader's clock, seconds since 1970.
    ///   - leader: who holds the lock.
    public func verdict(now: Int64, leader: NodeName?) -> Verdict {
        if let leader, leader != from { return .drop("scheduled for \(from)'s tenure, and \(leader) leads now") }
        if leader == to { return .drop("\(to) leads already") }
        if now < at { return .wait }
        if now - at > Self.staleAfter { return .drop("due \(now - at) s ago, when no leader could run it; schedule it again") }
        return .due
    }

    /// `at` as people read it: `2026-12-24T03:00:00Z`.
    public var atText: String { Self.utc(at) }

    /// Seconds since 1970 as an ISO 8601 UTC time to the second.
    public static func utc(_ seconds: Int64) -> String { TimeText.rfc3339(seconds: seconds) }

    /// Why `at` cannot be scheduled at `now`, or nil.
    public static func refusal(at: Int64, now: Int64) -> String? {
        if at <= now { return "the time is in the past; without --at the switchover runs now" }
        if at - now > longestAhead { return "at most 30 days ahead" }
        return nil
    }
}
