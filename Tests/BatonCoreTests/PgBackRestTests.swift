import BatonCore
import ConsulAPI
import Testing

struct PgBackRestTests {
    let cluster = try! ClusterName("main")
    let repository = try! SafePath("/srv/backup")
    let state = try! SafePath("/var/lib/baton")

    @Test("archiving settings: only the primary archives, standbys fetch with restore_command; the config names the repository and this node's PostgreSQL")
    func settingsText() throws {
        let backup = try PgBackRest(repository: repository, stateDirectory: state, cluster: cluster)
        #expect(backup.archiveCommand == "/usr/bin/pgbackrest --config=/var/lib/baton/pgbackrest.conf --stanza=main archive-push %p")
        #expect(backup.restoreCommand == "/usr/bin/pgbackrest --config=/var/lib/baton/pgbackrest.conf --stanza=main archive-get %f \"%p\"")
        let conf = PostgresFiles.settings(
            port: try TCPPort(5432), listen: "*", socketDirectory: try SafePath("/run/postgresql"), upstream: nil, archive: backup)
        #expect(conf.contains("archive_mode = on\n"))
        #expect(conf.contains("archive_command = '\(backup.archiveCommand)'\n"))
        #expect(!PostgresFiles.settings(port: try TCPPort(5432), listen: "*", socketDirectory: try SafePath("/run/postgresql"), upstream: nil).contains("archive"))
        let text = backup.configuration(pgdata: try SafePath("/var/lib/postgresql/15/baton"), port: try TCPPort(5433), socketDirectory: try SafePath("/run/postgresql"), osUser: "postgres", address: try HostAddress("10.0.0.1"))
        #expect(!text.contains("tls-server"), "no TLS server without --backup-tls-*")
        for line in ["repo1-path=/srv/backup", "repo1-retention-full=2", "process-max=1", "lock-path=/var/lib/baton/pgbackrest/lock", "[main]", "pg1-path=/var/lib/postgresql/15/baton", "pg1-port=5433"] {
            #expect(text.contains(line + "\n"), "\(line) in\n\(text)")
        }
        // The cluster-wide parameters cannot take archiving over.
        #expect(throws: ValidationProblem.self) { try PostgresParameters().setting("archive_command", to: "cp %p /x") }
        #expect(throws: ValidationProblem.self) { try PostgresParameters().setting("archive_mode", to: "off") }
    }

    @Test("a path the archive command could not carry as it is, or a retention out of range, is refused")
    func badInput() {
        #expect(throws: ValidationProblem.self) { try PgBackRest(repository: try SafePath("/srv/my backups"), stateDirectory: state, cluster: cluster) }
        #expect(throws: ValidationProblem.self) { try PgBackRest(repository: try SafePath("/srv/$HOME"), stateDirectory: state, cluster: cluster) }
        #expect(throws: ValidationProblem.self) { try PgBackRest(repository: repository, stateDirectory: try SafePath("/var/lib/ba;ton"), cluster: cluster) }
        #expect(throws: ValidationProblem.self) { try PgBackRest(repository: repository, stateDirectory: state, cluster: cluster, retentionFull: 0) }
        for processes in [0, 33, -1] {
            #expect(throws: ValidationProblem.self) { try PgBackRest(repository: repository, stateDirectory: state, cluster: cluster, processMax: processes) }
        }
        let four = try? PgBackRest(repository: repository, stateDirectory: state, cluster: cluster, processMax: 4)
        #expect(four?.configuration(pgdata: state, port: try! TCPPort(5432), socketDirectory: state, osUser: "postgres", address: try! HostAddress("10.0.0.1")).contains("\nprocess-max=4\n") == true)
    }

    @Test("a backup from a standby runs on a streaming standby whose leader publishes its TLS server, else it says what is missing; the arguments reach the primary as pg2")
    func standbyBackup() throws {
        var backup = try PgBackRest(repository: repository, stateDirectory: state, cluster: cluster)
        let tls = PgBackRest.TLSServer(certificate: try SafePath("/etc/baton/node.crt"), key: try SafePath("/etc/baton/node.key"), ca: try SafePath("/etc/baton/ca.crt"))
        let me = try NodeName("pg2")
        let leader = try NodeName("pg1")
        let server = BackupServerAddress(
            port: try TCPPort(8432), config: try SafePath("/var/lib/baton1/pgbackrest.conf"), pgdata: try SafePath("/var/lib/postgresql/15/pg1"),
            socketDirectory: try SafePath("/run/postgresql"))
        let published = NodeRegistration(
            name: leader, address: try HostAddress("10.0.0.1"), port: try TCPPort(5433), role: .primary, upstream: nil, priority: 100, location: "default",
            backupServer: server)
        var unpublished = published
        unpublished.backupServer = nil
        let streaming = LocalPostgres.standby(position: LSN(0x300_0000), timeline: 1, upstream: "10.0.0.1:5433", streaming: true)
        let notStreaming = LocalPostgres.standby(position: LSN(0x300_0000), timeline: 1, upstream: "10.0.0.1:5433", streaming: false)
        func refusal(_ leader: NodeName?, _ registration: NodeRegistration?, _ local: LocalPostgres) -> String? {
            do { _ = try backup.standbyBackup(me: me, leader: leader, leaderRegistration: registration, local: local) } catch { return error.message }
            return nil
        }
        #expect(refusal(leader, published, streaming)?.contains("--backup-tls-certificate") == true, "no certificate on this node")
        backup.tls = tls
        for (leaderNow, registration, local, says) in [
            (nil, published, streaming, "nobody leads"),
            (me, published, streaming, "this node (pg2) leads"),
            (leader, published, notStreaming, "not a standby streaming"),
            (leader, published, LocalPostgres.primary(position: LSN(0x300_0000), timeline: 2), "not a standby streaming"),
            (leader, published, LocalPostgres.down(standbySignal: true), "not a standby streaming"),
            (leader, unpublished, streaming, "the leader pg1 publishes no pgBackRest TLS server"),
            (leader, nil, streaming, "the leader pg1 publishes no pgBackRest TLS server"),
        ] as [(NodeName?, NodeRegistration?, LocalPostgres, String)] {
            #expect(refusal(leaderNow, registration, local)?.contains(says) == true, "\(String(describing: leaderNow)), \(local): \(refusal(leaderNow, registration, local) ?? "allowed")")
        }
        let arguments = try backup.standbyBackup(me: me, leader: leader, leaderRegistration: published, local: streaming)
        #expect(
            arguments == [
                "--backup-standby", "--pg2-host=10.0.0.1", "--pg2-host-type=tls", "--pg2-host-port=8432", "--pg2-host-cert-file=/etc/baton/node.crt",
                "--pg2-host-key-file=/etc/baton/node.key", "--pg2-host-ca-file=/etc/baton/ca.crt", "--pg2-host-config=/var/lib/baton1/pgbackrest.conf",
                "--pg2-path=/var/lib/postgresql/15/pg1", "--pg2-port=5433", "--pg2-socket-path=/run/postgresql",
            ])
    }

    @Test("a failed backup says which database host pgBackRest could not check, and what a certificate without the host's name needs")
    func backupFailure() {
        let output = """
            P00   INFO: backup command begin 2.45: --backup-standby --pg2-host=198.18.0.11 --stanza=main
            WARN: unable to check pg2: [CryptoError] unable to find hostname '198.18.0.11' in certificate common name or subject alternative names
            ERROR: [056]: unable to find primary cluster - cannot proceed
                   HINT: are all available clusters in recovery?
            P00   INFO: backup command end: aborted with exception [056]
            """
        let said = PgBackRest.backupFailure(output)
        #expect(said.hasPrefix("WARN: unable to check pg2: [CryptoError]"), "\(said)")
        #expect(said.contains("ERROR: [056]: unable to find primary cluster") && said.contains("DNS subjectAltName"), "\(said)")
        #expect(PgBackRest.backupFailure("ERROR: [047]: unable to create path\nP00   INFO: backup command end: aborted") == "ERROR: [047]: unable to create path | P00   INFO: backup command end: aborted")
    }

    @Test("a restore's summary is read from pgBackRest's output (nil without one)")
    func restoreSummary() {
        let output = """
            2026-12-07 19:01:02.123 P00   INFO: restore command begin 2.45: --delta --pg1-path=/x --stanza=main --type=standby
            2026-12-07 19:01:05.456 P00   INFO: restore size = 1GB, file total = 1271
            2026-12-07 19:01:05.500 P00   INFO: restore command end: completed successfully (3377ms)
            """
        #expect(PgBackRest.restoreSummary(output) == "restore size = 1GB, file total = 1271")
        #expect(PgBackRest.restoreSummary("P00   INFO: restore command end: completed successfully") == nil)
    }

    @Test("after a promotion the node pushes the earlier timelines' segments it holds up to each one's end — never the partial one, recycled ones or the new timeline's")
    func segmentsAfterPromotion() {
        // Timeline 1 ended in segment 6 (0/6000060), timeline 2 in segment 9 (0/9000000: segment 9 starts there).
        let history = "1\t0/6000060\tno recovery target specified\n2\t0/9000000\tno recovery target specified\n"
        let files = [
            "000000010000000000000004", "000000010000000000000005", "000000010000000000000006.partial", "000000010000000000000006",
            "00000001000000000000000A",  // recycled: past the end of timeline 1
            "000000020000000000000007", "000000020000000000000008", "000000020000000000000009",
            "000000030000000000000009", "00000002.history", "00000003.history", "archive_status", "000000010000000000000003.00000028.backup",
        ]
        #expect(
            PgBackRest.segmentsToPushAfterPromotion(walFiles: files, history: history)
                == ["000000010000000000000004", "000000010000000000000005", "000000020000000000000007", "000000020000000000000008"])
        // Segment numbers cross a log id: 0/FF000000 is segment 255, 1/00000000 segment 256.
        #expect(PgBackRest.Segment("0000000100000000000000FF")?.number == 255)
        #expect(PgBackRest.Segment("000000010000000100000000")?.number == 256)
        #expect(PgBackRest.segmentsToPushAfterPromotion(walFiles: ["0000000100000000000000FF"], history: "1\t1/100\treason\n") == ["0000000100000000000000FF"])
        #expect(PgBackRest.segmentsToPushAfterPromotion(walFiles: files, history: "") == [], "no history, nothing pushed")
        #expect(PgBackRest.segmentsToPushAfterPromotion(walFiles: files, history: "garbage\n1\tnot-an-lsn\tx\n") == [])
    }

    @Test("pgbackrest info's JSON: backups oldest first with sizes and times, the archive's range; another stanza's or none")
    func info() throws {
        let json = """
            [{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000020000000000000009","min":"000000010000000000000003"}],
              "backup":[
                {"archive":{"start":"000000020000000000000008","stop":"000000020000000000000008"},"error":false,
                 "info":{"delta":1000,"repository":{"delta":200,"size":200},"size":23302893},"label":"20261207-120900F_20261207-121000I",
                 "timestamp":{"start":1796385600,"stop":1796385602},"type":"incr"},
                {"archive":{"start":"000000010000000000000004","stop":"000000010000000000000004"},"error":false,
                 "info":{"delta":23302893,"repository":{"delta":2973413,"size":2973413},"size":23302893},"label":"20261207-120900F",
                 "timestamp":{"start":1796385540,"stop":1796385543},"type":"full"}],
              "name":"main","status":{"code":0,"message":"ok"}}]
            """
        let info = try PgBackRest.info(json: Array(json.utf8), stanza: "main")
        #expect(info.status == "ok" && info.archiveMin == "000000010000000000000003" && info.archiveMax == "000000020000000000000009")
        #expect(info.backups.map(\.type) == ["full", "incr"])
        #expect(info.backups[0].databaseBytes == 23_302_893 && info.backups[0].repositoryBytes == 2_973_413 && info.backups[0].stopped - info.backups[0].started == 3)
        #expect(try PgBackRest.info(json: Array(json.utf8), stanza: "other").status == "missing stanza")
        #expect(throws: ValidationProblem.self) { try PgBackRest.info(json: Array("not json".utf8), stanza: "main") }
        #expect(throws: ValidationProblem.self) { try PgBackRest.info(json: Array("{}".utf8), stanza: "main") }
    }

    @Test("bootstrap with backups: pgBackRest's config before PostgreSQL's on every node, the stanza once, by the node that creates the cluster")
    func bootstrapSteps() throws {
        let node = try NodeName("pg1")
        let base = BootstrapObservation(
            node: node, cluster: cluster, creating: true, claim: nil, dataDirectory: DataDirectoryState(kind: .empty), postgresRunning: false,
            primary: nil, forceClone: false, keepalivedWanted: false, backupWanted: true)
        let master = try BootstrapPlanner.plan(base)
        let configure = try #require(master.firstIndex(of: .configureBackup))
        #expect(configure < master.firstIndex(of: .configurePostgres(standbyOf: nil))!)
        #expect(master.firstIndex(of: .createBackupStanza)! > master.firstIndex(of: .startPostgres)!)
        var without = base
        without.backupWanted = false
        #expect(!(try BootstrapPlanner.plan(without)).contains(.configureBackup))
        var join = base
        join.creating = false
        join.node = try NodeName("pg2")
        join.claim = ClusterClaim(node: node, systemIdentifier: "7000")
        join.primary = NodeRegistration(
            name: node, address: try HostAddress("198.18.0.1"), port: try TCPPort(5432), role: .primary, upstream: nil, priority: 100, location: "default")
        let joining = try BootstrapPlanner.plan(join)
        #expect(!joining.contains(.createBackupStanza))
        #expect(try #require(joining.firstIndex(of: .configureBackup)) < joining.firstIndex(of: .clone(from: node))!, "a clone may restore from the repository")
    }
}

struct ArchiveHealthTests {
    let statistics = ArchiverStatistics(failedCount: 3, lastArchivedAt: 1000, lastFailedAt: 900, lastFailedWAL: "000000010000000000000004")

    @Test("the archive's lag is the oldest waiting segment's wait; a failure counts as failing only when it came after the last success")
    func observe() {
        let health = ArchiveHealth.observe(statistics, readySince: [1500, 1200, 1400], now: 1600, backups: .newest(500))
        #expect(health.waiting == 3 && health.lagSeconds == 400 && health.failures == 3 && health.failingSince == nil && health.failingWAL == nil)
        var failing = statistics
        failing.lastFailedAt = 1100
        let now = ArchiveHealth.observe(failing, readySince: [], now: 1600, backups: .unknown)
        #expect(now.lagSeconds == 0 && now.failingSince == 1100 && now.failingWAL == "000000010000000000000004")
        let never = ArchiveHealth.observe(ArchiverStatistics(failedCount: 1, lastArchivedAt: nil, lastFailedAt: 10, lastFailedWAL: "00000001.history"), readySince: [], now: 20, backups: .none)
        #expect(never.failingSince == 10, "failing and never archived")
    }

    @Test("problems: behind past 5 minutes or failing, no backup, one over 8 days old; nothing when well or not known yet")
    func problems() {
        let day = 86_400.0
        #expect(ArchiveHealth(waiting: 1, lagSeconds: 20, failures: 0, backups: .newest(0)).problems(now: day).isEmpty)
        #expect(ArchiveHealth(waiting: 0, lagSeconds: 0, failures: 0, backups: .unknown).problems(now: day).isEmpty, "not read yet: no warning")
        let stuck = ArchiveHealth(waiting: 7, lagSeconds: 301, failures: 2, failingSince: 5, failingWAL: "000000010000000000000009", backups: .newest(0))
        #expect(stuck.problems(now: day).count == 1 && stuck.problems(now: day)[0].contains("7 segment(s) wait") && stuck.problems(now: day)[0].contains("000000010000000000000009"))
        #expect(ArchiveHealth(waiting: 0, lagSeconds: 0, failures: 0, backups: .none).problems(now: day) == [
            "the repository holds no backup yet: run `baton backup` on the leader; until then nothing can be restored"
        ])
        #expect(ArchiveHealth(waiting: 0, lagSeconds: 0, failures: 0, backups: .newest(0)).problems(now: 9 * day)[0].contains("9 days old"))
    }

    @Test("a report carries the lag in tens of seconds (a resting report does not change every loop), and reads back; a bad one is none")
    func report() throws {
        let health = ArchiveHealth(waiting: 2, lagSeconds: 37.5, failures: 1, failingSince: 12, failingWAL: "000000010000000000000004", backups: .newest(99))
        #expect(health.reported.lagSeconds == 30)
        var status = MemberStatus(local: .primary(position: LSN(0x3000000), timeline: 2), decision: "lead", time: 1)
        status.archive = health.reported
        let read = try #require(MemberStatus(bytes: status.json.serializedBytes()))
        #expect(read.archive == health.reported)
        for backups in [ArchiveHealth.Backups.none, .unknown] {
            status.archive = ArchiveHealth(waiting: 0, lagSeconds: 0, failures: 0, backups: backups)
            #expect(MemberStatus(bytes: status.json.serializedBytes())?.archive?.backups == backups)
        }
        #expect(ArchiveHealth(json: try JSONValue.parse(#"{"waiting": -1, "lag_seconds": 0, "failures": 0}"#)) == nil)
        let hostile = ArchiveHealth(json: try JSONValue.parse(#"{"waiting": 1, "lag_seconds": 0, "failures": 0, "failing_wal": "x\n'; rm"}"#))
        #expect(hostile != nil && hostile?.failingWAL == nil, "a WAL name that is not one is dropped")
    }
}

struct CloneSourceTests {
    func info(status: String = "ok", walStop: String = "000000010000000000000004", archiveMax: String? = "000000010000000000000009", error: Bool = false) -> PgBackRest.Info {
        PgBackRest.Info(
            status: status,
            backups: [
                PgBackRest.Backup(
                    label: "20261207-120705F", type: "full", started: 0, stopped: 3, databaseBytes: 1, repositoryBytes: 1, walStart: walStop, walStop: walStop,
                    error: error)
            ], archiveMin: "000000010000000000000003", archiveMax: archiveMax)
    }

    @Test("a clone restores from the repository when asked, or (auto) when a backup exists that the archive carries on from; else pg_basebackup")
    func choice() {
        #expect(CloneSource.auto.restoresFromBackup(configured: true, info: info()).0)
        #expect(CloneSource.backup.restoresFromBackup(configured: true, info: nil).0)
        #expect(!CloneSource.primary.restoresFromBackup(configured: true, info: info()).0)
        #expect(!CloneSource.auto.restoresFromBackup(configured: false, info: info()).0, "no backups configured")
        #expect(!CloneSource.auto.restoresFromBackup(configured: true, info: nil).0, "the repository could not be read")
        #expect(!CloneSource.auto.restoresFromBackup(configured: true, info: info(status: "missing stanza")).0)
        #expect(!CloneSource.auto.restoresFromBackup(configured: true, info: info(error: true)).0, "only a backup with errors")
        let short = CloneSource.auto.restoresFromBackup(configured: true, info: info(walStop: "00000001000000000000000A"))
        #expect(!short.0 && short.1.contains("does not reach"), "\(short.1)")
        var none = info()
        none.backups = []
        #expect(!CloneSource.auto.restoresFromBackup(configured: true, info: none).0)
    }
}

struct ScheduledBackupTests {
    @Test("a scheduled backup is due when the repository holds none or the newest is as old as backup_every; never when off or not known yet")
    func due() {
        let hour = GoDuration.seconds(3600)
        #expect(!ArchiveHealth.backupDue(every: .zero, backups: .none, now: 0))
        #expect(!ArchiveHealth.backupDue(every: hour, backups: .unknown, now: 0))
        #expect(ArchiveHealth.backupDue(every: hour, backups: .none, now: 0))
        #expect(!ArchiveHealth.backupDue(every: hour, backups: .newest(1000), now: 1000 + 3599))
        #expect(ArchiveHealth.backupDue(every: hour, backups: .newest(1000), now: 1000 + 3600))
    }

    @Test("backup_every and backup_type in the cluster settings: parsed, shown, checked")
    func settings() throws {
        var config = ClusterConfig()
        try config.set("backup_every", "24h")
        try config.set("backup_type", "incr")
        try config.validate()
        let read = try ClusterConfig(bytes: config.json.serializedBytes(), key: "config")
        #expect(read.backupEvery == .seconds(86_400) && read.backupType == "incr")
        #expect(throws: ValidationProblem.self) { try config.set("backup_type", "weekly") }
        config.backupEvery = .seconds(600)
        #expect(throws: ValidationProblem.self) { try config.validate() }
        #expect(ClusterConfig().backupEvery == .zero, "off unless set")
    }
}

struct PostgresLogTests {
    @Test("a stopped server's reason: its FATAL line first, then the last lines, each once")
    func reason() {
        let log = """
            LOG:  restored log file "00000002000000000000000C" from archive
            FATAL:  recovery ended before configured recovery target was reached
            LOG:  startup process (PID 3570) exited with exit code 1
            LOG:  shutting down due to startup process failure
            LOG:  database system is shut down
            """
        #expect(
            PostgresLog.reason(log)
                == "FATAL:  recovery ended before configured recovery target was reached | LOG:  shutting down due to startup process failure | LOG:  database system is shut down")
        #expect(PostgresLog.reason("LOG:  a\nLOG:  b\nLOG:  c") == "LOG:  b | LOG:  c")
    }
}
