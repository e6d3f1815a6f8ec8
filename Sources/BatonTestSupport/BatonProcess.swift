import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A `baton` (or other) child process started by a test, stopped by PID when the test ends.
public final class BatonProcess: @unchecked Sendable {
    // @unchecked: `process` is only started and signalled; Foundation's Process is thread-safe for that.
    public let process: Process
    public let logPath: String

    /// The `baton` executable built next to the tests (`.build/<config>/baton`).
    public static var executable: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("baton").path,
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("baton").path,
            FileManager.default.currentDirectoryPath + "/.build/debug/baton",
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }

    /// Starts `baton ARGS…` with its output in a log file.
    public static func start(_ arguments: [String], environment: [String: String] = [:]) throws -> BatonProcess {
        try BatonProcess(executable: executable, arguments: arguments, environment: environment)
    }

    public init(executable: String, arguments: [String], environment: [String: String] = [:]) throws {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TestSupportError("\(executable) is not built; run `swift build` first")
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        logPath = NSTemporaryDirectory() + "baton-process-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let handle = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// SIGKILL, then reap.
    public func kill() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM, and SIGKILL if it has not exited within `grace`.
    public func terminate(grace: TimeInterval = 5) {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        kill()
    }

    public var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        kill()
        // BATON_TEST_KEEP=1 keeps the logs for a post-mortem.
        if ProcessInfo.processInfo.environment["BATON_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: logPath)  // ignored: a leftover log in the temporary directory harms nothing
        }
    }
}

/// Runs a command to completion and returns its status and output. It waits on a Dispatch thread, not
/// on one of Swift's few cooperative threads, which an in-process server under test needs.
public func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil)
    async throws -> (status: Int32, output: String)
{
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try runCommandBlocking(executable, arguments, environment: environment, input: input) })
        }
    }
}

/// ``runCommand(_:_:environment:input:)`` for synchronous contexts (test traits); never call it from a
/// task while an in-process server must answer.
public func runCommandBlocking(_ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil)
    throws -> (status: Int32, output: String)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    let stdin = Pipe()
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try? stdin.fileHandleForWriting.close()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts later.
///
/// Picked at random below the kernel's ephemeral range (32768–60999 by default), never twice in one
/// process: a port the kernel handed out for `bind(0)` may be taken again by any outgoing connection
/// (a curl request, a replication connection) before the server binds it, which made a monitor fail to
/// start its API once in a CI run. Nor by two test processes at once (`scripts/test.sh` runs several):
/// each port handed out is claimed in ``claims`` under the process's PID, and a claim is honoured while
/// that process lives — two processes picked the same port for a monitor's API in a CI run, and that
/// monitor exited at once.
public enum FreePort {
    private static let handedOut = Mutex<Set<Int>>([])
    static let range = 20_000..<32_000
    static let claims = "/tmp/baton-test-ports"

    public static func pick() throws -> Int {
        for _ in 0..<1_000 {
            let port = Int.random(in: range)
            let fresh = handedOut.withLock { $0.insert(port).inserted }
            if fresh, canBind(port), claim(port) { return port }
        }
        throw TestSupportError("no free TCP port on 127.0.0.1 in \(range)")
    }

    /// Claims `port` for this process: false when a live process of another PID claimed it.
    static func claim(_ port: Int) -> Bool {
        mkdir(claims, 0o1777)  // ignored: it exists, or the open below fails and says so by returning false
        let path = "\(claims)/\(port)"
        let mine = "\(getpid())\n"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd >= 0 {
            defer { close(fd) }
            return write(fd, mine, mine.utf8.count) == mine.utf8.count
        }
        guard errno == EEXIST, let text = try? String(contentsOfFile: path, encoding: .utf8),
            let owner = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return false }
        if owner != getpid(), kill(owner, 0) == 0 || errno == EPERM { return false }
        // A claim of a process that is gone (or an earlier one of ours): taken over.
        return (try? mine.write(toFile: path, atomically: true, encoding: .utf8)) != nil
    }

    /// Whether a listening socket could bind `port` on 127.0.0.1 now.
    static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var yes: Int32 = 1
        // Servers set SO_REUSEADDR too: a port in TIME_WAIT is free for them.
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        return bindLoopback(fd, port: port)
    }

    /// Binds the TCP socket `fd` to 127.0.0.1:`port`; whether it could.
    public static func bindLoopback(_ fd: Int32, port: Int) -> Bool {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return bound == 0
    }
}

/// Polls `condition` every `interval` until it holds or `timeout` passes; returns whether it held.
/// Tests wait for conditions this way, never for a fixed time.
public func eventually(
    timeout: Duration = .seconds(10), interval: Duration = .milliseconds(20), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
