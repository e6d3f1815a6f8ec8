import CBatonFence

#if canImport(Glibc)
    import Glibc
#endif

/// The processes of one PostgreSQL data directory, found in /proc by what they are — the `postgres`
/// binary of the configured installation, working in that data directory — and not by parentage:
/// PostgreSQL's children each lead a process group of their own (`setsid` in InitPostmasterChild) and
/// can outlive a killed postmaster for a moment, still able to commit. A zombie is not counted: it can
/// no longer do anything.
///
/// The rules live in C (`CBatonFence`), shared with the watchdog, a small process without the Swift
/// runtime; this is the monitor's view of them.
public struct PostgresProcesses: Sendable {
    /// The data directory, resolved (symbolic links followed).
    public let dataDirectory: String
    /// `<bindir>/postgres`, resolved.
    public let executable: String

    public init(dataDirectory: String, binDirectory: String) {
        self.dataDirectory = Self.resolved(dataDirectory)
        self.executable = Self.resolved(binDirectory + "/postgres")
    }

    /// Every live process of this data directory, the postmaster first when it runs.
    public func running() -> [Int32] {
        var capacity = 1024
        while true {
            var pids = [pid_t](repeating: 0, count: capacity)
            let count = baton_fence_running(dataDirectory, executable, &pids, capacity)
            if count <= capacity { return Array(pids.prefix(count)) }
            capacity = count + 64
        }
    }

    /// The postmaster's PID when it runs: the first line of `postmaster.pid`, checked to be this data
    /// directory's postgres process (a stale file or a recycled PID is not) — or, while it starts and has
    /// not written that file yet, the process of the data directory that has not renamed itself.
    public func postmaster() -> Int32? {
        let pid = baton_fence_postmaster(dataDirectory, executable)
        return pid > 0 ? pid : nil
    }

    /// Whether `pid` is a live process of this data directory.
    public func belongs(_ pid: Int32) -> Bool { baton_fence_belongs(dataDirectory, executable, pid) != 0 }

    /// Kills every process of the data directory with SIGKILL — the postmaster first, so that it cannot
    /// start more — and looks again until none is left or `timeout` passes.
    /// - Returns: the processes still alive at the end (empty when fencing is verified).
    @discardableResult
    public func killAll(timeout: Duration = .seconds(5)) -> [Int32] {
        var left = [pid_t](repeating: 0, count: 1024)
        let milliseconds = Int32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let count = baton_fence_kill_all(dataDirectory, executable, milliseconds, &left, left.count)
        return Array(left.prefix(min(count, left.count)))
    }

    // MARK: /proc

    /// A process's state letter (R, S, D, T, Z…), or nil when it does not exist.
    public static func state(_ pid: Int32) -> Character? {
        let letter = baton_fence_state(pid)
        return letter == 0 ? nil : Character(UnicodeScalar(UInt8(bitPattern: letter)))
    }


    static func resolved(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        baton_fence_resolve(path, &buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
