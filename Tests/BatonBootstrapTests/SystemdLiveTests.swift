import BatonBootstrap
import BatonSettings
import BatonFence
import BatonTestSupport
import Foundation
import Synchronization
import Testing

extension MonitorLiveTests {
    /// Every datagram a socket receives, gathered by a thread of its own until stopped.
    final class NotificationCollector: Sendable {
        let path: String
        private let received = Mutex<[String]>([])
        private let stopped = Mutex(false)
        private let done = DispatchSemaphore(value: 0)

        init(path: String) throws {
            self.path = path
            let bound = DispatchSemaphore(value: 0)
            // The socket belongs to the thread that reads it.
            Thread.detachNewThread { [self] in
                let socket = try? DatagramSocket(path: path)
                bound.signal()
                while let socket, !stopped.withLock({ $0 }) {
                    if let message = socket.receive(timeoutMilliseconds: 100) { received.withLock { $0.append(message.text) } }
                }
                done.signal()
            }
            bound.wait()
            guard FileManager.default.fileExists(atPath: path) else {
                stop()
                throw TestSupportError("cannot bind a socket at \(path)")
            }
        }

        var messages: [String] { received.withLock { $0 } }
        func stop() {
            stopped.withLock { $0 = true }
            done.wait()
            unlink(path)
        }
    }

    /// The environment of a process, as the kernel keeps it.
    func environment(of pid: Int32) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return [] }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test("under systemd (Type=notify, WatchdogSec): the monitor says READY=1 and pings WATCHDOG=1 while its loop runs; PostgreSQL and the watchdog it starts do not inherit the socket")
    func systemdNotifications() async throws {
        try await LiveCluster.with { c in
            let port = try FreePort.pick()
            _ = try await c.bootstrap(.master, "pg1", port: port)
            let collector = try NotificationCollector(path: c.root + "/notify.sock")
            defer { collector.stop() }
            // WatchdogSec=3s: a ping every second.
            let monitor = try BatonProcess.start(
                ["monitor", "--config", c.directory("pg1") + "/baton.yaml"],
                environment: ["NOTIFY_SOCKET": collector.path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "0"])
            c.track(monitor)
            #expect(await eventually(timeout: .seconds(20)) { (try? await c.leader()) == "pg1" }, "\(monitor.output.suffix(3000))")
            #expect(await eventually(timeout: .seconds(5)) { collector.messages.contains { $0.hasPrefix("READY=1") } }, "\(collector.messages)")
            // WATCHDOG_PID names another process: the monitor must not ping for it.
            try await Task.sleep(for: .seconds(2))
            #expect(!collector.messages.contains("WATCHDOG=1"), "pinged for WATCHDOG_PID=0")
            monitor.terminate()

            let pinging = try BatonProcess.start(
                ["monitor", "--config", c.directory("pg1") + "/baton.yaml"],
                environment: ["NOTIFY_SOCKET": collector.path, "WATCHDOG_USEC": "3000000"])
            c.track(pinging)
            #expect(await eventually(timeout: .seconds(10)) { collector.messages.filter { $0 == "WATCHDOG=1" }.count >= 3 }, "\(collector.messages)")
            // PostgreSQL started by the monitor (after a crash) and its watchdog do not speak for it.
            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let restarted = await eventually(timeout: .seconds(20)) {
                guard let pid = try? postmasterPID(c, "pg1") else { return false }
                return kill(pid, 0) == 0 && !environment(of: pid).isEmpty
            }
            #expect(restarted)
            let postmaster = try postmasterPID(c, "pg1")
            #expect(!environment(of: postmaster).contains { $0.hasPrefix("NOTIFY_SOCKET=") }, "PostgreSQL inherited NOTIFY_SOCKET")
            let watchdogs = (try FileManager.default.contentsOfDirectory(atPath: "/proc")).compactMap { Int32($0) }.filter { pid in
                let commandLine = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
                return commandLine.contains("baton-watchdog") && commandLine.contains(c.root + "/")
            }
            #expect(!watchdogs.isEmpty)
            for pid in watchdogs { #expect(!environment(of: pid).contains { $0.hasPrefix("NOTIFY_SOCKET=") }, "the watchdog inherited NOTIFY_SOCKET") }
            pinging.terminate()
            #expect(collector.messages.contains("STOPPING=1"), "\(collector.messages)")
        }
    }
}
