import BatonChaosCore
import BatonPostgres
import Foundation
import Synchronization

/// Every acknowledgement the workload received, on the run's clock.
final class History: Sendable {
    let epoch = ContinuousClock.now
    /// The same moment on the wall clock, which the lab's servers share with this process.
    let wallEpoch = Date().timeIntervalSince1970
    private let records = Mutex<[Acknowledgement]>([])
    private let attempts = Mutex(0)

    var now: Double { seconds(ContinuousClock.now - epoch) }
    var acknowledgements: [Acknowledgement] { records.withLock { $0 } }
    var attempted: Int { attempts.withLock { $0 } }

    func record(_ a: Acknowledgement) { records.withLock { $0.append(a) } }
    func at(_ instant: ContinuousClock.Instant) -> Double { seconds(instant - epoch) }
    /// A server's wall-clock time (its `clock_timestamp()`) on the run's clock.
    func at(wall seconds: Double) -> Double { seconds - wallEpoch }
    func tried() { attempts.withLock { $0 += 1 } }

    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
}

/// The chaos run's clients: several that write unique ids through the VIP, through a node's pgbouncer
/// and with a multi-host `target_session_attrs=read-write` DSN, and a probe that writes on every node
/// every 50 ms. Each records what was acknowledged, by which server, on which timeline.
struct Workload {
    let lab: ChaosLab
    let history: History

    /// `INSERT … RETURNING` the server's address and its current timeline.
    static let returning =
        "RETURNING inet_server_addr()::text, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, extract(epoch from clock_timestamp())::text"

    static func conninfo(hosts: [String], port: Int, readWrite: Bool) -> String {
        var pairs = [
            ("host", hosts.joined(separator: ",")), ("port", String(port)), ("user", "app"), ("password", "app-secret"), ("dbname", "postgres"),
            ("connect_timeout", "2"), ("keepalives_idle", "1"), ("keepalives_interval", "1"), ("keepalives_count", "2"),
            ("tcp_user_timeout", "3000"),
        ]
        if readWrite { pairs.append(("target_session_attrs", "read-write")) }
        return ConnInfo.make(pairs)
    }

    /// Runs until cancelled.
    func run() async {
        let last = lab.names.last ?? "n1"
        let clients: [(String, String)] = [
            ("vip", Self.conninfo(hosts: [ChaosLab.vip], port: 6432, readWrite: false)),
            ("bouncer-\(last)", Self.conninfo(hosts: [lab.address(last)], port: 6432, readWrite: false)),
            ("multihost", Self.conninfo(hosts: lab.names.map(lab.address), port: 5432, readWrite: true)),
        ]
        await withDiscardingTaskGroup { group in
            for (name, conninfo) in clients {
                group.addTask { await write(client: name, conninfo: conninfo, table: "chaos_writes", pause: .milliseconds(5)) }
            }
            for node in lab.names {
                let conninfo = Self.conninfo(hosts: [lab.address(node)], port: 5432, readWrite: false)
                group.addTask { await write(client: "probe-\(node)", conninfo: conninfo, table: "chaos_probe", pause: .milliseconds(50)) }
            }
        }
    }

    /// One client: a write, its acknowledgement recorded, again; reconnecting after any error.
    func write(client: String, conninfo: String, table: String, pause: Duration) async {
        var connection: PostgresConnection? = nil
        var sequence = 0
        while !Task.isCancelled {
            sequence += 1
            let id = "\(client)-\(sequence)"
            do {
                if connection == nil { connection = try await PostgresConnection.connect(conninfo) }
                history.tried()
                let (rows, arrived) = try await connection!.timedQuery(
                    "INSERT INTO \(table) (id, client) VALUES ($1, $2) \(Self.returning)", [id, client], timeout: .seconds(5))
                if let row = rows.first, let server = row[0], let timeline = row[1].flatMap({ Int($0) }) {
                    // When it arrived, not when this task got to run again: on a loaded machine the two can be
                    // a second apart, and a late note of an old primary's last answer looks like split brain.
                    let ran = row.count > 2 ? row[2].flatMap { Double($0) }.map(history.at(wall:)) : nil
                    history.record(
                        Acknowledgement(id: id, client: client, at: history.at(arrived), server: lab.node(ofAddress: server), timeline: timeline, ran: ran))
                }
                try? await Task.sleep(for: pause)
            } catch {
                connection?.close()
                connection = nil
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        connection?.close()
    }
}
