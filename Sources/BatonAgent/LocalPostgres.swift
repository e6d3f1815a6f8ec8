import BatonSettings
import BatonCore
import BatonFence
import BatonPostgres
import Foundation

/// What a clone did (``LocalDatabase/clone(conninfo:slot:inPlace:)``).
public struct CloneOutcome: Sendable {
    /// Where the data directory's old content was moved (nil: it was empty, or restored over).
    public var moved: String?
    /// Restored over the old content with pgBackRest's `--delta`.
    public var inPlace: Bool
    /// How it was copied, for the report.
    public var how: String

    public init(moved: String?, inPlace: Bool, how: String) {
        self.moved = moved
        self.inPlace = inPlace
        self.how = how
    }
}

/// The node's own PostgreSQL as the monitor drives it: observed, started, stopped, fenced, promoted,
/// reconfigured. The production one is ``PostgresNode``; tests drive the monitor with a fake.
/// Owned by the monitor's loop (one task).
public protocol LocalDatabase: AnyObject {
    /// How to reach the server over its socket (for the idle connection that notices its death), or nil.
    var conninfo: String? { get }
    /// What the server is now. A probe that fails is told apart from a server that is gone by looking
    /// for its processes.
    func observe() async -> LocalPostgres
    // The statements the monitor sends, each bounded even when the server does not answer.
    func checkpoint(timeout: Duration) async throws
    /// The timeline of the control file's latest checkpoint (a standby's restart point).
    func checkpointTimeline() async throws -> Int
    /// Whether WAL is written on a newer timeline than the control file's checkpoint says (after a
    /// promotion, until its checkpoint): another node's pg_rewind reads the timeline there.
    func checkpointBehindTimeline() async throws -> Bool
    /// How far WAL replay reached.
    func replayPosition() async throws -> LSN?
    /// Where WAL is written now (a primary).
    func currentPosition() async throws -> LSN?
    /// The settings the server read but applies only at a restart, by name.
    func pendingRestart() async throws -> [String]
    /// The physical replication slots and the WAL each holds back.
    func slots() async throws -> [SlotReport]
    func createSlot(_ name: String) async throws
    func dropSlot(_ name: String) async throws
    /// `synchronous_standby_names` as the server runs with it.
    func synchronousStandbyNames() async throws -> String
    /// The standbys streaming from it (`pg_stat_replication`).
    func replicationPeers() async throws -> [ReplicationPeer]
    /// Per standby: WAL bytes it has not flushed yet and its replay lag, for the metrics.
    func replicationLag() async throws -> [(standby: String, bytes: UInt64, seconds: Double?)]
    /// `pg_stat_archiver`: how archiving went.
    func archiverStatistics() async throws -> ArchiverStatistics
    /// Ends recovery and waits until the server takes writes (at most `timeout`).
    func promote(timeout: Duration) async throws
    /// Starts the postmaster without waiting (crash recovery may take a while).
    func launch() async throws
    /// Stops the server within bounds (fast, then immediate, then killed).
    func stop() async throws -> PostgresControl.StopOutcome
    /// Kills every process of the data directory now; returns those still alive.
    func fence() async -> [Int32]
    /// The postmaster's PID when it runs, found with the paths as they resolve now.
    func postmasterPID() -> Int32?
    func reload() async throws
    func controlData() async throws -> ControlData
    /// Rewinds the data directory to `source` (a libpq conninfo).
    func rewind(source: String) async throws
    /// Clones `conninfo` into a fresh data directory, the old one moved aside (never deleted) — or, with
    /// `inPlace` and a copy from the backup repository, restored over it with pgBackRest's `--delta`.
    func clone(conninfo: String, slot: String, inPlace: Bool) async throws -> CloneOutcome
    /// Rewrites baton.conf: the upstream to stream from (a standby's), the synchronous standby names
    /// (a primary's).
    func writeSettings(upstream: PostgresFiles.Upstream?, synchronousStandbyNames: String) throws
    /// Makes the data directory a standby's (standby.signal) and includes baton.conf.
    func markStandby() throws
    /// Writes the cluster-wide parameters file (and its include in postgresql.conf); whether it changed.
    func writeParameters(_ text: String) throws -> Bool
    /// The timelines of the history files in pg_wal.
    func historyTimelines() -> [Int]
    func readHistory(_ timeline: Int) -> String
    func writeHistory(_ timeline: Int, _ text: String) throws
    var isEmpty: Bool { get }
    /// Drops the monitor's own connection (it reconnects on the next query).
    func close()
}

/// The real PostgreSQL: libpq over the Unix socket for probes and statements, PostgreSQL's own tools
/// for the rest, /proc for its processes.
public final class PostgresNode: LocalDatabase {
    let settings: BootstrapSettings
    let control: PostgresControl
    private var connection: PostgresConnection?
    /// The newest timeline this standby's walreceiver reported, for the postmaster that started then.
    private var receivedTimeline: (postmasterStarted: String, timeline: Int) = ("", 0)
    public let conninfo: String?

    public init(settings: BootstrapSettings) {
        self.settings = settings
        control = PostgresControl(binDirectory: settings.pgBindir.value, dataDirectory: settings.pgdata.value, osUser: settings.pgOSUser)
        conninfo = ConnInfo.make([
            ("host", settings.pgSocketDirectory.value), ("port", String(settings.pgPort.value)), ("user", "postgres"), ("dbname", "postgres"),
            ("connect_timeout", "2"), ("application_name", "baton-monitor"),
        ])
    }

    var dataDirectory: String { settings.pgdata.value }
    var hasStandbySignal: Bool { FileManager.default.fileExists(atPath: dataDirectory + "/standby.signal") }

    public func query(_ sql: String, _ parameters: [String?] = [], timeout: Duration = .seconds(2)) async throws -> [[String?]] {
        for attempt in 0..<2 {
            do {
                if connection == nil, let conninfo { connection = try await PostgresConnection.connect(conninfo) }
                guard let connection else { throw PostgresError("no connection") }
                return try await connection.query(sql, parameters, timeout: timeout)
            } catch {
                connection?.close()
                connection = nil
                // A timeout is an answer in itself; only a broken connection is worth a second try.
                if attempt == 1 || (error as? PostgresError)?.sqlState == "57014" { throw error }
            }
        }
        throw PostgresError("unreachable")
    }

    public func observe() async -> LocalPostgres {
        do {
            let rows = try await query(
                """
                SELECT pg_is_in_recovery(),
                       CASE WHEN pg_is_in_recovery()
                            THEN greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0'))::text
                            ELSE pg_current_wal_lsn()::text END,
                       (SELECT timeline_id FROM pg_control_checkpoint())::text,
                       (SELECT status FROM pg_stat_wal_receiver),
                       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver),
                       (SELECT received_tli::text FROM pg_stat_wal_receiver),
                       pg_postmaster_start_time()::text
                """)
            guard let row = rows.first, let position = row[1].flatMap({ try? LSN(parsing: $0) }) else { return processState() }
            var timeline = Int(row[2] ?? "") ?? 1
            if row[0] == "t" {
                // The timeline a standby received is not forgotten when its walreceiver stops (its upstream
                // died): the checkpoint's timeline may lag behind it until the next restartpoint, and a
                // replica that reported the newer timeline while streaming must not rank itself lower now
                // than the others rank it from that report — each would wait for the other.
                let started = row[6] ?? ""
                if receivedTimeline.postmasterStarted != started { receivedTimeline = (started, 0) }
                if let received = row[5].flatMap({ Int($0) }) { receivedTimeline.timeline = max(receivedTimeline.timeline, received) }
                timeline = max(timeline, receivedTimeline.timeline)
                return .standby(position: position, timeline: timeline, upstream: currentUpstream() ?? row[4], streaming: row[3] == "streaming")
            }
            return .primary(position: position, timeline: timeline)
        } catch {
            return processState()
        }
    }

    /// The probe failed: is anything of the server still running?
    /// The processes are looked for before the postmaster among them: a postmaster that is starting
    /// belongs to the data directory only once it has changed into it, and asked the other way round a
    /// start could be seen as "no postmaster" and then "processes left" — a dead postmaster, fenced.
    func processState() -> LocalPostgres {
        let processes = control.processes
        if processes.running().isEmpty { return .down(standbySignal: hasStandbySignal) }
        return .unresponsive(standbySignal: hasStandbySignal, postmaster: processes.postmaster() != nil)
    }

    /// The host:port baton.conf's primary_conninfo names (what the standby is told to follow).
    func currentUpstream() -> String? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/" + PostgresFiles.settingsFile, encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("primary_conninfo") })
        else { return nil }
        var host: String?
        var port: String?
        for word in line.split(whereSeparator: { $0 == " " || $0 == "'" }) {
            if word.hasPrefix("host=") { host = String(word.dropFirst(5)) }
            if word.hasPrefix("port=") { port = String(word.dropFirst(5)) }
        }
        guard let host, let port else { return nil }
        return "\(host):\(port)"
    }

    public func promote(timeout: Duration) async throws {
        // Asked without waiting, then watched closely: pg_promote's own wait polls every 100 ms.
        _ = try await query("SELECT pg_promote(false)")
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await query("SELECT pg_is_in_recovery()").first?.first == "f" { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw PostgresError("the promotion did not finish within \(timeout)")
    }

    public func launch() async throws {
        close()
        try await control.launch(logFile: settings.postgresLog)
    }

    public func stop() async throws -> PostgresControl.StopOutcome {
        close()
        return try await control.stopBounded()
    }

    public func fence() async -> [Int32] {
        close()
        return await control.fence()
    }

    public func postmasterPID() -> Int32? { control.processes.postmaster() }

    public func reload() async throws { try await control.reload() }
    public func controlData() async throws -> ControlData { try await control.controlData() }
    public func rewind(source: String) async throws { try await control.rewind(source: source) }

    public var isEmpty: Bool { ((try? FileManager.default.contentsOfDirectory(atPath: dataDirectory)) ?? []).isEmpty }

    /// Copies the cluster into this node's data directory (``PostgresControl/clone(conninfo:slot:backup:source:)``),
    /// a directory that is not empty moved aside first (never deleted; its path is returned) — or, with
    /// `inPlace` (`baton reinit`: the operator asked to rebuild this replica) when the copy comes from the
    /// repository and the directory holds a cluster, restored over it with pgBackRest's `--delta`: only
    /// the files that differ from the backup are copied, and no second copy of the database needs room.
    public func clone(conninfo: String, slot: String, inPlace: Bool) async throws -> CloneOutcome {
        let backup = settings.backup.map { PgBackRestTool(settings: $0, osUser: settings.pgOSUser) }
        let chosen = await control.cloneSource(backup: backup, source: settings.cloneFrom)
        if inPlace, chosen.fromBackup, let backup, FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") {
            let summary = try await backup.restoreStandby(into: dataDirectory, delta: true)
            return CloneOutcome(moved: nil, inPlace: true, how: "restored from the pgBackRest repository over the old data directory with --delta (\(chosen.why); \(summary))")
        }
        var moved: String? = nil
        if !isEmpty {
            let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
            let destination = dataDirectory + ".baton-moved-" + stamp + "-" + UUID().uuidString.prefix(4).lowercased()
            try FileManager.default.moveItem(atPath: dataDirectory, toPath: destination)
            moved = destination
        }
        try AtomicFile.ensureDirectory(dataDirectory, mode: 0o700, owner: settings.pgOSUser)
        let how = try await control.clone(conninfo: conninfo, slot: slot, backup: backup, chosen: chosen)
        return CloneOutcome(moved: moved, inPlace: false, how: how)
    }

    public func writeSettings(upstream: PostgresFiles.Upstream?, synchronousStandbyNames: String) throws {
        let text = PostgresFiles.settings(
            port: settings.pgPort, listen: settings.pgListen, socketDirectory: settings.pgSocketDirectory, upstream: upstream,
            synchronousStandbyNames: synchronousStandbyNames, archive: settings.backup)
        try AtomicFile.write(text, to: dataDirectory + "/" + PostgresFiles.settingsFile, mode: 0o600, owner: settings.pgOSUser)
    }

    public func markStandby() throws {
        let conf = (try? String(contentsOfFile: dataDirectory + "/postgresql.conf", encoding: .utf8)) ?? ""
        try AtomicFile.write(PostgresFiles.withInclude(conf), to: dataDirectory + "/postgresql.conf", mode: 0o600, owner: settings.pgOSUser)
        try AtomicFile.write("", to: dataDirectory + "/standby.signal", mode: 0o600, owner: settings.pgOSUser)
    }

    public func writeParameters(_ text: String) throws -> Bool {
        // ignored: a missing postgresql.conf gets the two includes alone
        let conf = (try? String(contentsOfFile: dataDirectory + "/postgresql.conf", encoding: .utf8)) ?? ""
        let included = PostgresFiles.withInclude(conf)
        var changed = false
        if included != conf { changed = try AtomicFile.write(included, to: dataDirectory + "/postgresql.conf", mode: 0o600, owner: settings.pgOSUser) }
        if try AtomicFile.write(text, to: dataDirectory + "/" + PostgresParameters.file, mode: 0o600, owner: settings.pgOSUser) { changed = true }
        return changed
    }

    var walDirectory: String { dataDirectory + "/pg_wal/" }

    public func historyTimelines() -> [Int] {
        ((try? FileManager.default.contentsOfDirectory(atPath: walDirectory)) ?? []).compactMap { name -> Int? in
            name.count == 16 && name.hasSuffix(".history") ? Int(name.prefix(8), radix: 16) : nil
        }
    }

    public func readHistory(_ timeline: Int) -> String {
        (try? String(contentsOfFile: walDirectory + TimelineClaim.historyFileName(timeline), encoding: .utf8)) ?? ""
    }

    public func writeHistory(_ timeline: Int, _ text: String) throws {
        try AtomicFile.write(text, to: walDirectory + TimelineClaim.historyFileName(timeline), mode: 0o600, owner: settings.pgOSUser)
    }

    public func close() {
        connection?.close()
        connection = nil
    }
}
