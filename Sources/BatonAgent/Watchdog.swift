import BatonPostgres
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The monitor's side of the fencing watchdog: a separate process (`baton watchdog`) that stops the
/// local PostgreSQL if the monitor stops renewing while it leads — also when the monitor is killed
/// with SIGKILL or hangs. After every successful renewal the monitor sends the deadline by which the
/// next must come (CLOCK_MONOTONIC, shared by all processes); when it passes, or when the pipe closes
/// with a deadline pending, the watchdog runs `pg_ctl stop -m immediate`.
public final class Watchdog: @unchecked Sendable {
    // @unchecked: `handle` writes are serialised by `lock`.
    private let process: Process
    private let handle: FileHandle
    private let lock = NSLock()
    private var leading = false

    /// Starts `executable watchdog …` with a pipe on its standard input.
    public init(executable: String, pgBindir: String, pgdata: String, osUser: String, logPath: String) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["watchdog", "--pg-bindir", pgBindir, "--pgdata", pgdata, "--pg-os-user", osUser]
        let pipe = Pipe()
        process.standardInput = pipe
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        if let log = FileHandle(forWritingAtPath: logPath) {
            log.seekToEndOfFile()
            process.standardOutput = log
            process.standardError = log
        }
        try process.run()
        handle = pipe.fileHandleForWriting
    }

    public static func monotonicNanoseconds() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    /// A heartbeat sent at `sentAt` (``monotonicNanoseconds()``) reached Consul: fence unless another
    /// gets through within `fenceAfter` of that.
    public func renewed(fenceAfter: Duration, sentAt: UInt64) {
        let deadline = sentAt + UInt64(max(0, fenceAfter.nanosecondCount))
        send("L \(deadline)\n")
    }

    /// This node does not lead: nothing to fence.
    public func notLeading() { send("N\n") }

    private func send(_ line: String) {
        lock.withLock {
            try? handle.write(contentsOf: Data(line.utf8))
        }
    }

    public func close() {
        notLeading()
        lock.withLock { try? handle.close() }
        process.waitUntilExit()
    }
}

/// The watchdog process itself (`baton watchdog`), deliberately simple and synchronous.
public enum WatchdogLoop {
    /// Reads deadlines from standard input until the pipe closes; fences when a deadline passes.
    /// - Returns: whether it fenced.
    public static func run(pgBindir: String, pgdata: String, osUser: String, log: (String) -> Void) -> Bool {
        var deadline: UInt64? = nil
        var fenced = false
        var buffer = [UInt8]()
        var open = true
        while true {
            let now = Watchdog.monotonicNanoseconds()
            if let d = deadline, now >= d {
                // Keep watching after a fence: the monitor may start PostgreSQL again (a switchover
                // called off, a retaken lock) and must stay guarded.
                fenced = fence(pgBindir: pgBindir, pgdata: pgdata, osUser: osUser, log: log) || fenced
                deadline = nil
                continue
            }
            if !open {
                guard let d = deadline else { return fenced }
                usleep(useconds_t(min(100_000, (d - now) / 1000 + 1)))
                continue
            }
            let wait = deadline.map { Int32(min(1000, ($0 - now) / 1_000_000 + 1)) } ?? 1000
            var pfd = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, wait) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(0, &chunk, chunk.count)
            if n <= 0 {
                open = false
                if deadline != nil { log("the monitor went away while leading; fencing at the deadline unless it is renewed") }
                continue
            }
            buffer += chunk[0..<n]
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                if line == "N" {
                    deadline = nil
                } else if line.hasPrefix("L "), let value = UInt64(line.dropFirst(2)) {
                    deadline = value
                }
            }
        }
    }

    static func fence(pgBindir: String, pgdata: String, osUser: String, log: (String) -> Void) -> Bool {
        log("deadline passed without a renewal: stopping PostgreSQL (pg_ctl stop -m immediate)")
        let semaphore = DispatchSemaphore(value: 0)
        Task {
            let control = PostgresControl(binDirectory: pgBindir, dataDirectory: pgdata, osUser: osUser)
            await control.fence()
            semaphore.signal()
        }
        semaphore.wait()
        return true
    }
}
