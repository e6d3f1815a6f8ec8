import Synchronization

/// The daemon's last log lines, as written, for `GET /report` (`baton report`): a bounded ring, the
/// oldest dropped first.
public final class RecentLogLines: Sendable {
    private let lines: Mutex<(ring: [String], next: Int)>
    public let capacity: Int

    public init(capacity: Int = 500) {
        self.capacity = max(1, capacity)
        lines = Mutex(([], 0))
    }

    public func append(_ line: String) {
        lines.withLock { l in
            if l.ring.count < capacity {
                l.ring.append(line)
            } else {
                l.ring[l.next] = line
                l.next = (l.next + 1) % capacity
            }
        }
    }

    /// Oldest first.
    public var all: [String] { lines.withLock { l in Array(l.ring[l.next...] + l.ring[..<l.next]) } }
}
