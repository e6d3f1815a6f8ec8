import ConsulAPI

/// A service registered with the agent.
package struct ServiceRecord: Sendable, Equatable {
    package var id: String
    package var name: String
    package var tags: [String]
    package var address: String
    package var port: Int
    package var meta: [(String, String)]
    package var enableTagOverride: Bool
    package var createIndex: UInt64
    package var modifyIndex: UInt64

    package init(
        id: String, name: String, tags: [String], address: String, port: Int, meta: [(String, String)], enableTagOverride: Bool,
        createIndex: UInt64, modifyIndex: UInt64
    ) {
        self.id = id
        self.name = name
        self.tags = tags
        self.address = address
        self.port = port
        self.meta = meta
        self.enableTagOverride = enableTagOverride
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    package static func == (a: ServiceRecord, b: ServiceRecord) -> Bool {
        a.id == b.id && a.name == b.name && a.tags == b.tags && a.address == b.address && a.port == b.port
            && a.meta.elementsEqual(b.meta, by: { $0 == $1 }) && a.enableTagOverride == b.enableTagOverride
            && a.createIndex == b.createIndex && a.modifyIndex == b.modifyIndex
    }
}

/// A health check: a node check (serfHealth) or one registered with the agent.
package struct CheckRecord: Sendable, Equatable {
    package enum Kind: Sendable, Equatable {
        case serf
        case ttl(GoDuration)
        case http(url: String, method: String, headers: [String: [String]], body: String, tlsSkipVerify: Bool)
        case tcp(String)
    }

    package var id: String
    package var name: String
    package var status: String
    package var notes: String
    package var output: String
    package var serviceID: String
    package var serviceName: String
    package var kind: Kind
    package var interval: GoDuration?
    package var timeout: GoDuration?
    package var deregisterCriticalServiceAfter: GoDuration?
    package var createIndex: UInt64
    package var modifyIndex: UInt64

    package init(
        id: String, name: String, status: String, notes: String, output: String, serviceID: String, serviceName: String, kind: Kind,
        interval: GoDuration?, timeout: GoDuration?, deregisterCriticalServiceAfter: GoDuration?, createIndex: UInt64, modifyIndex: UInt64
    ) {
        self.id = id
        self.name = name
        self.status = status
        self.notes = notes
        self.output = output
        self.serviceID = serviceID
        self.serviceName = serviceName
        self.kind = kind
        self.interval = interval
        self.timeout = timeout
        self.deregisterCriticalServiceAfter = deregisterCriticalServiceAfter
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    package var typeName: String {
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
package enum Change: Sendable {
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
    /// Tombstones written at or before this index are forgotten (Consul's tombstone GC).
    case tombstonesReaped(upTo: UInt64)
}

/// Everything the server knows. Mutated only through ``apply(_:index:now:)``.
package struct State: Sendable {
    package var index: UInt64 = 0
    package var kv: [String: KVPair] = [:]
    /// Deleted keys and the index of their deletion, so that a listing's index never slides back.
    package var tombstones: [String: UInt64] = [:]
    /// Every key of `kv` and `tombstones`, in order: what a listing under a prefix reads.
    private(set) var kvKeys = SortedKeys()
    /// The last KV write or delete anywhere (Consul's KV table index).
    package var kvIndex: UInt64 = 0
    package var sessions: [String: SessionEntry] = [:]
    package var sessionsIndex: UInt64 = 0
    package var services: [String: ServiceRecord] = [:]
    package var checks: [String: CheckRecord] = [:]
    /// The last change to the catalog (services or checks); per service name below.
    package var catalogIndex: UInt64 = 0
    package var serviceIndex: [String: UInt64] = [:]

    // Runtime state, not persisted.
    package var lockDelays: [String: ContinuousClock.Instant] = [:]
    /// When each session with a TTL expires unless renewed: 2×TTL after creation, renewal or start-up.
    package var sessionDeadlines: [String: ContinuousClock.Instant] = [:]
    /// When each TTL check goes critical unless updated.
    package var checkDeadlines: [String: ContinuousClock.Instant] = [:]
    /// Since when each check has been critical, for DeregisterCriticalServiceAfter.
    package var criticalSince: [String: ContinuousClock.Instant] = [:]
    /// When deletes wrote tombstones up to an index, one mark per ``tombstoneGranularity``: a tombstone
    /// is reaped ``tombstoneTTL`` after its mark (issue 23, finding 11: they were kept forever, one per
    /// pruned event). A restart marks what it loaded at the start.
    package var tombstoneMarks: [(at: ContinuousClock.Instant, index: UInt64)] = []

    /// How long a deleted key's tombstone is kept (Consul's `tombstone_ttl`, 15 minutes): long enough
    /// for every watcher of a prefix to have seen the delete.
    package static let tombstoneTTL: Duration = .seconds(15 * 60)
    package static let tombstoneGranularity: Duration = .seconds(30)

    package init() {}

    package mutating func apply(_ changes: [Change], index newIndex: UInt64, now: ContinuousClock.Instant) {
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
                if let last = tombstoneMarks.last, now - last.at < Self.tombstoneGranularity {
                    tombstoneMarks[tombstoneMarks.count - 1].index = max(last.index, newIndex)
                } else {
                    tombstoneMarks.append((now, newIndex))
                }
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
            case .tombstonesReaped(let upTo):
                for (key, deleted) in tombstones where deleted <= upTo {
                    tombstones[key] = nil
                    if kv[key] == nil { kvKeys.remove(key) }
                }
                tombstoneMarks.removeAll { $0.index <= upTo }
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

    /// This state brought back by a restore over a store whose last write had `index`: the keys, sessions
    /// and table indexes readers see go back to the snapshot's, but the next write's index comes after
    /// every index the store ever gave, as Consul's Raft index does — an index never names two writes,
    /// so a client that saw a key at some index can tell when that key went back.
    package func restored(over index: UInt64) -> State {
        var state = self
        state.index = max(self.index, index)
        return state
    }

    /// Consul's index for a listing under `prefix`: the newest entry or tombstone under it, or the KV
    /// table's index when there is none.
    package func kvListIndex(prefix: String) -> UInt64 {
        if prefix.isEmpty { return kvIndex }
        var newest: UInt64 = 0
        for key in kvKeys.withPrefix(prefix) { newest = max(newest, kv[key]?.modifyIndex ?? tombstones[key] ?? 0) }
        return newest == 0 ? kvIndex : newest
    }

    /// The pairs whose keys start with `prefix` (bytewise), in key order.
    package func kvPairs(prefix: String) -> [KVPair] { kvKeys.withPrefix(prefix).compactMap { kv[$0] } }

    /// The earliest instant a session or TTL check expires or a critical service is reaped (see
    /// ``CheckRunner``), or nil when nothing is due.
    package func nextDeadline() -> ContinuousClock.Instant? {
        var earliest = sessionDeadlines.values.min()
        func consider(_ instant: ContinuousClock.Instant) { if earliest.map({ instant < $0 }) ?? true { earliest = instant } }
        checkDeadlines.values.min().map(consider)
        for (id, since) in criticalSince {
            guard let check = checks[id], let after = check.deregisterCriticalServiceAfter, !check.serviceID.isEmpty else { continue }
            consider(since.advanced(by: Self.reapAfter(after).swiftDuration))
        }
        tombstoneMarks.first.map { consider($0.at.advanced(by: Self.tombstoneTTL)) }
        return earliest
    }

    /// The newest index whose tombstones may be forgotten at `now`, if any.
    package func reapableTombstones(at now: ContinuousClock.Instant) -> UInt64? {
        tombstoneMarks.filter { $0.at.advanced(by: Self.tombstoneTTL) <= now }.map(\.index).max()
    }

    /// Consul reaps a service critical for DeregisterCriticalServiceAfter, but never sooner than a minute.
    package static func reapAfter(_ after: GoDuration) -> GoDuration { max(after, .seconds(60)) }

    package static func ttl(of session: SessionEntry) -> GoDuration? {
        session.ttl.isEmpty ? nil : try? GoDuration(parsing: session.ttl)
    }

    /// Renews a session: its TTL counts again from `now` (Consul keeps it up to twice the TTL). Nil when
    /// there is no such session.
    package mutating func renewSession(_ id: String, now: ContinuousClock.Instant) -> SessionEntry? {
        guard let session = sessions[id] else { return nil }
        if let ttl = State.ttl(of: session), ttl > .zero {
            sessionDeadlines[id] = now.advanced(by: ttl.swiftDuration * 2)
        }
        return session
    }

    /// The sessions whose TTL ran out by `now`, in order.
    package func expiredSessions(at now: ContinuousClock.Instant) -> [String] {
        sessionDeadlines.filter { $0.value <= now }.map(\.key).sorted()
    }

    package func keysHeld(by session: String) -> [KVPair] {
        kv.values.filter { $0.session == session }.sorted { $0.key < $1.key }
    }
}
