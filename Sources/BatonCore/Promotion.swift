import ConsulAPI

/// Promoting the local standby once this node holds the lock, as steps the shell carries out and
/// answers (the live monitor and the simulator run the same machine): in synchronous mode the standby
/// made to wait for a synchronous standby first (no commit is acknowledged on the new primary alone),
/// then a timeline above every one used before claimed in Consul in one transaction with the lock
/// checked and the synchronous record rewritten (``PromotionClaim``), the lock proven right before
/// PostgreSQL becomes writable, and only then the promotion. A claim that does not commit or a lock that
/// cannot be proven abandons the promotion: PostgreSQL stays a standby.
public struct Promotion: Sendable {
    public let keys: ClusterKeys
    public let node: NodeName
    public let synchronousMode: SynchronousMode
    private var phase = Phase.starting

    private enum Phase { case starting, requiringSynchronous, readingClaim, claiming(Int), proving(Int), promoting(Int), done }

    public init(keys: ClusterKeys, node: NodeName, synchronousMode: SynchronousMode) {
        self.keys = keys
        self.node = node
        self.synchronousMode = synchronousMode
    }

    /// What the shell carries out next, then reports with ``Event``.
    public enum Step: Sendable, Equatable {
        /// Synchronous mode: `synchronous_standby_names = '*'` and a reload, so that from its first
        /// commit on the new primary waits for some standby: ``Event/synchronousRequired``.
        case requireSynchronousCommits
        /// Read what the claim needs: the newest timeline this data directory knows, the timeline key
        /// and — when `synchronous` — the sync key (consistent reads), and the lease's session:
        /// ``Event/claimRead(localNewest:timelineKey:syncKey:session:)``.
        case readClaim(synchronous: Bool)
        /// Write the claim's placeholder history files (timelines used elsewhere, skipped), then commit
        /// `operations` as one transaction: ``Event/claimCommitted(_:)``.
        case commitClaim(TimelineClaim, operations: [KVOperation])
        /// Prove the lock once more (a heartbeat that gets through): ``Event/proven(_:)``.
        case proveLock
        /// Promote PostgreSQL (a long replay may take a while; the lease beats on its own):
        /// ``Event/promoted``.
        case promote
        /// The promotion is over.
        case done(Outcome)
    }

    /// What happened to the last ``Step``.
    public enum Event: Sendable, Equatable {
        case start
        case synchronousRequired
        case claimRead(localNewest: Int, timelineKey: KVPair?, syncKey: KVPair?, session: String?)
        case claimCommitted(Bool)
        case proven(Bool)
        case promoted
    }

    public enum Outcome: Sendable, Equatable {
        /// A writable primary on `timeline`: the shell tells keepalived, registers it as the primary and
        /// does the leader's duties at once.
        case promoted(timeline: Int)
        /// Not now (it stays a standby); why, for the operator.
        case abandoned(String)
    }

    /// The next step after `event`.
    public mutating func next(after event: Event) -> Step {
        switch (phase, event) {
        case (.starting, .start):
            if synchronousMode != .off {
                phase = .requiringSynchronous
                return .requireSynchronousCommits
            }
            phase = .readingClaim
            return .readClaim(synchronous: false)
        case (.requiringSynchronous, .synchronousRequired):
            phase = .readingClaim
            return .readClaim(synchronous: true)
        case (.readingClaim, .claimRead(let localNewest, let timelineKey, let syncKey, let session)):
            let claimed: Int?
            do { claimed = try TimelineClaim.claimed(timelineKey?.value, key: keys.timeline) } catch {
                return abandon("the timeline key does not parse (\(error.message)); not promoting")
            }
            guard let session else { return abandon("this node has no session; not promoting now") }
            let claim = TimelineClaim(localNewest: localNewest, claimed: claimed)
            var synchronous: (index: UInt64, recorded: SyncRecord?)? = nil
            if synchronousMode != .off {
                // A record that does not parse names nobody this node could rely on: it is replaced.
                synchronous = (syncKey?.modifyIndex ?? 0, (try? SyncRecord.parse(syncKey?.value, key: keys.sync)) ?? nil)
            }
            let operations = PromotionClaim.operations(
                keys: keys, node: node, session: session, timeline: claim.timeline, timelineIndex: timelineKey?.modifyIndex ?? 0,
                synchronous: synchronous)
            phase = .claiming(claim.timeline)
            return .commitClaim(claim, operations: operations)
        case (.claiming(let timeline), .claimCommitted(let committed)):
            guard committed else {
                return abandon("the lock, the timeline or the synchronous standby record changed while this node claimed timeline \(timeline); not promoting now")
            }
            phase = .proving(timeline)
            return .proveLock
        case (.proving(let timeline), .proven(let ok)):
            guard ok else { return abandon("the leader lock could not be proven right before promotion; not promoting") }
            phase = .promoting(timeline)
            return .promote
        case (.promoting(let timeline), .promoted):
            phase = .done
            return .done(.promoted(timeline: timeline))
        default:
            preconditionFailure("Promotion: \(event) does not answer the step of phase \(phase)")
        }
    }

    private mutating func abandon(_ reason: String) -> Step {
        phase = .done
        return .done(.abandoned(reason))
    }
}
