import CBatonSpawn
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The outcome of a finished command.
public struct CommandResult: Sendable {
    public var status: Int32
    public var output: String
    public var succeeded: Bool { status == 0 }
}

/// Runs programs by absolute path with an argument list (never through a shell), optionally as another
/// OS user, and waits for them off Swift's cooperative threads.
public struct CommandRunner: Sendable {
    /// When set and Baton runs as root, commands run as this user (PostgreSQL refuses to run as root).
    public var runAsUser: String?

    public init(runAsUser: String? = nil) { self.runAsUser = runAsUser }

    public static var isRoot: Bool { getuid() == 0 }

    /// How many programs this process is waiting for now (pg_basebackup, pg_rewind, pg_ctl …): a
    /// monitor whose loop is inside one is busy, not wedged (``SystemdWatchdogPolicy``).
    public static let running = Atomic<Int>(0)

    /// Runs `executable arguments…`, returning its status and combined output (the last 64 KiB). With
    /// a `timeout`, a command still running then is killed (SIGKILL) and its status is 137.
    /// `onOutput`, when given, hears each line of output as the command writes it (a long command's
    /// progress).
    public func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil, timeout: Duration? = nil,
        onOutput: (@Sendable (String) -> Void)? = nil
    ) async throws -> CommandResult {
        var program = executable
        var args = arguments
        if let user = runAsUser, CommandRunner.isRoot, user != "root" {
            program = "/usr/sbin/runuser"
            args = ["-u", user, "--", executable] + arguments
        }
        let finalProgram = program
        let finalArgs = args
        Self.running.add(1, ordering: .relaxed)
        defer { Self.running.subtract(1, ordering: .relaxed) }
        return try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(
                    with: Result {
                        try CommandRunner.blockingRun(finalProgram, finalArgs, environment: environment, input: input, timeout: timeout, onOutput: onOutput)
                    })
            }
        }
    }

    /// Like ``run(_:_:environment:input:)`` but throws with the command's output when it fails.
    @discardableResult
    public func check(_ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil, what: String)
        async throws -> String
    {
        let result = try await run(executable, arguments, environment: environment, input: input)
        guard result.succeeded else {
            throw PostgresError("\(what) failed (exit \(result.status)): \(result.output.suffix(2000))")
        }
        return result.output
    }

    /// Starts `executable arguments…` in the background, detached from this process's group, with its
    /// output appended to `logPath` and no descriptor of ours: a daemon that outlives its starter.
    /// - Returns: its PID (the caller reaps it if it dies while this process lives).
    public static func launch(_ executable: String, _ arguments: [String], logPath: String) throws -> Int32 {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw PostgresError("\(executable) does not exist or is not executable")
        }
        let outputFD = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard outputFD >= 0 else { throw PostgresError("cannot open \(logPath): \(String(cString: strerror(errno)))") }
        defer { close(outputFD) }
        let inputFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(inputFD) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let pid = baton_spawn(executable, argv, envp, inputFD, outputFD)
        guard pid > 0 else { throw PostgresError("cannot start \(executable): \(String(cString: strerror(-pid)))") }
        return pid
    }

    private static func blockingRun(
        _ program: String, _ arguments: [String], environment: [String: String], input: String?, timeout: Duration?,
        onOutput: (@Sendable (String) -> Void)?
    ) throws -> CommandResult {
        guard FileManager.default.isExecutableFile(atPath: program) else {
            throw PostgresError("\(program) does not exist or is not executable; check --pg-bindir and that PostgreSQL is installed")
        }
        var env = ProcessInfo.processInfo.environment
        env["LC_ALL"] = "C"
        for (k, v) in environment { env[k] = v }
        // Output goes to a file, not a pipe, and the child inherits no other descriptor: a daemon the
        // command starts (pg_ctl start) must not hold anything of ours open. The files are unlinked as
        // soon as they are open, so a monitor killed while it waits leaves none behind.
        let outputFD = try anonymousFile()
        defer { close(outputFD) }
        var inputFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if let input {
            close(inputFD)
            inputFD = try anonymousFile()
            let bytes = Array(input.utf8)
            guard bytes.withUnsafeBytes({ pwrite(inputFD, $0.baseAddress, $0.count, 0) }) == bytes.count else {
                close(inputFD)
                throw PostgresError("cannot write a command's input to a temporary file: \(String(cString: strerror(errno)))")
            }
        }
        defer { close(inputFD) }
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let pid = baton_spawn(program, argv, envp, inputFD, outputFD)
        guard pid > 0 else { throw PostgresError("cannot start \(program): \(String(cString: strerror(-pid)))") }
        var status: Int32 = 0
        var lines = OutputLines(fd: outputFD, onLine: onOutput)
        defer { lines.finish() }
        if timeout != nil || onOutput != nil {
            let deadline = timeout.map { ContinuousClock.now + $0 }
            while waitpid(pid, &status, WNOHANG) == 0 {
                lines.readNew()
                if let deadline, ContinuousClock.now >= deadline {
                    kill(pid, SIGKILL)
                    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                    break
                }
                usleep(10_000)
            }
        } else {
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        let exitCode: Int32 = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return CommandResult(status: exitCode, output: String(decoding: tail(of: outputFD, limit: 64 << 10), as: UTF8.self))
    }

    /// Hands each new line written to a command's output file to `onLine`, as it comes.
    private struct OutputLines {
        let fd: Int32
        let onLine: (@Sendable (String) -> Void)?
        var offset: off_t = 0
        var partial: [UInt8] = []

        init(fd: Int32, onLine: (@Sendable (String) -> Void)?) {
            self.fd = fd
            self.onLine = onLine
        }

        mutating func readNew() {
            guard let onLine else { return }
            var buffer = [UInt8](repeating: 0, count: 16 << 10)
            while true {
                let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
                guard count > 0 else { return }
                offset += off_t(count)
                partial += buffer.prefix(count)
                while let newline = partial.firstIndex(of: 10) {
                    onLine(String(decoding: partial[..<newline], as: UTF8.self))
                    partial.removeSubrange(...newline)
                }
            }
        }

        mutating func finish() {
            readNew()
            if let onLine, !partial.isEmpty { onLine(String(decoding: partial, as: UTF8.self)) }
            partial = []
        }
    }

    /// A temporary file open for reading and writing, already unlinked.
    private static func anonymousFile() throws -> Int32 {
        let path = NSTemporaryDirectory() + "baton-cmd-\(UUID().uuidString)"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PostgresError("cannot create \(path): \(String(cString: strerror(errno)))") }
        unlink(path)
        return fd
    }

    /// The last `limit` bytes written to `fd`.
    private static func tail(of fd: Int32, limit: Int) -> [UInt8] {
        let size = Int(lseek(fd, 0, SEEK_END))
        guard size > 0 else { return [] }
        let start = max(0, size - limit)
        var bytes = [UInt8](repeating: 0, count: size - start)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
        return Array(bytes.prefix(max(0, count)))
    }
}
