import ConsulAPI

/// A service registered with the agent.
struct ServiceRecord: Sendable, Equatable {
    var id: String
    var name: String
    var tags: [String]
    var address: String
    var port: Int
    var meta: [(String, String)]
    var enableTagOverride: Bool
    var createIndex: UInt64
    var modifyIndex: UInt64

    static func == (a: ServiceRecord, b: ServiceRecord) -> Bool {
        a.id == b.id && a.name == b.name && a.tags == b.tags && a.address == b.address && a.port == b.port
            && a.meta.elementsEqual(b.meta, by: { $0 == $1 }) && a.enableTagOverride == b.enableTagOverride
            && a.createIndex == b.createIndex && a.modifyIndex == b.modifyIndex
    }
}

/// A health check: a node check (serfHealth) or one registered with the agent.
struct CheckRecord: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case serf
        case ttl(GoDuration)
        case http(url: String, method: String, headers: [String: [String]], body: String, tlsSkipVerify: Bool)
        case tcp(String)
    }

    var id: String
    var name: String
    var status: String
    var notes: String
    var output: String
    var serviceID: String
    var serviceName: String
    var kind: Kind
    var interval: GoDuration?
    var timeout: GoDuration?
    var deregisterCriticalServiceAfter: GoDuration?
    var createIndex: UInt64
    var modifyIndex: UInt64

    var typeName: String {
        switch kind {
        case .serf: return ""
        case .ttl: return "ttl"
        case .http: return "http"
        case .tcp: return "tcp"
        }
    }
}

/// One effect of a write. A write is a list of changes that share one index; the same `apply` serves
/// the live server and the replay of its log, so what is replayed is exactly what was served.
enum Change: Sendable {
    case kvPut(KVPair)
    case kvDelete(key: String)
    case sessionPut(SessionEntry)
    case sessionDelete(id: String)
    case servicePut(ServiceRecord)
    case serviceDelete(id: String)
    case checkPut(CheckRecord)
    case checkDelete(id: String)
    /// Arms lock-delay on a key; runtime only (Consul does not persist lock-delay either).
    case lockDelay(key: String, GoDuration)
}

/// Everything the server knows. Mutated only through ``apply(_:index:now:)``.
struct State: Sendable {
    var index: UInt64 = 0
    var kv: [String: KVPair] = [:]
    /// Deleted keys and the index of their deletion, so that a listing's index never slides back.
    var tombstones: [String: UInt64] = [:]
    /// Every key of `kv` and `tombstones`, in order: what a listing under a prefix reads.
    private(set) var kvKeys = SortedKeys()
    /// The last KV write or delete anywhere (Consul's KV table index).
    var kvIndex: UInt64 = 0
    var sessions: [String: SessionEntry] = [:]
    var sessionsIndex: UInt64 = 0
    var services: [String: ServiceRecord] = [:]
    var checks: [String: CheckRecord] = [:]
    /// The last change to the catalog (services or checks); per service name below.
    var catalogIndex: UInt64 = 0
    var serviceIndex: [String: UInt64] = [:]

    // Runtime state, not persisted.
    var lockDelays: [String: ContinuousClock.Instant] = [:]
    /// When each session with a TTL expires unless renewed: 2×TTL after creation, renewal or start-up.
    var sessionDeadlines: [String: ContinuousClock.Instant] = [:]
    /// When each TTL check goes critical unless updated.
    var checkDeadlines: [String: ContinuousClock.Instant] = [:]
    /// Since when each check has been critical, for DeregisterCriticalServiceAfter.
    var criticalSince: [String: ContinuousClock.Instant] = [:]

    mutating func apply(_ changes: [Change], index newIndex: UInt64, now: ContinuousClock.Instant) {
        index = max(index, newIndex)
        for change in changes {
            switch change {
            case .kvPut(let pair):
                // Swift's dictionaries take canonically equivalent keys as one: the listing index holds
                // the form they first saw, once.
                if kv[pair.key] == nil && tombstones[pair.key] == nil { kvKeys.insert(pair.key) }
                kv[pair.key] = pair
                tombstones[pair.key] = nil
                kvIndex = max(kvIndex, newIndex)
            case .kvDelete(let key):
                if kv[key] == nil && tombstones[key] == nil { kvKeys.insert(key) }
                kv[key] = nil
                tombstones[key] = newIndex
                kvIndex = max(kvIndex, newIndex)
            case .sessionPut(let session):
                sessions[session.id] = session
                sessionsIndex = max(sessionsIndex, newIndex)
                if let ttl = State.ttl(of: session), ttl > .zero {
                    sessionDeadlines[session.id] = now.advanced(by: ttl.swiftDuration * 2)
                }
            case .sessionDelete(let id):
                sessions[id] = nil
                sessionDeadlines[id] = nil
                sessionsIndex = max(sessionsIndex, newIndex)
            case .servicePut(let service):
                services[service.id] = service
                touchService(service.name, newIndex)
            case .serviceDelete(let id):
                if let old = services.removeValue(forKey: id) { touchService(old.name, newIndex) }
            case .checkPut(let check):
                let previous = checks[check.id]
                checks[check.id] = check
                touchService(check.serviceName, newIndex)
                if case .ttl(let ttl) = check.kind, previous == nil || previous?.output != check.output || previous?.status != check.status {
                    checkDeadlines[check.id] = now.advanced(by: ttl.swiftDuration)
                }
                if check.status == "critical" {
                    if criticalSince[check.id] == nil { criticalSince[check.id] = now }
                } else {
                    criticalSince[check.id] = nil
                }
            case .checkDelete(let id):
                if let old = checks.removeValue(forKey: id) { touchService(old.serviceName, newIndex) }
                checkDeadlines[id] = nil
                criticalSince[id] = nil
            case .lockDelay(let key, let delay):
                lockDelays[key] = now.advanced(by: delay.swiftDuration)
            }
        }
    }

    private mutating func touchService(_ name: String, _ index: UInt64) {
        catalogIndex = max(catalogIndex, index)
        if name.isEmpty {
            // A node check bears on every service of the node.
            for key in serviceIndex.keys { serviceIndex[key] = index }
            for service in services.values { serviceIndex[service.name] = index }
        } else {
            serviceIndex[name] = index
        }
    }

    /// Consul's index for a listing under `prefix`: the newest entry or tombstone under it, or the KV
    /// table's index when there is none.
    func kvListIndex(prefix: String) -> UInt64 {
        if prefix.isEmpty { return kvIndex }
        var newest: UInt64 = 0
        for key in kvKeys.withPrefix(prefix) { newest = max(newest, kv[key]?.modifyIndex ?? tombstones[key] ?? 0) }
        return newest == 0 ? kvIndex : newest
    }

    /// The pairs whose keys start with `prefix` (bytewise), in key order.
    func kvPairs(prefix: String) -> [KVPair] { kvKeys.withPrefix(prefix).compactMap { kv[$0] } }

    /// The earliest instant a session or TTL check expires or a critical service is reaped (see
    /// ``CheckRunner``), or nil when nothing is due.
    func nextDeadline() -> ContinuousClock.Instant? {
        var earliest = sessionDeadlines.values.min()
        func consider(_ instant: ContinuousClock.Instant) { if earliest.map({ instant < $0 }) ?? true { earliest = instant } }
        checkDeadlines.values.min().map(consider)
        for (id, since) in criticalSince {
            guard let check = checks[id], let after = check.deregisterCriticalServiceAfter, !check.serviceID.isEmpty else { continue }
            consider(since.advanced(by: Self.reapAfter(after).swiftDuration))
        }
        return earliest
    }

    /// Consul reaps a service critical for DeregisterCriticalServiceAfter, but never sooner than a minute.
    static func reapAfter(_ after: GoDuration) -> GoDuration { max(after, .seconds(60)) }

    static func ttl(of session: SessionEntry) -> GoDuration? {
        session.ttl.isEmpty ? nil : try? GoDuration(parsing: session.ttl)
    }

    func keysHeld(by session: String) -> [KVPair] {
        kv.values.filter { $0.session == session }.sorted { $0.key < $1.key }
    }
}
