import BatonConsul
import BatonConsulStore
import BatonHTTP
import ConsulAPI
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The server's timers: session TTLs, TTL checks, the HTTP and TCP checks it runs, the reaping of
/// services critical for longer than their DeregisterCriticalServiceAfter, and of tombstones older than
/// ``State/tombstoneTTL``.
final class CheckRunner: Sendable {
    private let store: Store
    /// The probe loop of each HTTP or TCP check, with the definition it probes.
    private let probes = Mutex<[String: (probed: ProbedDefinition, task: Task<Void, Never>)]>([:])
    private let sweeper = Mutex<Task<Void, Never>?>(nil)
    private let http = CurlTransport()
    /// The longest the timer task sleeps with nothing due.
    static let idleWake: Duration = .seconds(60)
    /// The shortest pause between two looks unless woken: a deadline that cannot be cleared (a write
    /// refused by a failed disk) is retried 20 times a second, not in a busy loop.
    static let minimumPause: Duration = .milliseconds(50)

    /// How often the timer task has looked at the deadlines (it should at rest only when one is due).
    let looks = Atomic<Int>(0)

    init(store: Store) { self.store = store }

    /// Starts the timer task: it sleeps until the earliest deadline (``Store/nextDeadline()``), woken
    /// early by the store's ``Alarm`` when an earlier one is set, and then expires what is due.
    func start() {
        let task = Task { [self] in
            while !Task.isCancelled {
                store.alarm.awake()
                looks.add(1, ordering: .relaxed)
                await sweep()
                let now = ContinuousClock.now
                let next = store.nextDeadline() ?? now + Self.idleWake
                await store.alarm.sleep(until: min(max(next, now + Self.minimumPause), now + Self.idleWake))
            }
        }
        sweeper.withLock { $0 = task }
        reconcile()
    }

    func stop() {
        sweeper.withLock { $0?.cancel() }
        let tasks = probes.withLock { p -> [Task<Void, Never>] in
            defer { p.removeAll() }
            return p.values.map(\.task)
        }
        for t in tasks { t.cancel() }
    }

    private func sweep() async {
        let now = ContinuousClock.now
        store.expireWaiters(now: now)
        let (sessions, checks, reap) = store.mutateRuntime { s -> ([String], [(String, String)], [String]) in
            let sessions = s.expiredSessions(at: now)
            var checks: [(String, String)] = []
            for (id, deadline) in s.checkDeadlines where deadline <= now {
                s.checkDeadlines[id] = nil
                guard let check = s.checks[id], check.status != "critical" else { continue }
                let output = check.output.isEmpty ? "TTL expired" : "TTL expired (last output before timeout follows): \(check.output)"
                checks.append((id, output))
            }
            var reap: [String] = []
            for (id, since) in s.criticalSince {
                guard let check = s.checks[id], let after = check.deregisterCriticalServiceAfter, !check.serviceID.isEmpty else { continue }
                if since.advanced(by: State.reapAfter(after).swiftDuration) <= now { reap.append(check.serviceID) }
            }
            return (sessions, checks, Array(Set(reap)).sorted())
        }
        for id in sessions {
            _ = try? await store.write { s, index, now in
                // A renewal may have raced this sweep.
                guard let deadline = s.sessionDeadlines[id], deadline <= now else { return Plan([], ()) }
                return Plan(Operations.invalidateSession(s, id: id, index: index), ())
            }
        }
        for (id, output) in checks {
            _ = try? await store.write { s, index, _ throws(APIError) in
                try Operations.updateCheck(s, index: index, id: id, status: "critical", output: output, requireTTL: false)
            }
        }
        for service in reap {
            _ = try? await store.write { s, index, _ throws(APIError) in try Operations.deregisterService(s, index: index, id: service) }
        }
        if !reap.isEmpty { reconcile() }
        // Looked at under the read lock first: most sweeps have nothing to reap and need no write.
        if (try? store.read({ $0.reapableTombstones(at: now) })) != nil {
            // ignored: a refused write (a failed disk) leaves the tombstones for the next sweep
            _ = try? await store.write { s, _, now in
                guard let upTo = s.reapableTombstones(at: now) else { return Plan([], ()) }
                return Plan([.tombstonesReaped(upTo: upTo)], ())
            }
        }
    }

    /// What a probe loop was started with: a check registered again with another target, interval or
    /// timeout (a node's service moving from `/replica` to `/primary`) gets a new loop.
    struct ProbedDefinition: Equatable {
        let kind: CheckRecord.Kind
        let interval: GoDuration?
        let timeout: GoDuration?
        init(_ check: CheckRecord) { (kind, interval, timeout) = (check.kind, check.interval, check.timeout) }
    }

    /// Starts a probe loop for every HTTP or TCP check that has none or whose definition changed, and
    /// stops those whose check is gone or changed.
    func reconcile() {
        let wanted: [String: CheckRecord] = (try? store.read { s in
            s.checks.filter { entry in
                switch entry.value.kind {
                case .http, .tcp: return true
                default: return false
                }
            }
        }) ?? [:]
        probes.withLock { running in
            for (id, loop) in running where wanted[id].map(ProbedDefinition.init) != loop.probed {
                loop.task.cancel()
                running[id] = nil
            }
            for (id, check) in wanted where running[id] == nil {
                running[id] = (ProbedDefinition(check), Task { [self] in await probeLoop(check) })
            }
        }
    }

    private func probeLoop(_ check: CheckRecord) async {
        let interval = max(check.interval ?? .seconds(10), .seconds(1)).swiftDuration
        let timeout = (check.timeout.flatMap { $0 > .zero ? $0 : nil } ?? .seconds(10)).swiftDuration
        while !Task.isCancelled {
            let (status, output) = await probe(check.kind, timeout: timeout)
            if Task.isCancelled { return }
            _ = try? await store.write { s, index, _ throws(APIError) in
                // The check may have been re-registered with another definition meanwhile.
                guard s.checks[check.id]?.kind == check.kind else { return Plan([], ()) }
                return try Operations.updateCheck(s, index: index, id: check.id, status: status, output: output, requireTTL: false)
            }
            try? await Task.sleep(for: interval)
        }
    }

    private func probe(_ kind: CheckRecord.Kind, timeout: Duration) async -> (String, String) {
        switch kind {
        case .http(let url, let method, let headers, let body, _):
            var list: [(String, String)] = []
            for (name, values) in headers { for v in values { list.append((name, v)) } }
            let request = HTTPRequest(method: method, url: url, headers: list, body: body.isEmpty ? nil : Array(body.utf8), timeout: timeout)
            do {
                let response = try await http.send(request)
                let summary = "HTTP \(method) \(url): \(response.status) Output: \(String(response.text.prefix(4096)))"
                switch response.status {
                case 200..<300: return ("passing", summary)
                case 429: return ("warning", summary)
                default: return ("critical", summary)
                }
            } catch {
                return ("critical", "Get \"\(url)\": \(error)")
            }
        case .tcp(let address):
            let ok = await Self.tcpConnect(address, timeout: timeout)
            return ok ? ("passing", "TCP connect \(address): Success") : ("critical", "dial tcp \(address): connection failed")
        default:
            return ("critical", "not a probed check")
        }
    }

    /// Whether a TCP connection to `host:port` opens within `timeout`.
    /// Whether `host:port` accepts a TCP connection (Consul's TCP check).
    static func tcpConnect(_ address: String, timeout: Duration) async -> Bool {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else { return false }
        let host = address[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return await TCPProbe.isReachable(host: host, port: port, timeout: timeout)
    }
}
