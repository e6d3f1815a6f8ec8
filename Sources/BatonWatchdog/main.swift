// `baton-watchdog`: the fencing watchdog of one node, a small process of its own (C library only: no
// Foundation, no networking stack) so that it stays cheap, starts fast and is hard to take down.
//
// The monitor sends it a deadline after every heartbeat that reached Consul; when a deadline passes
// without a renewal — the monitor hung, was killed or frozen, or lost Consul — it kills every process
// of the data directory with SIGKILL and checks that none is left. It outlives the monitor: a monitor
// that restarts finds it on its socket and carries on, so a restart does not fence a healthy primary.

import BatonFence

#if canImport(Glibc)
    import Glibc
#endif

struct Options {
    var stateDirectory = ""
    var dataDirectory = ""
    var binDirectory = ""
    var trackFile: String?
    var kernelMode = KernelWatchdog.Mode.off
    var kernelDevice = "/dev/watchdog"

    static let usage = """
        usage: baton-watchdog --state-dir DIR --pgdata DIR --pg-bindir DIR [--track-file FILE]
                              [--kernel-watchdog off|automatic|required] [--kernel-watchdog-device PATH]
        Started by `baton monitor`; not meant to be run by hand.
        """

    init(_ arguments: [String]) throws(UsageError) {
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst(), !value.hasPrefix("--") else { throw UsageError("\(flag) needs a value") }
            switch flag {
            case "--state-dir": stateDirectory = value
            case "--pgdata": dataDirectory = value
            case "--pg-bindir": binDirectory = value
            case "--track-file": trackFile = value
            case "--kernel-watchdog":
                guard let mode = KernelWatchdog.Mode(rawValue: value) else { throw UsageError("--kernel-watchdog must be off, automatic or required") }
                kernelMode = mode
            case "--kernel-watchdog-device": kernelDevice = value
            default: throw UsageError("unknown option \(flag)")
            }
        }
        for (name, value) in [("--state-dir", stateDirectory), ("--pgdata", dataDirectory), ("--pg-bindir", binDirectory)] where !value.hasPrefix("/") {
            throw UsageError("\(name) must be an absolute path")
        }
    }
}

struct UsageError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

func log(_ line: String) {
    var t = time(nil)
    var parts = tm()
    gmtime_r(&t, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
    let stamp = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let text = "\(stamp) baton watchdog: \(line)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}

/// Writes `text` to `path` through a temporary file and a rename (keepalived watches it with inotify).
func writeAtomically(_ text: String, to path: String) {
    let temporary = path + ".watchdog-tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return }
    _ = text.withCString { write(fd, $0, strlen($0)) }
    fsync(fd)
    close(fd)
    rename(temporary, path)
}

let options: Options
do {
    options = try Options(Array(CommandLine.arguments.dropFirst()))
} catch {
    _ = "baton-watchdog: \(error.message)\n\(Options.usage)\n".withCString { write(2, $0, strlen($0)) }
    exit(2)
}

// Only one watchdog per node.
let lockFD = open(WatchdogFiles.lock(stateDirectory: options.stateDirectory), O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
    log("another watchdog holds \(WatchdogFiles.lock(stateDirectory: options.stateDirectory)); exiting")
    exit(1)
}
// Nothing may stop it but SIGKILL, and the kernel should not choose it under memory pressure.
for number in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] { signal(number, SIG_IGN) }
// Locked as it is touched (MCL_ONFAULT), not all at once: locking every page of every library mapped
// (libstdc++, libm, the whole binary) tripled its resident size. What fencing needs is touched below
// before the first deadline can be armed, so it is resident and locked from then on.
if mlockall(MCL_CURRENT | MCL_FUTURE | Int32(MCL_ONFAULT)) != 0 { log("cannot lock its memory (\(String(cString: strerror(errno)))); continuing") }
let adjustment = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC)
if adjustment < 0 || write(adjustment, "-1000", 5) != 5 { log("cannot opt out of the OOM killer (not root?); continuing") }
if adjustment >= 0 { close(adjustment) }

let socketPath = WatchdogFiles.socket(stateDirectory: options.stateDirectory)
let listener: DatagramSocket
do {
    listener = try DatagramSocket(path: socketPath)
} catch {
    log("cannot listen on \(socketPath): \(error)")
    exit(1)
}
writeAtomically("\(getpid())\n", to: WatchdogFiles.pid(stateDirectory: options.stateDirectory))

let processes = PostgresProcesses(dataDirectory: options.dataDirectory, binDirectory: options.binDirectory)
// Warm the fence path (finding the data directory's processes, the tracked file's write, the log) so
// its pages are locked before it is needed; nothing is killed here.
_ = processes.running()
var kernel = KernelWatchdog(mode: options.kernelMode, device: options.kernelDevice, log: log)
var deadline: UInt64? = nil
log("guarding \(options.dataDirectory) (pid \(getpid()), socket \(socketPath), kernel watchdog \(options.kernelMode.rawValue))")

func fence(_ why: String) {
    log("\(why): stopping PostgreSQL (SIGKILL of every process of \(options.dataDirectory))")
    if let trackFile = options.trackFile { writeAtomically("1\n", to: trackFile) }
    let before = processes.running()
    let left = processes.killAll(timeout: .seconds(5))
    if left.isEmpty {
        log("fenced: \(before.count) process(es) killed, none left")
    } else {
        log("fencing incomplete: still alive after 5 s: \(left)")
    }
}

while true {
    let now = MonotonicClock.nanoseconds()
    if let due = deadline, now >= due {
        fence("deadline passed without a renewal")
        deadline = nil
        kernel.standDown()
        continue
    }
    kernel.keepAlive(now: now, armed: deadline != nil)
    let untilDeadline = deadline.map { Int32(min(1000, ($0 - now) / 1_000_000 + 1)) } ?? 1000
    guard let (text, sender) = listener.receive(timeoutMilliseconds: min(untilDeadline, 500)) else { continue }
    guard let request = WatchdogRequest(text: text) else {
        log("ignoring a malformed message \(text.debugDescription)")
        continue
    }
    var state = WatchdogReply.State.idle
    switch request.command {
    case .lead(let until):
        if kernel.arm(deadline: until, now: now) {
            deadline = until
            state = .armed
        } else {
            state = .refused
        }
    case .standDown:
        deadline = nil
        kernel.standDown()
    case .fenceNow:
        fence("the monitor asked")
        deadline = nil
        kernel.standDown()
    case .ping:
        state = deadline == nil ? .idle : .armed
    case .quit:
        if deadline == nil {
            _ = listener.send(WatchdogReply(sequence: request.sequence, state: .idle).text, to: sender)
            kernel.standDown()
            unlink(socketPath)
            unlink(WatchdogFiles.pid(stateDirectory: options.stateDirectory))
            log("the monitor stopped cleanly; exiting")
            exit(0)
        }
        state = .armed
    }
    _ = listener.send(WatchdogReply(sequence: request.sequence, state: state).text, to: sender)
}
