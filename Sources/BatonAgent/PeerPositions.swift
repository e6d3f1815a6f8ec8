import BatonConsul
import BatonCore
import BatonPostgres
import ConsulAPI

/// Asks other candidates' node APIs where their PostgreSQL is now (`GET /position`) before this node
/// takes the leader lock, as Patroni asks its members: their reports in Consul may be up to 1.5 loops
/// old (issue 23, finding 12).
struct PeerPositions: Sendable {
    let transport: CurlTransport

    init(tls: TLSFiles) { transport = CurlTransport(tls: tls) }

    /// All at once, each within `timeout`; a node that does not answer, or answers something else, is
    /// left out (its report stands).
    func ask(_ peers: [(NodeName, NodeAPIAddress)], timeout: Duration) async -> [NodeName: LivePosition] {
        let transport = self.transport
        return await withTaskGroup(of: (NodeName, LivePosition?).self) { group in
            for (name, api) in peers {
                group.addTask {
                    let request = HTTPRequest(method: "GET", url: api.url + "/position", timeout: timeout)
                    // ignored: a peer that cannot be asked keeps the position it reported to Consul
                    guard let response = try? await transport.send(request), response.status == 200,
                        let json = try? JSONValue.parse(response.body)
                    else { return (name, nil) }
                    return (name, LivePosition(json: json))
                }
            }
            var answers: [NodeName: LivePosition] = [:]
            for await (name, position) in group { if let position { answers[name] = position } }
            return answers
        }
    }

    /// Which of `nodes` have a PostgreSQL that answers, asked directly (`pg_is_in_recovery()` over
    /// `conninfo`, each within `timeout`, all at once), that it is a writable primary. Asked of the
    /// nodes whose API did not answer: a primary whose monitor is not running (it crashed with its
    /// watchdog, or never started) has nobody to fence it, and a replica that took the lock would be a
    /// second writable primary.
    static func writablePostgres(_ nodes: [(NodeName, String)], timeout: Duration) async -> Set<NodeName> {
        await withTaskGroup(of: NodeName?.self) { group in
            for (name, conninfo) in nodes {
                group.addTask {
                    let deadline = ContinuousClock.now + timeout
                    // ignored: a PostgreSQL that cannot be reached or does not answer in time is none that takes writes here
                    guard let connection = try? await PostgresConnection.connect(conninfo, timeout: timeout) else { return nil }
                    defer { connection.close() }
                    let left = deadline - ContinuousClock.now
                    // ignored: as above
                    let recovering = try? await connection.query("SELECT pg_is_in_recovery()", timeout: max(left, .milliseconds(100))).first?.first
                    return recovering == "f" ? name : nil
                }
            }
            var writable: Set<NodeName> = []
            for await name in group { if let name { writable.insert(name) } }
            return writable
        }
    }
}
