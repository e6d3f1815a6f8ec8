import BatonAgent
import BatonFence
import Foundation
import Testing

@Suite("systemd notifications")
struct SystemdNotifierTests {
    @Test("NOTIFY_SOCKET names a path or an abstract name; WATCHDOG_USEC counts only for the process WATCHDOG_PID names")
    func environment() {
        #expect(SystemdNotifier(environment: [:]) == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]) == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/systemd/notify"])?.watchdogInterval == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"])?.watchdogInterval == .seconds(30))
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"], pid: 7)?.watchdogInterval == .seconds(30))
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"], pid: 7)?.watchdogInterval == nil)
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "soon"])?.watchdogInterval == nil)
    }

    @Test("a notification arrives whole at the socket, by path and in the abstract namespace")
    func delivery() throws {
        let path = NSTemporaryDirectory() + "baton-notify-\(UUID().uuidString.prefix(8)).sock"
        let byPath = try DatagramSocket(path: path)
        defer { unlink(path) }
        #expect(try #require(SystemdNotifier(environment: ["NOTIFY_SOCKET": path])).notify("READY=1\nSTATUS=monitoring"))
        #expect(byPath.receive(timeoutMilliseconds: 1000)?.text == "READY=1\nSTATUS=monitoring")
        let name = "baton-notify-\(UUID().uuidString.prefix(8))"
        let abstract = try DatagramSocket(abstractName: name)
        #expect(try #require(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name])).notify("WATCHDOG=1"))
        #expect(abstract.receive(timeoutMilliseconds: 1000)?.text == "WATCHDOG=1")
    }
}
