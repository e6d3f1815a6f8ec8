import BatonFence
import BatonSettings
import Foundation
import Logging
import Synchronization

/// Writes the files the lease publishes — the state `baton check` judges, the files keepalived tracks —
/// on a queue of their own, never inside a heartbeat: on ext4 a rename over an existing file flushes its
/// data first (auto_da_alloc) and so waits for the journal, which takes seconds on a loaded disk (seen in
/// CI: beats that stalled 1.4–2.2 s in the write of the state file). The latest text for a path wins;
/// one that was not written yet is replaced, not queued behind.
final class BackgroundFileWriter: Sendable {
    private struct Entry: Sendable {
        var text: String
        var mode: mode_t
        var durable: Bool
        var validUntil: UInt64?
    }

    private let queue = DispatchQueue(label: "baton.lease-files")
    private let pending = Mutex<[String: Entry]>([:])
    /// Paths whose last text was not written (its time ran out), until ``takeSkipped()``.
    private let skipped = Mutex<Set<String>>([])
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// Writes `text` to `path` soon (``AtomicFile/write(_:to:mode:owner:durable:)``) — not at all once
    /// CLOCK_MONOTONIC reached `validUntil`: a file that says this node leads must not land after its
    /// lease ran out (the watchdog writes FAULT into it when it fences; the next text is written anyway).
    /// A failure is logged with `what`.
    func write(_ text: String, to path: String, mode: mode_t, durable: Bool = true, validUntil: UInt64? = nil, what: String) {
        let queued = pending.withLock { pending in
            defer { pending[path] = Entry(text: text, mode: mode, durable: durable, validUntil: validUntil) }
            return pending[path] != nil
        }
        guard !queued else { return }
        queue.async { [self] in
            guard let entry = pending.withLock({ $0.removeValue(forKey: path) }) else { return }
            if let validUntil = entry.validUntil, MonotonicClock.nanoseconds() >= validUntil {
                skipped.withLock { _ = $0.insert(path) }
                return
            }
            do { try AtomicFile.write(entry.text, to: path, mode: entry.mode, durable: entry.durable) } catch {
                logger.warning("Cannot write \(what)", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The paths whose last text was not written since the last call: the caller writes them again.
    func takeSkipped() -> Set<String> { skipped.withLock { skipped in defer { skipped = [] }; return skipped } }

    /// Returns once every write asked for so far was carried out (the monitor stops: its last state
    /// must be on disk before the process exits).
    func flush() { queue.sync {} }
}
