#if canImport(Glibc)
    import Glibc
#endif

/// The processes of one PostgreSQL data directory, found in /proc by what they are — the `postgres`
/// binary of the configured installation, working in that data directory — and not by parentage:
/// PostgreSQL's children each lead a process group of their own (`setsid` in InitPostmasterChild) and
/// can outlive a killed postmaster for a moment, still able to commit. A zombie is not counted: it can
/// no longer do anything.
///
/// Uses nothing but the C library, so that the watchdog (a small process of its own) shares it.
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
    public func running() -> [Int32] { running(orderingPostmasterFirst: true) }

    private func running(orderingPostmasterFirst: Bool) -> [Int32] {
        var found: [Int32] = []
        guard let directory = opendir("/proc") else { return found }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = Int32(name), pid != getpid(), belongs(pid) else { continue }
            found.append(pid)
        }
        if orderingPostmasterFirst, let postmaster = postmaster(), let index = found.firstIndex(of: postmaster) {
            found.remove(at: index)
            found.insert(postmaster, at: 0)
        }
        return found
    }

    /// The postmaster's PID when it runs: the first line of `postmaster.pid`, checked to be this data
    /// directory's postgres process (a stale file or a recycled PID is not) — or, while it starts and has
    /// not written that file yet, the process of the data directory that has not renamed itself
    /// (PostgreSQL's children all show as `postgres: …`; the postmaster keeps its command line).
    public func postmaster() -> Int32? {
        if let text = Self.read(dataDirectory + "/postmaster.pid"),
            let pid = Int32(text.split(separator: "\n", maxSplits: 1).first ?? ""), pid > 0, belongs(pid)
        {
            return pid
        }
        return running(orderingPostmasterFirst: false).first { !(Self.read("/proc/\($0)/cmdline") ?? "").hasPrefix("postgres: ") }
    }

    /// Whether `pid` is a live process of this data directory.
    public func belongs(_ pid: Int32) -> Bool {
        guard Self.state(pid).map({ $0 != "Z" && $0 != "X" }) ?? false else { return false }
        return Self.link("/proc/\(pid)/cwd") == dataDirectory && Self.executablePath(pid) == executable
    }

    /// Kills every process of the data directory with SIGKILL — the postmaster first, so that it cannot
    /// start more — and looks again until none is left or `timeout` passes.
    /// - Returns: the processes still alive at the end (empty when fencing is verified).
    @discardableResult
    public func killAll(timeout: Duration = .seconds(5)) -> [Int32] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let alive = running()
            if alive.isEmpty || ContinuousClock.now >= deadline { return alive }
            for pid in alive { kill(pid, SIGKILL) }
            usleep(10_000)
        }
    }

    // MARK: /proc

    /// A process's state letter (R, S, D, T, Z…), or nil when it does not exist.
    public static func state(_ pid: Int32) -> Character? {
        guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let rest = stat[stat.index(after: close)...].drop { $0 == " " }
        return rest.first
    }

    /// The resolved path of a process's executable, without the " (deleted)" the kernel adds once the
    /// file was replaced (a package upgrade under a running server).
    static func executablePath(_ pid: Int32) -> String? {
        guard var path = link("/proc/\(pid)/exe") else { return nil }
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }

    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The whole of a small file (procfs, a PID file), or nil.
    public static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func resolved(_ path: String) -> String {
        guard let real = realpath(path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }
}
