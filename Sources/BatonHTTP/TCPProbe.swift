import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Plain TCP, off Swift's cooperative threads: whether something listens at an address (Consul's TCP
/// checks), and a connection held idle until its peer goes away (the pgbouncer agent's watch on the
/// leader's node: a process that dies closes its sockets at once).
public enum TCPProbe {
    /// Whether a TCP connection to `host:port` is accepted within `timeout`.
    public static func isReachable(host: String, port: Int, timeout: Duration) async -> Bool {
        await offloaded {
            guard let fd = connect(host: host, port: port, timeoutMS: milliseconds(timeout)) else { return false }
            close(fd)
            return true
        }
    }

    /// How an idle connection ended.
    public enum Ending: Sendable, Equatable {
        /// It could not be made.
        case refused
        /// The peer closed it or reset it (its process or machine is gone, or it restarted).
        case closed
        /// `stillWanted` turned false first.
        case unwanted
    }

    /// Connects to `host:port` and holds the connection idle, looking every 100 ms whether the peer
    /// closed it and whether it is `stillWanted`. A machine that vanished from the network closes
    /// nothing: TCP keepalives (a probe after each idle second, one unanswered ends it) end the
    /// connection 1–2 s after the machine's last answer. (One lost probe on a healthy network costs the
    /// caller a look at the peer, which still answers.)
    public static func holdIdle(host: String, port: Int, connectTimeout: Duration, stillWanted: @escaping @Sendable () -> Bool) async -> Ending {
        await offloaded {
            guard let fd = connect(host: host, port: port, timeoutMS: milliseconds(connectTimeout)) else { return .refused }
            defer { close(fd) }
            var on: Int32 = 1, idle: Int32 = 1, interval: Int32 = 1, count: Int32 = 1
            let size = socklen_t(MemoryLayout<Int32>.size)
            // A socket option refused leaves the connection to notice only a process's death: no worse.
            _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, size)
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
            var buffer = [UInt8](repeating: 0, count: 512)
            while stillWanted() {
                // A closed or reset connection is readable (recv says 0 or fails); POLLHUP and POLLERR come unasked.
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) > 0 else { continue }
                if pfd.revents & (Int16(POLLHUP) | Int16(POLLERR)) != 0 { return .closed }
                let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) { return .closed }
            }
            return .unwanted
        }
    }

    static func milliseconds(_ d: Duration) -> Int32 { Int32(clamping: max(1, d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)) }

    static func offloaded<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in DispatchQueue.global().async { continuation.resume(returning: body()) } }
    }

    /// A connected, non-blocking socket, or nil.
    static func connect(host: String, port: Int, timeoutMS: Int32) -> Int32? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { return nil }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard errno == EINPROGRESS, poll(&pfd, 1, timeoutMS) == 1, getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error == 0 else {
            close(fd)
            return nil
        }
        return fd
    }
}
