import BatonCore
import BatonFence
import CMalloc
import Glibc
import Logging
import ServiceLifecycle

/// Keeps a daemon's resident code to what it runs. Executables and libraries are mapped whole, and a
/// page once touched stays mapped (with the kernel's fault-around, the 64 kB around it): a daemon that
/// runs a small part of a large static executable — start-up, option parsing, one-off paths — keeps tens
/// of MB mapped that it never runs again. A while after start, and then every `interval`, this drops
/// the pages mapped so far (MADV_DONTNEED) from the read-only file mappings; what runs is mapped again
/// from the page cache, where every page stays, shared with other processes. Only read-only private
/// file mappings holding no page of their own are touched (`FileMapping.mayBeDropped`), so nothing
/// written or relocated is ever lost. It also hands malloc's freed memory back to the system.
public struct ResidentCodeTrimmer: Service {
    let firstAfter: Duration
    let interval: Duration
    let logger: Logger

    public init(firstAfter: Duration = .seconds(20), every interval: Duration = .seconds(60), logger: Logger) {
        self.firstAfter = firstAfter
        self.interval = interval
        self.logger = logger
    }

    public func run() async {
        var delay = firstAfter
        while !Task.isCancelled {
            do {
                let wait = delay
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
            } catch {
                return  // stopping: nothing to finish
            }
            let (mappings, droppedKB) = Self.trim()
            logger.debug("Dropped resident code pages", metadata: ["memory.mappings": "\(mappings)", "memory.dropped_kb": "\(droppedKB)"])
            delay = interval
        }
    }

    /// Drops this process's pages of every mapping that may be dropped; returns how many mappings and kB.
    @discardableResult
    public static func trim() -> (mappings: Int, droppedKB: Int) {
        // Heap memory freed since (a burst of requests, a failover) goes back to the system too; malloc
        // keeps it otherwise, in every thread's arena.
        malloc_trim(0)
        guard let smaps = SmallFile.read("/proc/self/smaps") else { return (0, 0) }
        var count = 0, dropped = 0
        for mapping in FileMapping.parse(smaps: smaps) where mapping.mayBeDropped {
            guard let address = UnsafeMutableRawPointer(bitPattern: mapping.start) else { continue }
            let length = Int(mapping.end - mapping.start)
            // Failing (a mapping that changed since smaps was read) leaves it as it was: the process
            // only keeps more resident, the state before the call.
            guard madvise(address, length, MADV_DONTNEED) == 0 else { continue }
            count += 1
            dropped += mapping.residentKB
        }
        return (count, dropped)
    }
}
