import BatonConsul
import BatonCore
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
}
