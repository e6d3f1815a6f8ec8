import BatonBootstrap
import BatonSettings
import BatonConsul
import BatonCore
import BatonPostgres
import BatonSigning
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

extension MonitorLiveTests {
    /// One request to a node's API.
    func api(_ c: LiveCluster, _ node: String, _ path: String, method: String = "GET", body: [UInt8]? = nil) async -> HTTPResponse? {
        let request = HTTPRequest(method: method, url: "http://127.0.0.1:\(c.apiPort(node))\(path)", body: body, timeout: .seconds(3))
        return try? await CurlTransport().send(request)
    }

    func apiStatus(_ c: LiveCluster, _ node: String, _ path: String) async -> Int? { await api(c, node, path)?.status }

    /// Parses Prometheus text with the Prometheus project's own Python parser; returns the family names.
    func prometheusFamilies(_ text: String) async throws -> [String] {
        let script = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            for family in text_string_to_metric_families(sys.stdin.read()):
                print(family.name)
            """
        let result = try await runCommand("/usr/bin/python3", ["-c", script], input: text)
        guard result.status == 0 else { throw TestSupportError("prometheus_client could not parse /metrics: \(result.output.suffix(2000))") }
        return result.output.split(separator: "\n").map(String.init)
    }

    @Test("the node API: health endpoints answer 200 or 503 by role, /cluster and /metrics (parsed by Prometheus' own parser), Consul lists only the leader as primary; oversized requests and too many connections are refused and it keeps serving")
    func nodeAPI() async throws {
        try await LiveCluster.with { c in
            // The replicas log JSON lines (log-format: json), checked after the failover below.
            let json: [String: RawValue] = ["log-format": .string("json")]
            let nodes = try await threeNodes(c, options: ["pg2": json, "pg3": json])
            #expect(await reportsStreaming(c, "pg2", within: .seconds(15)))
            #expect(await eventually(timeout: .seconds(10)) { await apiStatus(c, "pg1", "/primary") == 200 })
            for (path, status) in [("/primary", 200), ("/replica", 503), ("/read-only", 200), ("/health", 200), ("/liveness", 200), ("/readiness", 200)] {
                #expect(await apiStatus(c, "pg1", path) == status, "pg1 \(path)")
            }
            for (path, status) in [
                ("/primary", 503), ("/replica", 200), ("/read-only", 200), ("/health", 200), ("/async", 200),
                ("/sync", 503), ("/replica?lag=lots", 400), ("/nothing", 404),
            ] {
                #expect(await apiStatus(c, "pg2", path) == status, "pg2 \(path)")
            }
            // Within 1 MB once the leader's reported position and the standby's replay meet (right
            // after the clone the leader may report a position the standby has yet to replay).
            #expect(await eventually(timeout: .seconds(10)) { await apiStatus(c, "pg2", "/replica?lag=1MB") == 200 }, "pg2 /replica?lag=1MB")
            let head = await api(c, "pg1", "/primary", method: "HEAD")
            #expect(head?.status == 200 && head?.body.isEmpty == true)
            #expect(await apiStatus(c, "pg1", "/primary?x=1") == 200, "parameters a health check does not know are ignored where none are expected")
            #expect(await api(c, "pg1", "/primary", method: "POST")?.status == 405)
            let cluster = try JSONValue.parse(await api(c, "pg2", "/cluster")?.body ?? [])
            #expect(cluster.member("leader")?.stringValue == "pg1")
            #expect(cluster.member("nodes")?.arrayValue?.count == 3)
            // The verdict of `baton explain` as pg2's monitor sees it: a replica would take over; pg1 leads.
            let verdict = cluster.member("explain")
            #expect(["pg2", "pg3"].contains(verdict?.member("winner")?.stringValue ?? ""), "\(String(describing: verdict))")
            #expect(verdict?.member("ineligible")?.arrayValue?.contains { $0.member("node")?.stringValue == "pg1" && $0.member("reason")?.stringValue?.contains("leader lock") == true } == true)

            // Metrics: Prometheus' text format, as Prometheus parses it — once the leader has seen the
            // replicas' slots and judged pg2 eligible (a loop or two after they stream: its report must
            // keep moving and reach the primary's position).
            let settledMetrics = await eventually(timeout: .seconds(15)) {
                let text = await api(c, "pg1", "/metrics")?.text ?? ""
                return text.contains("baton_slot_retained_bytes{") && text.contains(#"baton_failover_eligible{node="pg2",reason="eligible"} 1"#)
            }
            let notSettled = settledMetrics ? "" : (await api(c, "pg1", "/metrics")?.text ?? "").split(separator: "\n").filter { $0.hasPrefix("baton_failover_eligible") && $0.hasSuffix(" 1") }.joined(separator: "\n")
            #expect(settledMetrics, "pg1's view of the candidates: \(notSettled)")
            let metrics = await api(c, "pg1", "/metrics")
            #expect(metrics?.header("content-type")?.hasPrefix("text/plain") == true)
            let families = try await prometheusFamilies(metrics?.text ?? "")
            for name in [
                "baton_leader_lock_held", "baton_postgres_role", "baton_timeline", "baton_wal_position_bytes", "baton_heartbeat_age_seconds",
                "baton_loop_duration_seconds", "baton_decisions", "baton_consul_request_duration_seconds", "baton_replication_lag_bytes",
                // The decision's metrics, which Deploy/prometheus/baton-alerts.yml alerts on (issue 25).
                "baton_failover_eligible", "baton_failover_rank", "baton_candidate_lag_bytes", "baton_primary_position_bytes",
                "baton_leader_silence_seconds", "baton_failover_paused", "baton_watchdog_answers", "baton_consul_reachable", "baton_slot_retained_bytes",
                "baton_slot_lost", "baton_pending_restart",
            ] {
                #expect(families.contains(name), "\(name) in \(families)")
            }
            #expect(metrics?.text.contains("baton_leader_lock_held 1") == true)
            #expect(metrics?.text.contains("baton_watchdog_answers 1") == true)
            // pg1 leads; the replicas are eligible as pg1's monitor sees them.
            #expect(metrics?.text.contains(#"baton_failover_eligible{node="pg1",reason="leader"} 1"#) == true, "\(metrics?.text ?? "")")
            #expect(metrics?.text.contains(#"baton_failover_eligible{node="pg2",reason="eligible"} 1"#) == true)

            // Consul names only the leader as primary (its check is the node's own /primary).
            let primaries = await eventually(timeout: .seconds(15)) {
                let passing = (try? await c.client.healthService("live", passing: true, tag: "primary").value) ?? []
                return passing.map(\.serviceID) == ["baton-live-pg1"]
            }
            let registered = primaries ? [] : ((try? await c.client.healthService("live", tag: "primary").value) ?? [])
            #expect(primaries, "\(registered)")
            let replicas = await eventually(timeout: .seconds(15)) {
                ((try? await c.client.healthService("live", passing: true, tag: "replica").value) ?? []).count == 2
            }
            #expect(replicas)

            // Issue 23, finding 7: only a member may ask for the failsafe promise. On main an unsigned
            // request for the leader was granted (200), and the replica then would not take over.
            let ask = JSONValue.object([("leader", .string("pg1")), ("fence_after", .string("3s"))]).serializedBytes()
            let now = Int64(Date().timeIntervalSince1970)
            func failsafe(_ authorization: String?) async -> HTTPResponse? {
                let request = HTTPRequest(
                    method: "POST", url: "http://127.0.0.1:\(c.apiPort("pg2"))/failsafe",
                    headers: [("Content-Type", "application/json")] + (authorization.map { [("Authorization", $0)] } ?? []), body: ask, timeout: .seconds(3))
                return try? await CurlTransport().send(request)
            }
            let unsigned = await failsafe(nil)
            #expect(unsigned?.status == 401 && unsigned?.text.contains("unsigned") == true, "\(unsigned?.text ?? "no answer")")
            let stranger = NodeAPISigner(replicationPassword: "not-the-password", cluster: try ClusterName("live"))
            let forged = await failsafe(stranger.authorization(method: "POST", path: "/failsafe", body: ask, time: now))
            #expect(forged?.status == 401 && forged?.text.contains("does not match") == true, "\(forged?.text ?? "no answer")")
            let replayed = await failsafe(c.signer.authorization(method: "POST", path: "/failsafe", body: ask, time: now - 3600))
            #expect(replayed?.status == 401, "\(replayed?.text ?? "no answer")")
            // A member's signed request is judged by the rules (asked for pg3, which does not hold the
            // lock: refused — a promise to pg1 now would hold the failover below off for its period).
            let other = JSONValue.object([("leader", .string("pg3")), ("fence_after", .string("3s"))]).serializedBytes()
            let member = try? await CurlTransport().send(
                HTTPRequest(
                    method: "POST", url: "http://127.0.0.1:\(c.apiPort("pg2"))/failsafe",
                    headers: [("Content-Type", "application/json"), ("Authorization", c.signer.authorization(method: "POST", path: "/failsafe", body: other, time: now))],
                    body: other, timeout: .seconds(3)))
            #expect(member?.status == 409 && member?.text.contains("pg1 holds the leader lock") == true, "\(member?.text ?? "no answer")")

            // Bounds: an oversized body gets 413, a connection beyond the limit 503; it keeps serving.
            let big = await api(c, "pg1", "/failsafe", method: "POST", body: [UInt8](repeating: 32, count: 100_000))
            #expect(big?.status == 413, "\(big?.text ?? "no answer")")
            var held: [Int32] = []
            for _ in 0..<70 { if let fd = openConnection(port: c.apiPort("pg1")) { held.append(fd) } }
            // On a new connection of its own (an HTTP client would reuse one it has, admitted long ago).
            let crowded = rawRequest(port: c.apiPort("pg1"), "GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            #expect(crowded.hasPrefix("HTTP/1.1 503") && crowded.contains("too many connections"), "\(crowded)")
            for fd in held { close(fd) }
            #expect(await eventually(timeout: .seconds(5)) { await apiStatus(c, "pg1", "/health") == 200 }, "serving again")

            // baton report: one archive with the cluster's state and every node's diagnostics, no secret in it.
            let unsignedReport = await api(c, "pg2", "/report")
            #expect(unsignedReport?.status == 401, "\(unsignedReport?.text ?? "no answer")")
            let archive = c.root + "/report.tar.gz"
            let report = try await runCommand(BatonProcess.executable, ["report", "--config", c.directory("pg1") + "/baton.yaml", "--output", archive])
            #expect(report.status == 0 && report.output.contains("✓ node pg3") && !report.output.contains("✗"), "\(report.output)")
            let unpacked = c.root + "/report"
            try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
            let untar = try await runCommand("/bin/tar", ["-xzf", archive, "-C", unpacked])
            #expect(untar.status == 0, "\(untar.output)")
            let top = try #require(try FileManager.default.contentsOfDirectory(atPath: unpacked).first)
            func file(_ name: String) -> String { (try? String(contentsOfFile: unpacked + "/" + top + "/" + name, encoding: .utf8)) ?? "" }
            #expect(file("status.txt").contains("pg1") && file("explain.txt").contains("would take over") && file("consul-keys.json").contains("/leader"))
            #expect(file("nodes/pg2/pg_controldata.txt").contains("Database system identifier"))
            #expect(file("nodes/pg3/monitor.log").contains("Monitor starting") && file("nodes/pg1/postgresql.log").count > 0)
            let password = try String(contentsOfFile: c.passwordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let everything = (FileManager.default.enumerator(atPath: unpacked + "/" + top)?.allObjects as? [String] ?? []).map(file).joined()
            #expect(!password.isEmpty && !everything.contains(password), "the replication password is in the report")

            // A failover moves the primary tag.
            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let newLeader = try #require(await newWritableLeader(c, nodes, replacing: "pg1"))
            #expect(await eventually(timeout: .seconds(10)) { await apiStatus(c, newLeader, "/primary") == 200 })
            #expect(await apiStatus(c, "pg1", "/primary") != 200)
            let moved = await eventually(timeout: .seconds(20)) {
                let passing = (try? await c.client.healthService("live", passing: true, tag: "primary").value) ?? []
                return passing.map(\.serviceID) == ["baton-live-\(newLeader)"]
            }
            #expect(moved)

            // The new leader's log: every line one JSON object with the fixed keys; its promotion a
            // cluster event, its decision to take the lock with the reason.
            let monitor = try #require(c.trackedProcesses.first { $0.process.arguments == ["monitor", "--config", c.directory(newLeader) + "/baton.yaml"] })
            var events: [String] = []
            for line in monitor.output.split(separator: "\n") {
                let object = try? JSONValue.parse(Array(line.utf8))
                #expect(object?.member("time")?.stringValue != nil && object?.member("level")?.stringValue != nil, "not a JSON log line: \(line)")
                #expect(object?.member("node")?.stringValue == newLeader && object?.member("cluster")?.stringValue == "live", "\(line)")
                #expect(object?.member("reason") != nil && object?.member("message")?.stringValue != nil, "\(line)")
                if let event = object?.member("event")?.stringValue { events.append(event) }
            }
            #expect(events.contains("promote") && events.contains { $0.hasPrefix("decision: ") }, "\(events)")
        }
    }

    /// A TCP connection to 127.0.0.1:port, left open.
    /// Sends `request` on a connection of its own and returns what came back (within 5 s).
    func rawRequest(port: Int, _ request: String) -> String {
        guard let fd = openConnection(port: port) else { return "(cannot connect)" }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(request.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { return "(cannot send)" }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    func openConnection(port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        return fd
    }
}
