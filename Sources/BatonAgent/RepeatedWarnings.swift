import Logging

/// A warning that would repeat every loop while its cause lasts (Consul out of reach for a minute):
/// logged the first time, then at most once per `every`, saying how often it came in between. Owned by
/// one loop or actor, like the logger it writes to.
struct RepeatedWarnings {
    private var seen: [String: (loggedAt: ContinuousClock.Instant, since: Int)] = [:]
    let every: Duration

    init(every: Duration = .seconds(30)) { self.every = every }

    mutating func warning(
        _ logger: Logger, _ message: String, metadata: Logger.Metadata = [:], now: ContinuousClock.Instant = .now
    ) {
        if let entry = seen[message], now - entry.loggedAt < every {
            seen[message] = (entry.loggedAt, entry.since + 1)
            return
        }
        var metadata = metadata
        if let entry = seen[message], entry.since > 0 { metadata["log.repeated"] = "\(entry.since) times since the last report" }
        seen[message] = (now, 0)
        logger.warning("\(message)", metadata: metadata)
    }

    /// The cause is gone: the next occurrence is logged at once.
    mutating func clear() { seen.removeAll() }
}
