import BatonAgent
import BatonCore
import BatonFence
import BatonTestSupport
import Foundation
import Logging
import Testing

/// `baton-watchdog` for real, guarding a stand-in "postgres" process (a copy of sleep named postgres,
/// working in the data directory), driven through the monitor's link.
@Suite("the watchdog process", .serialized)
struct WatchdogTests {
    final class Bench: @unchecked Sendable {
        // @unchecked: used by one test at a time.
        let directory = NSTemporaryDirectory() + "baton-watchdog-" + UUID().uuidString.prefix(8).lowercased()
        var state: String { directory + "/state" }
        var data: String { directory + "/data" }
        var bin: String { directory + "/bin" }
        var device: String { directory + "/watchdog-device" }
        var started: [Process] = []

        init() throws {
            for d in [state, data, bin] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
            try FileManager.default.copyItem(atPath: "/bin/sleep", toPath: bin + "/postgres")
        }

        var executable: String { URL(fileURLWithPath: BatonProcess.executable).deletingLastPathComponent().appendingPathComponent("baton-watchdog").path }

        func link(kernel: String = "off") -> WatchdogLink {
            var logger = Logger(label: "test.watchdog")
            logger.logLevel = .critical
            return WatchdogLink(
                WatchdogLink.Configuration(
                    executable: executable, stateDirectory: state, dataDirectory: data, binDirectory: bin, trackFile: state + "/track",
                    legacyTrackFile: state + "/legacy-track", kernelWatchdog: kernel, kernelDevice: device),
                logger: logger)
        }

        /// A process that passes for this data directory's postgres.
        func startPostgres() throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: bin + "/postgres")
            process.arguments = ["600"]
            process.currentDirectoryURL = URL(fileURLWithPath: data)
            Self.detach(process)
            try process.run()
            started.append(process)
            return process
        }

        /// A stand-in must not hold the test runner's output open (swift test waits for it to close),
        /// and is stopped with SIGKILL: it inherits the spawning thread's blocked signals, SIGTERM among them.
        static func detach(_ process: Process) {
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }

        static func stop(_ process: Process) {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        var watchdogPID: Int32? {
            (try? String(contentsOfFile: WatchdogFiles.pid(stateDirectory: state), encoding: .utf8)).flatMap {
                Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }

        func close() {
            for p in started { Self.stop(p) }
            if let pid = watchdogPID { kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    func withBench(_ body: (Bench) async throws -> Void) async throws {
        let bench = try Bench()
        defer { bench.close() }
        try await body(bench)
    }

    @Test("a deadline that passes kills every process of the data directory (and only those), and the tracked file says so")
    func fencesAtTheDeadline() async throws {
        try await withBench { b in
            let postgres = try b.startPostgres()
            let bystander = Process()
            bystander.executableURL = URL(fileURLWithPath: "/bin/sleep")
            bystander.arguments = ["600"]
            bystander.currentDirectoryURL = URL(fileURLWithPath: b.data)
            Bench.detach(bystander)
            try bystander.run()
            defer { Bench.stop(bystander) }
            let link = b.link()
            #expect(await link.ensure())
            #expect(PostgresProcesses(dataDirectory: b.data, binDirectory: b.bin).running() == [postgres.processIdentifier])
            try await link.arm(deadline: MonotonicClock.nanoseconds() + 300_000_000)
            #expect(await eventually(timeout: .seconds(5)) { !postgres.isRunning }, "killed at the deadline")
            #expect(bystander.isRunning, "another program working in the directory is not PostgreSQL and lives")
            // The watchdog checks that none is left, then writes the tracked file and its log.
            #expect(await eventually(timeout: .seconds(5)) { (try? String(contentsOfFile: b.state + "/track", encoding: .utf8)) == "-254\n" })
            #expect(
                await eventually(timeout: .seconds(5)) { (try? String(contentsOfFile: b.state + "/legacy-track", encoding: .utf8)) == "1\n" },
                "an earlier keepalived.conf's file says FAULT too")
            var log = ""
            let logged = await eventually(timeout: .seconds(5)) {
                log = (try? String(contentsOfFile: WatchdogFiles.log(stateDirectory: b.state), encoding: .utf8)) ?? ""
                return log.contains("deadline passed") && log.contains("none left")
            }
            #expect(logged, "\(log)")
        }
    }

    @Test("renewed in time it never fences; standing down disarms it; it outlives a monitor, and a new link finds it")
    func renewalsKeepItQuiet() async throws {
        try await withBench { b in
            let postgres = try b.startPostgres()
            let link = b.link()
            for _ in 0..<8 {
                try await link.arm(deadline: MonotonicClock.nanoseconds() + 400_000_000)
                try await Task.sleep(for: .milliseconds(150))
            }
            #expect(postgres.isRunning)
            let first = b.watchdogPID
            // A restarted monitor: a new link reaches the same watchdog and carries on.
            let again = b.link()
            try await again.arm(deadline: MonotonicClock.nanoseconds() + 400_000_000)
            #expect(b.watchdogPID == first)
            await again.standDown()
            try await Task.sleep(for: .milliseconds(800))
            #expect(postgres.isRunning, "stood down: nothing to fence")
            await again.quit()
            #expect(await eventually(timeout: .seconds(3)) { first.map { PostgresProcesses.state($0).map { $0 == "Z" } ?? true } ?? false }, "an idle watchdog exits when told")
        }
    }

    @Test("a watchdog killed or frozen is replaced at the next renewal; the replacement guards")
    func deadOrFrozenWatchdogIsReplaced() async throws {
        try await withBench { b in
            let postgres = try b.startPostgres()
            let link = b.link()
            try await link.arm(deadline: MonotonicClock.nanoseconds() + 5_000_000_000)
            let first = try #require(b.watchdogPID)
            kill(first, SIGKILL)
            try await link.arm(deadline: MonotonicClock.nanoseconds() + 5_000_000_000)
            let second = try #require(b.watchdogPID)
            #expect(second != first)
            kill(second, SIGSTOP)
            try await link.arm(deadline: MonotonicClock.nanoseconds() + 300_000_000)
            let third = try #require(b.watchdogPID)
            #expect(third != second, "a frozen watchdog cannot guard: killed and replaced")
            #expect(await eventually(timeout: .seconds(5)) { !postgres.isRunning }, "the replacement fences at the deadline")
        }
    }

    @Test("the kernel watchdog (a stand-in device): petted while leading, closed with 'V' on standing down; `required` refuses a device without a timeout")
    func kernelWatchdogStandIn() async throws {
        try await withBench { b in
            _ = FileManager.default.createFile(atPath: b.device, contents: nil)
            let automatic = b.link(kernel: "automatic")
            for _ in 0..<3 {
                try await automatic.arm(deadline: MonotonicClock.nanoseconds() + 3_000_000_000)
                try await Task.sleep(for: .milliseconds(700))
            }
            await automatic.standDown()
            let written = (try? String(contentsOfFile: b.device, encoding: .utf8)) ?? ""
            #expect(written.hasPrefix("1") && written.hasSuffix("V") && written.filter { $0 == "1" }.count >= 2, "pets, then the magic close: \(written)")
            await automatic.quit()
            #expect(await eventually(timeout: .seconds(3)) { b.watchdogPID.map { kill($0, 0) != 0 } ?? true })
            // A regular file takes no timeout: a required kernel watchdog is refused, and the node must not lead.
            let required = b.link(kernel: "required")
            await #expect(throws: WatchdogUnavailable.self) { try await required.arm(deadline: MonotonicClock.nanoseconds() + 3_000_000_000) }
        }
    }

    /// Reads a FIFO standing in for `/dev/watchdog` and notes when each byte arrives.
    final class DeviceRecorder: @unchecked Sendable {
        // @unchecked: `writes` and `stopped` are only touched under `lock`.
        private let lock = NSLock()
        private var writes: [(byte: UInt8, at: UInt64)] = []
        private var stopped = false

        init(fifo path: String) {
            let descriptor = open(path, O_RDONLY | O_NONBLOCK)
            Thread { [self] in
                var byte: UInt8 = 0
                var opened = false
                while !lock.withLock({ stopped }) {
                    let n = read(descriptor, &byte, 1)
                    if n == 1 {
                        opened = true
                        lock.withLock { writes.append((byte, MonotonicClock.nanoseconds())) }
                    } else if n == 0 && opened {
                        break  // the watchdog closed the device
                    } else {
                        usleep(1_000)
                    }
                }
                close(descriptor)
            }.start()
        }

        var recorded: [(byte: UInt8, at: UInt64)] { lock.withLock { writes } }
        func stop() { lock.withLock { stopped = true } }
    }

    /// Issue 23, finding 4: the kernel watchdog must never fire under a healthy leader (every pet
    /// within the device's timeout of the one before, the first counting from the open), and must fire,
    /// if the whole machine froze, no later than a replica may take over (the last pet plus the timeout
    /// at most the deadline plus the takeover margin); the watchdog that fences at the deadline closes
    /// the device ('V') before it would fire. On main: a 1 s timeout for the default 3 s fence, pets
    /// 1–1.5 s apart — a healthy leader's machine reset over and over.
    @Test("the kernel watchdog's timeout is sized from the fence: pets well inside it while the leader renews, none past what a replica waits, disarmed before it fires")
    func kernelWatchdogSizing() async throws {
        try await withBench { b in
            #expect(mkfifo(b.device, 0o600) == 0)
            let device = DeviceRecorder(fifo: b.device)
            defer { device.stop() }
            let postgres = try b.startPostgres()
            let link = b.link(kernel: "automatic")
            var deadline: UInt64 = 0
            // A leader renewing every loop (1 s) with the default fence (3 s), then its heartbeats stop.
            for _ in 0..<4 {
                deadline = MonotonicClock.nanoseconds() + 3_000_000_000
                try await link.arm(deadline: deadline)
                try await Task.sleep(for: .seconds(1))
            }
            #expect(await eventually(timeout: .seconds(6)) { !postgres.isRunning }, "fenced at the deadline")
            try await Task.sleep(for: .milliseconds(300))
            await link.quit()
            let log = (try? String(contentsOfFile: WatchdogFiles.log(stateDirectory: b.state), encoding: .utf8)) ?? ""
            let armed = try #require(log.split(separator: "\n").first { $0.contains("kernel watchdog") && $0.contains(" armed (") }, "\(log)")
            let seconds = try #require(UInt64(armed.split(separator: "(").last?.split(separator: " ").first ?? ""), "\(armed)")
            let timeout = seconds * 1_000_000_000
            let writes = device.recorded
            let pets = writes.filter { $0.byte == UInt8(ascii: "1") }.map(\.at)
            let disarm = writes.first { $0.byte == UInt8(ascii: "V") }?.at
            #expect(pets.count >= 10, "pets while leading: \(pets.count)")
            let gaps = zip(pets, pets.dropFirst()).map { $1 - $0 }
            let longest = gaps.max() ?? 0
            #expect(longest < timeout / 2, "the longest gap between pets \(longest / 1_000_000) ms against a \(seconds) s timeout: a healthy leader's machine would be reset")
            let last = try #require(pets.last)
            let margin = UInt64(ClusterConfig.fenceMargin.nanoseconds)
            #expect(last + timeout <= deadline + margin, "a frozen machine's device fires \(Int64(last + timeout) - Int64(deadline)) ns after the deadline, past the takeover margin")
            let closed = try #require(disarm, "the device is closed with 'V' when the watchdog fences")
            #expect(closed < last + timeout, "disarmed \(Int64(closed) - Int64(last + timeout)) ns after it would have fired")
        }
    }

    /// Issue 23, finding 10: the watchdog resolved the data directory and `<bindir>/postgres` once, at
    /// its start; a bindir link re-pointed to another installation after it started (and PostgreSQL
    /// started again from there) left it "fenced: 0 processes" — on main this postgres survived the
    /// deadline. It resolves again when it fences (and still fences what the old paths find), and
    /// tells the monitor which postmaster it would fence, so that a monitor that sees another never leads.
    @Test("a bindir link re-pointed after the watchdog started: it still sees and fences the postmaster")
    func repointedBinDirectory() async throws {
        try await withBench { b in
            let first = b.directory + "/install-a"
            let second = b.directory + "/install-b"
            let link = b.directory + "/bin-link"
            for directory in [first, second] {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: "/bin/sleep", toPath: directory + "/postgres")
            }
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: first)
            var logger = Logger(label: "test.watchdog")
            logger.logLevel = .critical
            let watchdog = WatchdogLink(
                WatchdogLink.Configuration(
                    executable: b.executable, stateDirectory: b.state, dataDirectory: b.data, binDirectory: link, trackFile: nil,
                    legacyTrackFile: nil, kernelWatchdog: "off", kernelDevice: b.device),
                logger: logger)
            #expect(await watchdog.ensure())
            // The link moves to the other installation; PostgreSQL runs from there.
            try FileManager.default.removeItem(atPath: link)
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: second)
            let postgres = Process()
            postgres.executableURL = URL(fileURLWithPath: second + "/postgres")
            postgres.arguments = ["600"]
            postgres.currentDirectoryURL = URL(fileURLWithPath: b.data)
            Bench.detach(postgres)
            try postgres.run()
            b.started.append(postgres)
            #expect(await watchdog.postmasterSeen() == postgres.processIdentifier, "the watchdog names the postmaster the monitor sees")
            try await watchdog.arm(deadline: MonotonicClock.nanoseconds() + 300_000_000)
            #expect(await eventually(timeout: .seconds(3)) { !postgres.isRunning }, "fenced at the deadline")
            await watchdog.standDown()
            #expect(await watchdog.postmasterSeen() == 0, "none runs")
            await watchdog.quit()
        }
    }
}
