import BatonCore
import Synchronization

/// Whether a silent leader's PostgreSQL still takes writes, asked in the background a moment before
/// this node may take over (``MonitorState/silentLeaderAsk(node:config:grant:at:)``): a leader whose
/// monitor and watchdog were killed together runs a writable primary nobody fences, and taking over
/// would make two. Asked once per silence (the leader and the key index it went silent at).
final class SilentLeaderProbe: Sendable {
    private struct Asked {
        var holder: NodeName
        var index: UInt64
        /// Nil while the question is out.
        var writable: Bool?
    }

    private let asked = Mutex<Asked?>(nil)

    /// Whether this silence's question is still to be asked (true once: the caller asks it).
    func begin(_ holder: NodeName, index: UInt64) -> Bool {
        asked.withLock { current in
            if let current, current.holder == holder, current.index == index { return false }
            current = Asked(holder: holder, index: index, writable: nil)
            return true
        }
    }

    func finish(_ holder: NodeName, index: UInt64, writable: Bool) {
        asked.withLock { current in
            if current?.holder == holder, current?.index == index { current?.writable = writable }
        }
    }

    /// What the leader's PostgreSQL answered for this silence; nil when it was not asked or the answer
    /// is not in yet (the takeover asks again at once). A writable answer is used once: a watchdog that
    /// fences late (a loaded machine) has stopped it by the next loop, which asks again.
    func take(_ holder: NodeName, index: UInt64) -> Bool? {
        asked.withLock { current in
            guard current?.holder == holder, current?.index == index else { return nil }
            let answer = current?.writable
            if answer == true { current?.writable = nil }
            return answer
        }
    }
}
