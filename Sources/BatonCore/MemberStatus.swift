import Foundation
import ConsulAPI

/// A monitor's report on its node under `status/<name>`: what its PostgreSQL is, how far its WAL
/// reaches, what the monitor last decided, and when — the one shape every reader shares.
public struct MemberStatus: Sendable, Equatable {
    /// `primary`, `standby`, `unresponsive` (processes run, the server does not answer) or `down`.
    public var role: String
    public var position: LSN?
    public var timeline: Int
    public var upstream: String?
    public var streaming: Bool?
    public var decision: String?
    /// Parameters whose new value waits for a restart (pg_settings.pending_restart).
    public var pendingRestart: [String] = []
    /// The primary's replication slots: how much WAL each holds back.
    public var slots: [SlotReport] = []
    /// On the leader: what has disagreed about who serves for longer than a failover takes (``RoutingAgreement``).
    public var disagreements: [String] = []
    /// On the primary, with backups: how the WAL archive fares (``ArchiveHealth/reported``).
    public var archive: ArchiveHealth?
    /// While this node's PostgreSQL is down or does not answer: how far its WAL reached, and on which
    /// timeline, when it last ran as a writable primary (nil once it follows another node). What a
    /// failover measures the candidates' lag against after the primary crashed (as Patroni's
    /// `/optime/leader`): a report that only said "down" would let a lagging replica promote.
    public var lastPrimary: PrimaryPosition?
    /// Seconds since the Unix epoch, by the reporting node's clock: shown, never compared with another
    /// machine's clock (freshness is judged by the key's modify index moving, see ``ChangeTracker``).
    public var time: Double

    public init(local: LocalPostgres, decision: String, time: Double) {
        self.decision = decision
        self.time = time
        switch local {
        case .down:
            role = "down"
            timeline = 1
        case .unresponsive:
            role = "unresponsive"
            timeline = 1
        case .primary(let p, let t):
            role = "primary"
            position = p
            timeline = t
        case .standby(let p, let t, let upstream, let streaming):
            role = "standby"
            position = p
            timeline = t
            self.upstream = upstream
            self.streaming = streaming
        }
    }

    /// Reads a report; `nil` when it is not one (a value someone else wrote is never trusted).
    public init?(bytes: [UInt8]?) {
        guard let json = try? JSONValue.parse(bytes ?? []), let role = json.member("role")?.stringValue,
            ["primary", "standby", "unresponsive", "down"].contains(role), let time = json.member("time")?.doubleValue
        else { return nil }
        self.role = role
        self.time = time
        position = json.member("position")?.stringValue.flatMap { try? LSN(parsing: $0) }
        timeline = Int(json.member("timeline")?.int64Value ?? 1)
        upstream = json.member("upstream")?.stringValue
        streaming = json.member("streaming")?.boolValue
        decision = json.member("decision")?.stringValue
        pendingRestart = (json.member("pending_restart")?.arrayValue ?? []).compactMap(\.stringValue)
        slots = (json.member("slots")?.arrayValue ?? []).compactMap(SlotReport.init(json:))
        disagreements = (json.member("disagreements")?.arrayValue ?? []).compactMap(\.stringValue)
        archive = ArchiveHealth(json: json.member("archive"))
        if let position = json.member("last_primary_position")?.stringValue.flatMap({ try? LSN(parsing: $0) }) {
            lastPrimary = PrimaryPosition(position: position, timeline: Int(json.member("last_primary_timeline")?.int64Value ?? 1))
        }
    }

    public var json: JSONValue {
        var members: [(String, JSONValue)] = [("time", .number(TimeText.fixed(time, places: 3))), ("role", .string(role))]
        if role == "primary" || role == "standby" {
            members.append(("position", .string(position?.description ?? "0/0")))
            members.append(("timeline", .int(timeline)))
        }
        if role == "standby" {
            members.append(("upstream", upstream.map { .string($0) } ?? .null))
            members.append(("streaming", .bool(streaming ?? false)))
        }
        if role == "down" || role == "unresponsive", let lastPrimary {
            members.append(("last_primary_position", .string(lastPrimary.position.description)))
            members.append(("last_primary_timeline", .int(lastPrimary.timeline)))
        }
        if let decision { members.append(("decision", .string(decision))) }
        if !pendingRestart.isEmpty { members.append(("pending_restart", .array(pendingRestart.map { .string($0) }))) }
        if !slots.isEmpty { members.append(("slots", .array(slots.map(\.json)))) }
        if !disagreements.isEmpty { members.append(("disagreements", .array(disagreements.map { .string($0) }))) }
        if let archive { members.append(("archive", archive.json)) }
        return .object(members)
    }

    /// How long a monitor's report may stay unchanged before its monitor counts as gone: three loops and
    /// a second (monitors rewrite their report at least every other loop, ``due(after:writtenAgo:loopWait:)``).
    public static func freshness(loopWait: GoDuration) -> Duration {
        loopWait.swiftDuration * 3 + .seconds(1)
    }

    /// Whether this report is written now, given the last one written and how long ago: when it says
    /// anything new (its time aside), and otherwise once a loop and a half went by — every other loop
    /// at rest, which keeps the key's index moving well within ``freshness(loopWait:)`` (a loop and a
    /// second to spare) and spares Consul half the writes of a resting cluster.
    public func due(after last: MemberStatus?, writtenAgo: Duration?, loopWait: GoDuration) -> Bool {
        guard let last, let writtenAgo else { return true }
        var same = self
        same.time = last.time
        return same != last || writtenAgo >= loopWait.swiftDuration * 3 / 2
    }
}

/// Where a primary's WAL reached, on which timeline.
public struct PrimaryPosition: Sendable, Equatable {
    public var position: LSN
    public var timeline: Int

    public init(position: LSN, timeline: Int) {
        self.position = position
        self.timeline = timeline
    }

    /// The later of two: the newer timeline, then the further position.
    public static func later(_ a: PrimaryPosition?, _ b: PrimaryPosition?) -> PrimaryPosition? {
        guard let a else { return b }
        guard let b else { return a }
        if a.timeline != b.timeline { return a.timeline > b.timeline ? a : b }
        return a.position >= b.position ? a : b
    }
}

/// One replication slot on the primary, as its monitor reports it.
public struct SlotReport: Sendable, Equatable {
    public var name: String
    public var active: Bool
    /// Bytes of WAL the slot keeps from removal (pg_current_wal_lsn() - restart_lsn).
    public var retainedBytes: UInt64
    /// `pg_replication_slots.wal_status` (reserved, extended, unreserved, lost); nil in a report of an
    /// earlier Baton.
    public var walStatus: String?

    public init(name: String, active: Bool, retainedBytes: UInt64, walStatus: String? = nil) {
        self.name = name
        self.active = active
        self.retainedBytes = retainedBytes
        self.walStatus = walStatus
    }

    /// The WAL its standby had not received yet was removed (`max_slot_wal_keep_size`): the standby can
    /// no longer catch up by streaming from this primary.
    public var lost: Bool { walStatus == "lost" }

    public init?(json: JSONValue) {
        guard let name = json.member("name")?.stringValue, let active = json.member("active")?.boolValue,
            let retained = json.member("retained_bytes")?.uint64Value
        else { return nil }
        self.init(name: name, active: active, retainedBytes: retained, walStatus: json.member("wal_status")?.stringValue)
    }

    public var json: JSONValue {
        var members: [(String, JSONValue)] = [("name", .string(name)), ("active", .bool(active)), ("retained_bytes", .number(String(retainedBytes)))]
        if let walStatus { members.append(("wal_status", .string(walStatus))) }
        return .object(members)
    }
}
