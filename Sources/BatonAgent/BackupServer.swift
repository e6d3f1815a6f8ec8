import BatonCore
import BatonFence
import BatonPostgres
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// pgBackRest's TLS server on this node (`pgbackrest server` with the node's pgBackRest configuration,
/// as PostgreSQL's OS user): what `baton backup --from-standby` on another node reaches this node's
/// PostgreSQL through while it is the primary. Every node runs one (any node may come to lead); the
/// monitor starts it, starts it again when it exits — after a second, longer after each quick exit, up
/// to half a minute — and stops it when the monitor stops. One left behind by a monitor that was
/// killed is stopped first: it holds the port.
struct BackupServer: Sendable {
    let backup: PgBackRest
    let osUser: String
    let logger: Logger

    /// The server's process group (runuser's PID, or pgBackRest's when the monitor is not root).
    var pidFile: String { backup.workDirectory.value + "/server.pid" }
    /// What the server writes on standard error (warnings and errors; its own log is in `log/`).
    var outputFile: String { backup.workDirectory.value + "/server.out" }

    static let quickExit: Duration = .seconds(60)
    static let longestPause: Duration = .seconds(30)

    /// Runs the server until cancelled.
    func run() async {
        stopLeftover()
        var pause: Duration = .seconds(1)
        while !Task.isCancelled {
            let pid: Int32
            do {
                pid = try start()
            } catch {
                logger.error("Cannot start pgBackRest's TLS server; backups from a standby cannot reach this node", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: pause)  // ignored: cancelled, the loop ends
                pause = min(pause * 2, Self.longestPause)
                continue
            }
            let started = ContinuousClock.now
            logger.info(
                "Started pgBackRest's TLS server",
                metadata: ["backup.server_pid": "\(pid)", "backup.tls_port": "\(backup.tls?.port.value ?? 0)"])
            guard let status = await waitForExit(pid) else { return }
            pause = ContinuousClock.now - started > Self.quickExit ? .seconds(1) : min(pause * 2, Self.longestPause)
            // ignored: a server that left no output is reported without it
            let said = (try? String(contentsOfFile: outputFile, encoding: .utf8)).map { $0.split(separator: "\n").suffix(3).joined(separator: " | ") } ?? ""
            logger.warning(
                "pgBackRest's TLS server exited; starting it again (a certificate the postgres user cannot read, or the port in use, stops it at once)",
                metadata: ["backup.exit_status": "\(status)", "backup.server_said": "\(said)", "backup.restart_in": "\(pause)"])
            try? await Task.sleep(for: pause)  // ignored: cancelled, the loop ends
        }
    }

    /// Launches the server in a process group of its own and records it.
    private func start() throws -> Int32 {
        let server = [backup.executable.value, "--config=\(backup.configFile.value)", "server"]
        let pid =
            CommandRunner.isRoot && osUser != "root"
            ? try CommandRunner.launch("/usr/sbin/runuser", ["-u", osUser, "--"] + server, logPath: outputFile)
            : try CommandRunner.launch(server[0], Array(server.dropFirst()), logPath: outputFile)
        // ignored: without the file a leftover server is not found after a crash; the port says so then
        try? "\(pid)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
        return pid
    }

    /// Waits until the server exits (its status), or until the task is cancelled: then stops it (its
    /// whole group: SIGTERM, SIGKILL after three seconds) and returns nil.
    private func waitForExit(_ pid: Int32) async -> Int32? {
        var status: Int32 = 0
        while !Task.isCancelled {
            if waitpid(pid, &status, WNOHANG) == pid {
                // ignored: the file only finds a leftover server
                try? FileManager.default.removeItem(atPath: pidFile)
                return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
            }
            try? await Task.sleep(for: .milliseconds(500))  // ignored: cancelled, the server is stopped below
        }
        stop(group: pid)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        try? FileManager.default.removeItem(atPath: pidFile)  // ignored: as above
        return nil
    }

    /// A server a killed monitor left behind (its PID file names a process that is this node's server).
    private func stopLeftover() {
        guard let text = SmallFile.read(pidFile), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0,
            let commandLine = SmallFile.read("/proc/\(pid)/cmdline")?.replacingOccurrences(of: "\0", with: " "),
            commandLine.contains("--config=\(backup.configFile.value) server")
        else { return }
        logger.notice("Stopping the pgBackRest TLS server a previous monitor left running", metadata: ["backup.server_pid": "\(pid)"])
        stop(group: pid)
    }

    private func stop(group pid: Int32) {
        kill(-pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(3)
        while kill(-pid, 0) == 0, ContinuousClock.now < deadline {
            var status: Int32 = 0
            _ = waitpid(pid, &status, WNOHANG)
            usleep(50_000)
        }
        if kill(-pid, 0) == 0 { kill(-pid, SIGKILL) }
    }
}
