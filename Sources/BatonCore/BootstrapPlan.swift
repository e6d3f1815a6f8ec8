/// What a data directory holds, as seen before Baton touches it.
public struct DataDirectoryState: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Missing or empty: free to initialise or clone into.
        case empty
        /// Holds files but no PostgreSQL cluster.
        case notPostgres
        /// A PostgreSQL cluster, with its system identifier; `standby` when it has standby.signal.
        case cluster(systemIdentifier: String, standby: Bool)
    }
    public var kind: Kind
    public init(kind: Kind) { self.kind = kind }
}

/// Everything a bootstrap looks at before it acts.
public struct BootstrapObservation: Sendable, Equatable {
    public var node: NodeName
    public var cluster: ClusterName
    public var creating: Bool
    /// The cluster's `initialize` key.
    public var claim: ClusterClaim?
    public var dataDirectory: DataDirectoryState
    public var postgresRunning: Bool
    /// The registered primary (for a join).
    public var primary: NodeRegistration?
    public var forceClone: Bool
    public var keepalivedWanted: Bool
    /// Backups with pgBackRest were asked for (`--backup pgbackrest`).
    public var backupWanted: Bool

    public init(
        node: NodeName, cluster: ClusterName, creating: Bool, claim: ClusterClaim?, dataDirectory: DataDirectoryState, postgresRunning: Bool,
        primary: NodeRegistration?, forceClone: Bool, keepalivedWanted: Bool, backupWanted: Bool = false
    ) {
        self.backupWanted = backupWanted
        self.node = node
        self.cluster = cluster
        self.creating = creating
        self.claim = claim
        self.dataDirectory = dataDirectory
        self.postgresRunning = postgresRunning
        self.primary = primary
        self.forceClone = forceClone
        self.keepalivedWanted = keepalivedWanted
    }
}

/// One step of a bootstrap. Every step is idempotent: a rerun repeats it without harm, and the
/// shell reports whether it changed anything.
public enum BootstrapStep: Sendable, Equatable, CustomStringConvertible {
    case claimCluster
    case initdb
    case adopt(systemIdentifier: String)
    case moveDataDirectoryAside
    case clone(from: NodeName)
    case reuseStandby(systemIdentifier: String)
    case configureBackup
    case configurePostgres(standbyOf: NodeName?)
    case startPostgres
    case createBackupStanza
    case reloadPostgres
    case ensureReplicationRole
    case recordSystemIdentifier
    case waitForStreaming(from: NodeName)
    case allocatePriority
    case register(role: NodeRole, upstream: NodeName?)
    case writeKeepalived(initialState: String)
    case skipKeepalived
    case writePgBouncer(target: NodeName)
    case writeNodeConfig
    case configureConsulAgent
    case startConsulAgent

    public var description: String {
        switch self {
        case .claimCluster: return "claim the cluster: write its initialize key with cas=0"
        case .initdb: return "initialise PostgreSQL (initdb with data checksums)"
        case .adopt(let id): return "adopt the existing primary data directory (system identifier \(id))"
        case .moveDataDirectoryAside: return "move the existing data directory aside (--force-clone; nothing is deleted)"
        case .clone(let primary):
            return "clone \(primary): pg_basebackup (WAL streamed), or a restore from the pgBackRest repository (--clone-from); replication slot on the primary"
        case .reuseStandby(let id): return "reuse the existing standby data directory of this cluster (system identifier \(id))"
        case .configurePostgres(let upstream):
            return "write baton.conf, pg_hba.conf and pg_ident.conf blocks and the replication passfile"
                + (upstream.map { " (standby of \($0))" } ?? "")
        case .configureBackup: return "write pgBackRest's configuration and create its repository and working directories"
        case .createBackupStanza: return "create the pgBackRest stanza (named after the cluster) and check that archiving reaches the repository"
        case .startPostgres: return "start PostgreSQL"
        case .reloadPostgres: return "reload PostgreSQL's configuration"
        case .ensureReplicationRole: return "create or update the replication role (scram-sha-256)"
        case .recordSystemIdentifier: return "record the system identifier in the initialize key"
        case .waitForStreaming(let primary): return "wait until this standby streams from \(primary) (pg_stat_wal_receiver)"
        case .allocatePriority: return "take a keepalived priority in keepalived/nodes (check-and-set)"
        case .register(let role, let upstream):
            return "register nodes/<name> as \(role.rawValue)" + (upstream.map { " with upstream \($0)" } ?? "")
        case .writeKeepalived(let state): return "write keepalived.conf (\(state))"
        case .skipKeepalived: return "skip keepalived.conf (no --virtual-ip)"
        case .writePgBouncer(let target): return "write pgbouncer.ini targeting \(target)"
        case .writeNodeConfig: return "write this node's Baton config (what monitor and the keepalived hooks read)"
        case .configureConsulAgent: return "write the Consul agent configuration and its gossip key"
        case .startConsulAgent: return "start the Consul agent"
        }
    }
}

/// Decides what a bootstrap does, from what it observed. Pure: no I/O.
public enum BootstrapPlanner {
    /// The steps to create (`observation.creating`) or join the cluster.
    /// - Throws: a ``ValidationProblem`` saying why bootstrap must not go on and what to do instead;
    ///   nothing has been changed at that point.
    public static func plan(_ o: BootstrapObservation) throws(ValidationProblem) -> [BootstrapStep] {
        o.creating ? try planMaster(o) : try planJoin(o)
    }

    static func planMaster(_ o: BootstrapObservation) throws(ValidationProblem) -> [BootstrapStep] {
        var steps: [BootstrapStep] = []
        if let claim = o.claim {
            guard claim.node == o.node else {
                throw ValidationProblem(
                    "cluster \(o.cluster) was already created by node \(claim.node); nothing was changed. To add this node, run `baton bootstrap --join <a Consul address of the cluster>`")
            }
        } else {
            steps.append(.claimCluster)
        }
        switch o.dataDirectory.kind {
        case .empty:
            steps.append(.initdb)
        case .notPostgres:
            throw ValidationProblem("the data directory holds files that are not a PostgreSQL cluster; empty it or choose another --pgdata")
        case .cluster(let id, let standby):
            if standby {
                throw ValidationProblem(
                    "the data directory holds a standby (standby.signal); a new cluster needs a primary. Remove standby.signal only if you are sure it should become the primary")
            }
            if let recorded = o.claim?.systemIdentifier, recorded != id {
                throw ValidationProblem(
                    "the data directory belongs to another cluster (system identifier \(id), the cluster's is \(recorded)); choose the right --pgdata")
            }
            if o.claim?.systemIdentifier == nil { steps.append(.adopt(systemIdentifier: id)) }
        }
        if o.backupWanted { steps.append(.configureBackup) }
        steps.append(.configurePostgres(standbyOf: nil))
        steps.append(o.postgresRunning ? .reloadPostgres : .startPostgres)
        steps.append(.ensureReplicationRole)
        if o.backupWanted { steps.append(.createBackupStanza) }
        steps.append(.recordSystemIdentifier)
        steps.append(.allocatePriority)
        steps.append(.register(role: .primary, upstream: nil))
        steps.append(o.keepalivedWanted ? .writeKeepalived(initialState: "MASTER") : .skipKeepalived)
        steps.append(.writePgBouncer(target: o.node))
        steps.append(.writeNodeConfig)
        return steps
    }

    static func planJoin(_ o: BootstrapObservation) throws(ValidationProblem) -> [BootstrapStep] {
        guard let claim = o.claim else {
            throw ValidationProblem("Consul holds no cluster \(o.cluster): bootstrap the first node with `baton bootstrap --master`")
        }
        guard claim.node != o.node else {
            throw ValidationProblem("this node (\(o.node)) created cluster \(o.cluster); rerun `baton bootstrap --master` on it instead")
        }
        guard let clusterID = claim.systemIdentifier else {
            throw ValidationProblem("node \(claim.node) is still creating cluster \(o.cluster) (no system identifier yet); retry when its bootstrap has finished")
        }
        guard let primary = o.primary else {
            throw ValidationProblem("no primary is registered for cluster \(o.cluster); finish `baton bootstrap --master` on \(claim.node) first")
        }
        guard primary.name != o.node else {
            throw ValidationProblem("this node (\(o.node)) is registered as the primary of cluster \(o.cluster); it cannot join as a standby")
        }
        var steps: [BootstrapStep] = [.allocatePriority]
        // pgBackRest's configuration first: a clone may restore from the repository.
        if o.backupWanted { steps.append(.configureBackup) }
        switch o.dataDirectory.kind {
        case .empty:
            steps.append(.clone(from: primary.name))
        case .cluster(let id, true) where id == clusterID:
            steps.append(.reuseStandby(systemIdentifier: id))
        case .cluster(let id, _):
            guard o.forceClone else {
                let what = id == clusterID ? "a primary of this cluster, not a standby" : "a cluster with system identifier \(id), not \(clusterID)"
                throw ValidationProblem(
                    "the data directory holds \(what); refusing to overwrite it. Use --force-clone to move it aside (it is never deleted) and clone afresh")
            }
            steps += [.moveDataDirectoryAside, .clone(from: primary.name)]
        case .notPostgres:
            guard o.forceClone else {
                throw ValidationProblem(
                    "the data directory holds files that are not a PostgreSQL cluster; refusing to overwrite them. Use --force-clone to move them aside, or choose another --pgdata")
            }
            steps += [.moveDataDirectoryAside, .clone(from: primary.name)]
        }
        steps.append(.configurePostgres(standbyOf: primary.name))
        steps.append(o.postgresRunning ? .reloadPostgres : .startPostgres)
        steps.append(.waitForStreaming(from: primary.name))
        steps.append(.register(role: .standby, upstream: primary.name))
        steps.append(o.keepalivedWanted ? .writeKeepalived(initialState: "BACKUP") : .skipKeepalived)
        steps.append(.writePgBouncer(target: primary.name))
        steps.append(.writeNodeConfig)
        return steps
    }
}
