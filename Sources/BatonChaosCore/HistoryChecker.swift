/// A write a server acknowledged, as a client or the probe recorded it.
public struct Acknowledgement: Sendable, Equatable {
    /// The row's unique id (clients), or the probe's id.
    public var id: String
    /// Which client (`vip`, `bouncer-n3`, `multihost`, `probe-n2`…).
    public var client: String
    /// When the acknowledgement arrived, in seconds since the run began (the runner's monotonic clock).
    public var at: Double
    /// The server that acknowledged it (its address) and its timeline then.
    public var server: String
    public var timeline: Int
    /// When the server ran the write (its `clock_timestamp()`, on the run's clock: the lab's servers
    /// share the runner's machine), when it said.
    public var ran: Double?

    public init(id: String, client: String, at: Double, server: String, timeline: Int, ran: Double? = nil) {
        self.id = id
        self.client = client
        self.at = at
        self.server = server
        self.timeline = timeline
        self.ran = ran
    }
}

/// A time in which two servers both acknowledged writes: the older one acknowledged one after the
/// newer had begun to.
public struct SplitBrainWindow: Sendable, Equatable {
    /// The server (and timeline) that went on acknowledging.
    public var old: String
    public var oldTimeline: Int
    /// The server (and timeline) that had already begun.
    public var new: String
    public var newTimeline: Int
    /// From the newer one's first acknowledgement to the older one's last, seconds since the run began.
    public var start: Double
    public var end: Double
    public var length: Double { end - start }
    /// How many acknowledgements the older one gave in the window.
    public var writes: Int

    public init(old: String, oldTimeline: Int, new: String, newTimeline: Int, start: Double, end: Double, writes: Int) {
        self.old = old
        self.oldTimeline = oldTimeline
        self.new = new
        self.newTimeline = newTimeline
        self.start = start
        self.end = end
        self.writes = writes
    }
}

/// The checker of a chaos run's history (pure: tested without a cluster).
public enum HistoryChecker {
    /// Every window in which two servers acknowledged writes: for each pair of (server, timeline)
    /// epochs, ordered by when each began, the earlier epoch's acknowledgements that came after the
    /// later one's first. A failover done right has none: the old primary's last acknowledgement comes
    /// before the new one's first.
    ///
    /// Except an answer that only came *late*: the old server ran the write before the new one ran its
    /// first (server-side times), and the write is in the final primary's history (`present`), so it
    /// committed before the two histories parted — a frozen server's reply, or one held up on a cut
    /// link, that arrived after the failover. Those are ``late(_:present:)``, not a window. A write
    /// without a server-side time, or missing from the final history, always counts.
    public static func splitBrainWindows(_ acknowledgements: [Acknowledgement], present: Set<String> = []) -> [SplitBrainWindow] {
        overlaps(acknowledgements, present: present).windows
    }

    /// The acknowledgements that arrived after a newer primary began but only came late (see
    /// ``splitBrainWindows(_:present:)``), each with the newer epoch it came after.
    public static func late(_ acknowledgements: [Acknowledgement], present: Set<String>) -> [(Acknowledgement, after: SplitBrainWindow)] {
        overlaps(acknowledgements, present: present).late
    }

    private static func overlaps(_ acknowledgements: [Acknowledgement], present: Set<String>)
        -> (windows: [SplitBrainWindow], late: [(Acknowledgement, after: SplitBrainWindow)])
    {
        struct Epoch: Hashable {
            var server: String
            var timeline: Int
        }
        var byEpoch: [Epoch: [Acknowledgement]] = [:]
        for a in acknowledgements { byEpoch[Epoch(server: a.server, timeline: a.timeline), default: []].append(a) }
        let epochs = byEpoch.mapValues { $0.sorted { $0.at < $1.at } }.sorted {
            ($0.value.first?.at ?? 0, $0.key.timeline) < ($1.value.first?.at ?? 0, $1.key.timeline)
        }
        var windows: [SplitBrainWindow] = []
        var late: [(Acknowledgement, after: SplitBrainWindow)] = []
        for (i, earlier) in epochs.enumerated() {
            for later in epochs[(i + 1)...] where later.key.server != earlier.key.server {
                guard let begun = later.value.first?.at else { continue }
                // When the newer server ran its first write; unknown when any of its writes lacks a time.
                let ranFirst = later.value.allSatisfy { $0.ran != nil } ? later.value.compactMap(\.ran).min() : nil
                let after = earlier.value.filter { $0.at > begun }
                let onlyLate = after.filter { a in
                    guard let ran = a.ran, let ranFirst else { return false }
                    return ran < ranFirst && present.contains(a.id)
                }
                let lateIDs = Set(onlyLate.map(\.id))
                let overlapping = after.filter { !lateIDs.contains($0.id) }
                func window(_ writes: [Acknowledgement]) -> SplitBrainWindow {
                    SplitBrainWindow(
                        old: earlier.key.server, oldTimeline: earlier.key.timeline, new: later.key.server, newTimeline: later.key.timeline,
                        start: begun, end: writes.last?.at ?? begun, writes: writes.count)
                }
                if !overlapping.isEmpty { windows.append(window(overlapping)) }
                late += onlyLate.map { ($0, after: window(onlyLate)) }
            }
        }
        return (windows.sorted { $0.start < $1.start }, late)
    }

    /// The acknowledged writes the final primary does not hold.
    public static func lost(_ acknowledgements: [Acknowledgement], present: Set<String>) -> [Acknowledgement] {
        acknowledgements.filter { !present.contains($0.id) }
    }

    /// The index of the fault under way at `time` (the last one that began at or before it), given
    /// each fault's start in seconds since the run began.
    public static func fault(at time: Double, starts: [Double]) -> Int? {
        starts.lastIndex { $0 <= time }
    }
}
