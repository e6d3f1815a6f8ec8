/// What the monitor tells keepalived about this node, through the files keepalived tracks (inotify).
///
/// The VIP leads clients to the pgbouncer (and PostgreSQL) of the node that holds it. Every pgbouncer
/// routes to the leader, so a node where no PostgreSQL runs at all takes no write and serves no stale
/// read: it may keep the address while no node leads, and clients that reach it wait in its pgbouncer
/// for the new leader instead of sending connection attempts into the void (a lost SYN costs a client a
/// second). The leader's full priority takes the address over from it the moment it leads.
public enum VRRPStanding: Sendable, Equatable {
    /// This node holds the leader lock with a writable primary and a live lease: its full priority.
    case leading
    /// The old primary whose PostgreSQL died while its lease was live: no process of it runs, and its
    /// monitor (alive, acting) starts none without first saying ``barred``. The lowest priority, below
    /// every leader's. (Whether a node may be vacant is the lease's to say: see `Lease`.)
    case vacant
    /// Anything else — a standby, a PostgreSQL starting or being fenced, a primary without the lock:
    /// keepalived's FAULT state, the address off.
    case barred
    /// `vip_policy: priority`: every node whose monitor runs may hold the address at its own keepalived
    /// priority, the leader no more than the others — its pgbouncer routes to whichever node leads, so
    /// a failover or switchover does not move the address. (keepalived's check still takes a node whose
    /// monitor died or hangs to FAULT.)
    case routing

    public init(leadingWritable: Bool, vacant: Bool) {
        self = leadingWritable ? .leading : vacant ? .vacant : .barred
    }

    /// The standing under `policy`.
    public init(policy: VIPPolicy, leadingWritable: Bool, vacant: Bool) {
        switch policy {
        case .primary: self.init(leadingWritable: leadingWritable, vacant: vacant)
        case .priority: self = .routing
        }
    }

    /// The content of the file keepalived.conf tracks with weight 1 (``KeepalivedSettings/trackFilePath(stateDirectory:)``):
    /// added to the node's priority, and below -253 the instance's FAULT state. -253 takes any priority
    /// Baton allocates (10–200) to keepalived's floor of 1.
    public var trackFileText: String {
        switch self {
        case .leading: return "0\n"
        case .vacant: return "-253\n"
        case .barred: return "\(Self.faultValue)\n"
        case .routing: return "\(Self.routingValue)\n"
        }
    }

    /// What ``routing`` writes: every node's priority one lower, their order kept, and not 0 — the
    /// check script (``CheckState/besideTrackFile(_:trackFiles:now:boot:)``) holds a node whose file
    /// says 0 to a leader's full verdict.
    public static let routingValue = -1

    /// The value that keeps keepalived in FAULT (what the watchdog writes when it fences).
    public static let faultValue = -254

    /// The content of the file a keepalived.conf from an earlier Baton tracks with weight 0
    /// (``KeepalivedSettings/legacyTrackFilePath(stateDirectory:)``, kept up to date until bootstrap is
    /// rerun): 0 leads, anything else is FAULT. It knows no vacant node.
    /// It knows no other policy than `primary`: the monitor writes it the standing that policy gives.
    public var legacyTrackFileText: String { self == .leading ? "0\n" : "1\n" }

    /// Whether a tracked file's content says this node leads (0 in either file).
    public static func saysLeading(_ text: String?) -> Bool { text?.filter { !$0.isWhitespace } == "0" }
}
