import BatonFence
import Foundation

/// systemd's notification protocol (`Type=notify`, sd_notify(3)) without libsystemd: datagrams to the
/// socket named in `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Absent that variable
/// (not started by systemd, or `Type=exec`), there is nothing to tell.
public struct SystemdNotifier: Sendable {
    let address: UnixAddress
    /// `WATCHDOG_USEC`, when the unit has `WatchdogSec` and the variable is meant for this process
    /// (`WATCHDOG_PID` is ours or absent).
    public let watchdogInterval: Duration?

    /// From the process's environment; nil when systemd asked for no notifications.
    public init?(environment: [String: String], pid: Int32 = getpid()) {
        guard let socket = environment["NOTIFY_SOCKET"], !socket.isEmpty else { return nil }
        guard let address = socket.hasPrefix("@") ? UnixAddress(abstract: String(socket.dropFirst())) : UnixAddress(path: socket) else { return nil }
        self.address = address
        if let usec = environment["WATCHDOG_USEC"].flatMap(Int64.init), usec > 0,
            environment["WATCHDOG_PID"].map({ Int32($0) == pid }) ?? true
        {
            watchdogInterval = .microseconds(usec)
        } else {
            watchdogInterval = nil
        }
    }

    /// Sends `state` (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=…`, newline-separated); false
    /// when it could not be sent.
    @discardableResult
    public func notify(_ state: String) -> Bool {
        guard let socket = try? DatagramSocket() else { return false }  // ignored: out of descriptors; the next notification tries again
        return socket.send(state, to: address)
    }
}
