import ConsulAPI

/// A PostgreSQL WAL position (`pg_lsn`), e.g. `0/3000060`.
public struct LSN: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let value: UInt64
    public init(_ value: UInt64) { self.value = value }

    /// Parses PostgreSQL's `XXXXXXXX/XXXXXXXX` text form.
    /// Two hexadecimal numbers of 1–8 digits around a slash (read byte by byte: monitors and the
    /// simulator read every report's positions each loop).
    public init(parsing text: String) throws(ValidationProblem) {
        var halves: (high: UInt64, low: UInt64) = (0, 0)
        var current: UInt64 = 0
        var digits = 0
        var slashes = 0
        for byte in text.utf8 {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            case UInt8(ascii: "/") where slashes == 0 && digits > 0:
                halves.high = current
                current = 0
                digits = 0
                slashes = 1
                continue
            default:
                throw Self.malformed(text)
            }
            digits += 1
            guard digits <= 8 else { throw Self.malformed(text) }
            current = current << 4 | UInt64(digit)
        }
        guard slashes == 1, digits > 0 else { throw Self.malformed(text) }
        halves.low = current
        value = halves.high << 32 | halves.low
    }

    private static func malformed(_ text: String) -> ValidationProblem {
        ValidationProblem("\(Quote.show(text)) is not a WAL position such as 0/3000060")
    }

    public var description: String { String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true) }
    public static func < (a: LSN, b: LSN) -> Bool { a.value < b.value }
}

/// What a replica's monitor reports about it, as failover needs it.
public struct CandidateState: Sendable, Equatable {
    public var name: NodeName
    /// 0 means never promoted automatically (repmgr's priority 0, Patroni's nofailover).
    public var failoverPriority: Int
    /// PostgreSQL runs, is in recovery and its monitor reports recently.
    public var healthy: Bool
    /// How far its WAL reaches (the greater of received and replayed).
    public var walPosition: LSN
    public var timeline: Int
    /// Its replication slot on the primary lost WAL it had not received (``SlotReport/lost``).
    public var slotLost: Bool

    public init(name: NodeName, failoverPriority: Int, healthy: Bool, walPosition: LSN, timeline: Int, slotLost: Bool = false) {
        self.name = name
        self.failoverPriority = failoverPriority
        self.healthy = healthy
        self.walPosition = walPosition
        self.timeline = timeline
        self.slotLost = slotLost
    }
}

/// Why a replica may not be promoted automatically.
public enum Ineligibility: Sendable, Equatable, CustomStringConvertible {
    case unhealthy
    case noFailover
    /// Synchronous mode: only the recorded synchronous standby may be promoted.
    case notSynchronousStandby
    /// Synchronous mode: the recorded standby reports less WAL than it had when it was recorded.
    case behindSynchronousPosition(position: LSN, recorded: LSN)
    /// Asynchronous mode: further behind the last known primary position than the limit.
    case lagOverLimit(bytes: UInt64, limit: UInt64)
    /// Asynchronous mode: its slot on the primary lost WAL it had not received.
    case slotLost

    /// Its name as a metric label (`baton_failover_eligible{reason=…}`).
    public var key: String {
        switch self {
        case .unhealthy: return "unhealthy"
        case .noFailover: return "no_failover"
        case .notSynchronousStandby: return "not_synchronous_standby"
        case .behindSynchronousPosition: return "behind_synchronous_position"
        case .lagOverLimit: return "lag_over_limit"
        case .slotLost: return "slot_lost"
        }
    }

    /// Every ``key``, for metrics that record each one.
    public static let keys = ["unhealthy", "no_failover", "not_synchronous_standby", "behind_synchronous_position", "lag_over_limit", "slot_lost"]

    public var description: String {
        switch self {
        case .unhealthy: return "unhealthy or not reporting"
        case .noFailover: return "marked no-failover (priority 0)"
        case .notSynchronousStandby: return "not the synchronous standby"
        case .behindSynchronousPosition(let p, let r): return "reports WAL up to \(p), less than the \(r) it had when recorded as the synchronous standby"
        case .lagOverLimit(let bytes, let limit): return "lag \(bytes) bytes over the limit of \(limit)"
        case .slotLost: return "its replication slot on the primary lost WAL it never received (wal_status lost): it lacks commits; `baton reinit` it"
        }
    }
}

/// The outcome of ranking the replicas after the primary was lost.
public struct FailoverChoice: Sendable, Equatable {
    /// Eligible replicas, best first.
    public var ranked: [NodeName]
    public var ineligible: [NodeName: Ineligibility]
    public var best: NodeName? { ranked.first }

    public init(ranked: [NodeName], ineligible: [NodeName: Ineligibility]) {
        self.ranked = ranked
        self.ineligible = ineligible
    }

    /// Why nobody can be promoted, for `baton status`; `nil` when someone can.
    public var noCandidateReason: String? {
        guard ranked.isEmpty else { return nil }
        if ineligible.isEmpty { return "no replica is registered" }
        return "no eligible candidate: " + ineligible.keys.sorted().map { "\($0) \(ineligible[$0]!)" }.joined(separator: "; ")
    }

    /// How long `node` waits after the leader lock was lost before it may try to take it: the best at
    /// once, the next after one grace period, and so on; `nil` if it is not eligible.
    public func waitBeforeAcquiring(_ node: NodeName, grace: GoDuration) -> GoDuration? {
        guard let rank = ranked.firstIndex(of: node) else { return nil }
        return GoDuration(nanoseconds: Int64(rank) * grace.nanoseconds)
    }
}

/// Ranks replicas for promotion: the most advanced WAL position among eligible replicas (on the newest
/// timeline), then the highest priority, then the name — the same answer on every node that sees the
/// same reports, so that they agree without talking.
public enum FailoverCandidates {
    /// The registered nodes as candidates, as one observer sees them. `fresh` says whose reports keep
    /// coming (judged on the observer's own clock); the observer's own node (`me`) is judged from
    /// `local`, what it sees of its PostgreSQL directly. The lock holder is never a candidate.
    public static func candidates(
        _ snapshot: ClusterSnapshot, fresh: (NodeName) -> Bool, me: NodeName? = nil, local: LocalPostgres? = nil
    ) -> [CandidateState] {
        let lostSlots = Set(snapshot.registeredPrimary(otherThan: nil).flatMap { snapshot.reports[$0.name]?.status.slots.filter(\.lost).map(\.name) } ?? [])
        return snapshot.registrations.values.sorted { $0.name < $1.name }.map { registration in
            let report = snapshot.reports[registration.name]?.status
            var healthy = report?.role == "standby" && fresh(registration.name)
            var position = report?.position ?? LSN(0)
            var timeline = report?.timeline ?? 1
            if registration.name == me, let local {
                healthy = false
                if case .standby(let p, let t, _, _) = local {
                    healthy = true
                    position = p
                    timeline = t
                }
            }
            return CandidateState(
                name: registration.name, failoverPriority: snapshot.failoverPriority(of: registration.name),
                healthy: healthy && registration.name != snapshot.leader?.holder, walPosition: position, timeline: timeline,
                slotLost: lostSlots.contains(registration.name.slotName))
        }
    }

    public static func choose(
        _ candidates: [CandidateState], synchronousMode: SynchronousMode, synchronous: SyncRecord?, lastPrimaryPosition: LSN?,
        maximumLag: UInt64
    ) -> FailoverChoice {
        var ineligible: [NodeName: Ineligibility] = [:]
        var eligible: [CandidateState] = []
        for c in candidates {
            if !c.healthy {
                ineligible[c.name] = .unhealthy
            } else if c.failoverPriority <= 0 {
                ineligible[c.name] = .noFailover
            } else if synchronousMode != .off && c.name != synchronous?.standby {
                ineligible[c.name] = .notSynchronousStandby
            } else if synchronousMode != .off, let record = synchronous, c.walPosition < record.position {
                ineligible[c.name] = .behindSynchronousPosition(position: c.walPosition, recorded: record.position)
            } else if synchronousMode == .off, c.slotLost {
                // (In synchronous mode the record decides: a recorded standby has every acknowledged
                // commit, streaming or not.)
                ineligible[c.name] = .slotLost
            } else if synchronousMode == .off, let primary = lastPrimaryPosition, primary > c.walPosition,
                primary.value - c.walPosition.value > maximumLag
            {
                ineligible[c.name] = .lagOverLimit(bytes: primary.value - c.walPosition.value, limit: maximumLag)
            } else {
                eligible.append(c)
            }
        }
        let ranked = eligible.sorted { a, b in
            if a.timeline != b.timeline { return a.timeline > b.timeline }
            if a.walPosition != b.walPosition { return a.walPosition > b.walPosition }
            if a.failoverPriority != b.failoverPriority { return a.failoverPriority > b.failoverPriority }
            return a.name < b.name
        }
        return FailoverChoice(ranked: ranked.map(\.name), ineligible: ineligible)
    }
}

/// What a candidate's own node API answers about its PostgreSQL now (`GET /position`: as of its
/// monitor's last loop, at most a loop old), where its report in Consul may be up to 1.5 loops old.
public struct LivePosition: Sendable, Equatable {
    /// Its PostgreSQL runs as a standby (else it is no candidate).
    public var standby: Bool
    public var position: LSN
    public var timeline: Int
    /// Its PostgreSQL runs as a writable primary (it answers with a position, not as a standby).
    public var primary: Bool

    public init(standby: Bool, position: LSN, timeline: Int, primary: Bool = false) {
        self.standby = standby
        self.position = position
        self.timeline = timeline
        self.primary = primary && !standby
    }

    /// What a node whose PostgreSQL is `local` answers.
    public init(local: LocalPostgres) {
        switch local {
        case .standby(let position, let timeline, _, _): self.init(standby: true, position: position, timeline: timeline)
        case .primary(let position, let timeline): self.init(standby: false, position: position, timeline: timeline, primary: true)
        default: self.init(standby: false, position: LSN(0), timeline: 0)
        }
    }

    /// The first of the nodes that answered they run a writable primary — through their API, or (for
    /// a node whose API did not answer) their PostgreSQL itself — by name, so that every run says the
    /// same one.
    public static func primary(among answers: [NodeName: LivePosition], writablePostgres: Set<NodeName> = []) -> NodeName? {
        Set(answers.filter(\.value.primary).keys).union(writablePostgres.subtracting(answers.keys)).sorted().first
    }

    /// `{"node": …, "standby": true, "position": "0/3000060", "timeline": 1}`, what `GET /position` answers.
    public static func json(node: NodeName, local: LocalPostgres) -> JSONValue {
        var members: [(String, JSONValue)] = [("node", .string(node.value))]
        switch local {
        case .standby(let position, let timeline, _, let streaming):
            members += [("standby", .bool(true)), ("position", .string(position.description)), ("timeline", .int(timeline)), ("streaming", .bool(streaming))]
        case .primary(let position, let timeline):
            members += [("standby", .bool(false)), ("position", .string(position.description)), ("timeline", .int(timeline))]
        case .down, .unresponsive:
            members += [("standby", .bool(false))]
        }
        return .object(members)
    }

    /// Reads `GET /position`'s answer; nil when it is not one.
    public init?(json: JSONValue) {
        guard let standby = json.member("standby")?.boolValue else { return nil }
        guard standby else {
            // A primary says how far its WAL reaches; a node whose PostgreSQL is down says nothing more.
            let position = json.member("position")?.stringValue.flatMap { try? LSN(parsing: $0) }
            let timeline = json.member("timeline")?.int64Value.flatMap { $0 > 0 && $0 <= Int64(Int32.max) ? Int($0) : nil }
            self.init(standby: false, position: position ?? LSN(0), timeline: timeline ?? 0, primary: position != nil)
            return
        }
        guard let text = json.member("position")?.stringValue, let position = try? LSN(parsing: text),
            let timeline = json.member("timeline")?.int64Value, timeline > 0, timeline <= Int64(Int32.max)
        else { return nil }
        self.init(standby: true, position: position, timeline: Int(timeline))
    }
}

extension FailoverCandidates {
    /// The candidates with what their own nodes answered just now in place of their reports (issue 23,
    /// finding 12: two replicas comparing their live position with the other's older report could
    /// each rank itself first, and the less advanced one could win the lock). A node that did not
    /// answer keeps its report; one that answers it is no standby is no candidate.
    public static func confirmed(_ candidates: [CandidateState], live: [NodeName: LivePosition]) -> [CandidateState] {
        candidates.map { candidate in
            guard let answer = live[candidate.name], candidate.healthy else { return candidate }
            var confirmed = candidate
            confirmed.healthy = answer.standby
            if answer.standby {
                confirmed.walPosition = answer.position
                confirmed.timeline = answer.timeline
            }
            return confirmed
        }
    }
}
