import BatonCore

/// A node's PostgreSQL as the simulator plays it: a write-ahead log of commits (each a unique number,
/// so that two histories are compared by one element), a timeline, whether it runs, answers and is in
/// recovery, where it streams from. Only what Baton observes or changes is modelled — positions, roles,
/// start and recovery times, promotion, pg_rewind, `synchronous_standby_names` — and what the invariants
/// judge: which commits each node has.
struct SimDatabase: Sendable {
    /// WAL bytes one simulated commit takes (the workload's 10 commits a second write 320 kB/s).
    static let bytesPerCommit: UInt64 = 32_768
    /// How long a started postmaster takes to answer (a standby's start, crash recovery).
    static let startTime: Duration = .milliseconds(400)

    var running = false
    /// `standby.signal` in the data directory: it starts (and stays) in recovery.
    var standbySignal: Bool
    /// Until when a running postmaster does not answer yet (starting, recovering).
    var answersFrom: Duration = .zero
    /// The commits in WAL order.
    var wal: [UInt64] = []
    var timeline = 1
    /// The node its `primary_conninfo` names.
    var upstream: NodeName?
    /// The WAL receiver is stopped (SIGSTOP): it still says it streams, and receives nothing.
    var receiverFrozen = false
    /// The WAL receiver was killed and reconnects then (`wal_retrieve_retry_interval` after its last
    /// death): until then the standby does not stream, and a primary waiting for it acknowledges nothing.
    var receiverDownUntil: Duration = .zero
    var synchronousStandbyNames = ""
    /// Commits made on this primary that wait for their acknowledgement, with their place in its
    /// history; their backends die with the postmaster.
    var pending: [(commit: UInt64, index: Int)] = []

    init(standby: Bool) { standbySignal = standby }

    var position: LSN { LSN(UInt64(wal.count) * Self.bytesPerCommit) }
    /// How far WAL was received while in recovery before a promotion (PostgreSQL keeps answering it
    /// after the promotion, until the next start).
    var receivedBeforePromotion: LSN?
    /// `pg_last_wal_receive_lsn()`: a standby's position; a promoted primary's position at its
    /// promotion; nothing on a primary started as one.
    var lastReceived: LSN? { standbySignal ? position : receivedBeforePromotion }

    func answers(at now: Duration) -> Bool { running && now >= answersFrom }

    /// A writable primary: running, answering, out of recovery.
    func writable(at now: Duration) -> Bool { answers(at: now) && !standbySignal }

    /// Whether `other`'s history contains all of this one's (this node can stream from it).
    func isPrefix(of other: SimDatabase) -> Bool {
        guard let last = wal.last else { return true }
        return wal.count <= other.wal.count && other.wal[wal.count - 1] == last
    }

    /// How many commits this history shares with `other` from the start.
    func commonPrefix(with other: SimDatabase) -> Int {
        var low = 0
        var high = min(wal.count, other.wal.count)
        // Histories share a prefix and then differ for good: binary search for its end.
        while low < high {
            let mid = (low + high + 1) / 2
            if wal[mid - 1] == other.wal[mid - 1] { low = mid } else { high = mid - 1 }
        }
        return low
    }

    func contains(_ commit: UInt64, at index: Int) -> Bool { index < wal.count && wal[index] == commit }

    mutating func launch(at now: Duration) {
        running = true
        receivedBeforePromotion = nil
        answersFrom = now + Self.startTime
    }

    /// kill -9 of the postmaster, a fence, a clean stop: nothing of it runs.
    mutating func stop() {
        running = false
        pending = []
    }
}
