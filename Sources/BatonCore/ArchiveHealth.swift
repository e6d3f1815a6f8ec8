import ConsulAPI

/// How the primary's WAL archive fares (with pgBackRest): what `pg_stat_archiver` counts, how long the
/// oldest segment waiting for the archiver has waited (its `.ready` file), and when the newest backup
/// ended. The leader's monitor reports it with its node's status; status warns and the alert rules
/// fire from the same figures.
public struct ArchiveHealth: Sendable, Equatable {
    /// Segments PostgreSQL finished that the archiver has not archived yet.
    public var waiting: Int
    /// Seconds the oldest of them has waited (0 when none waits): how far the archive is behind.
    public var lagSeconds: Double
    /// `pg_stat_archiver.failed_count` since the statistics were reset.
    public var failures: UInt64
    /// The last failure, if it came after the last success: the WAL file that failed.
    public var failingSince: Double?
    public var failingWAL: String?
    /// The repository's backups, once pgBackRest's `info` was read.
    public var backups: Backups

    public enum Backups: Sendable, Equatable {
        /// Not read yet (the leader has just started).
        case unknown
        /// The repository holds none.
        case none
        /// The newest one ended then (Unix seconds).
        case newest(Double)
    }

    public init(waiting: Int, lagSeconds: Double, failures: UInt64, failingSince: Double? = nil, failingWAL: String? = nil, backups: Backups = .unknown) {
        self.waiting = waiting
        self.lagSeconds = lagSeconds
        self.failures = failures
        self.failingSince = failingSince
        self.failingWAL = failingWAL
        self.backups = backups
    }

    /// Archiving is called stuck when the oldest waiting segment waited this long.
    public static let stuckAfter: Double = 300
    /// The newest backup is called old past this age.
    public static let backupOldAfter: Double = 8 * 86_400

    /// What the operator should hear of, at `now` (Unix seconds): archiving stuck or failing, no
    /// backup, an old one. Nothing when all is well.
    public func problems(now: Double) -> [String] {
        var out: [String] = []
        if lagSeconds >= Self.stuckAfter || failingSince != nil {
            var text = "WAL archiving is behind: \(waiting) segment(s) wait, the oldest for \(Int(lagSeconds)) s"
            if let failingWAL { text += "; archiving \(failingWAL) fails (pg_stat_archiver, PostgreSQL's log and pgBackRest's log in the state directory say why)" }
            out.append(text + ". Until it catches up, a restore cannot reach the latest commits, and pg_wal grows on the primary")
        }
        switch backups {
        case .unknown: break
        case .none: out.append("the repository holds no backup yet: run `baton backup` on the leader; until then nothing can be restored")
        case .newest(let ended):
            let age = now - ended
            if age >= Self.backupOldAfter { out.append("the newest backup is \(Int(age / 86_400)) days old: run `baton backup` on the leader") }
        }
        return out
    }

    public var json: JSONValue {
        var members: [(String, JSONValue)] = [
            ("waiting", .int(waiting)), ("lag_seconds", .number(TimeText.fixed(lagSeconds, places: 1))), ("failures", .int(Int(failures))),
        ]
        if let failingSince { members.append(("failing_since", .number(TimeText.fixed(failingSince, places: 0)))) }
        if let failingWAL { members.append(("failing_wal", .string(failingWAL))) }
        switch backups {
        case .unknown: break
        case .none: members.append(("last_backup", .null))
        case .newest(let ended): members.append(("last_backup", .number(TimeText.fixed(ended, places: 0))))
        }
        return .object(members)
    }

    /// Reads a report's archive part; nil when it is not one.
    public init?(json: JSONValue?) {
        guard let json, let waiting = json.member("waiting")?.int64Value, let lag = json.member("lag_seconds")?.doubleValue,
            let failures = json.member("failures")?.uint64Value, waiting >= 0
        else { return nil }
        self.init(
            waiting: Int(waiting), lagSeconds: lag, failures: failures, failingSince: json.member("failing_since")?.doubleValue,
            failingWAL: json.member("failing_wal")?.stringValue.flatMap { Self.isWALFileName($0) ? $0 : nil },
            backups: json.member("last_backup").map { $0.doubleValue.map(Backups.newest) ?? .none } ?? .unknown)
    }

    /// From `pg_stat_archiver`, the `.ready` files' times (when each segment became ready, Unix
    /// seconds) and the repository's backups.
    public static func observe(_ archiver: ArchiverStatistics, readySince: [Double], now: Double, backups: Backups) -> ArchiveHealth {
        let failing = archiver.lastFailedAt.map { failed in archiver.lastArchivedAt.map { failed > $0 } ?? true } ?? false
        return ArchiveHealth(
            waiting: readySince.count, lagSeconds: readySince.min().map { max(0, now - $0) } ?? 0, failures: archiver.failedCount,
            failingSince: failing ? archiver.lastFailedAt : nil, failingWAL: failing ? archiver.lastFailedWAL : nil, backups: backups)
    }

    /// Whether the leader runs a scheduled backup now (`backup_every`, 0: never): the repository's
    /// backups are known, and there is none or the newest ended `every` ago or longer.
    public static func backupDue(every: GoDuration, backups: Backups, now: Double) -> Bool {
        guard every > .zero else { return false }
        switch backups {
        case .unknown: return false
        case .none: return true
        case .newest(let ended): return now - ended >= Double(every.nanoseconds) / 1e9
        }
    }

    /// What a report carries: the lag in whole tens of seconds, so that a report at rest does not
    /// change (and is not written) every loop while a segment waits a moment for the archiver.
    public var reported: ArchiveHealth {
        var coarse = self
        coarse.lagSeconds = (lagSeconds / 10).rounded(.down) * 10
        return coarse
    }

    /// A name PostgreSQL gives files in pg_wal (a segment, `.partial`, `.history`, `.backup`).
    static func isWALFileName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || ("A"..."F").contains($0) || ("a"..."z").contains($0) || $0 == "." }
    }
}

/// `pg_stat_archiver`'s row, times as Unix seconds.
public struct ArchiverStatistics: Sendable, Equatable {
    public var failedCount: UInt64
    public var lastArchivedAt: Double?
    public var lastFailedAt: Double?
    public var lastFailedWAL: String?

    public init(failedCount: UInt64, lastArchivedAt: Double?, lastFailedAt: Double?, lastFailedWAL: String?) {
        self.failedCount = failedCount
        self.lastArchivedAt = lastArchivedAt
        self.lastFailedAt = lastFailedAt
        self.lastFailedWAL = lastFailedWAL
    }
}
