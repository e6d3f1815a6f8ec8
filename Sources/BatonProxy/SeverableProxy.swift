import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP proxy that a test can cut like a network partition, or slow down: while severed, nothing is
/// forwarded in either direction and new connections hang (as a dropped link does, not a refusal);
/// when healed, the connections that were cut are closed and new ones are forwarded again. With a
/// delay, every chunk a client sends reaches the upstream that much later (a slow server).
public final class SeverableProxy: @unchecked Sendable {
    // @unchecked: the mutable state is guarded by `lock`; each connection is pumped by its own threads.
    public let port: Int
    public let host: String
    private let upstreamHost: String
    private let upstreamPort: Int
    private let listener: Int32
    private let lock = NSLock()
    private var severed = false
    private var stopped = false
    private var delay: Duration = .zero
    private var sockets: Set<Int32> = []
    private var heldWhileSevered: [Int32] = []

    /// Listens on `listenHost:listenPort` (a free loopback port by default) and forwards to
    /// `upstreamHost:upstreamPort`.
    public init(listenHost: String = "127.0.0.1", listenPort: Int = 0, upstreamHost: String = "127.0.0.1", upstreamPort: Int) throws {
        self.host = listenHost
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ProxyError("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.address(listenHost, port: UInt16(listenPort))
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw ProxyError("bind/listen \(listenHost):\(listenPort): errno \(errno)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        port = Int(UInt16(bigEndian: actual.sin_port))
        listener = fd
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// Every chunk a client sends is held this long before it goes upstream.
    public func setDelay(_ delay: Duration) { lock.withLock { self.delay = delay } }

    public var address: String { "\(host):\(port)" }

    /// Cuts the link: every open connection stops forwarding, new ones hang.
    public func sever() { lock.withLock { severed = true } }

    /// Restores the link: the cut connections are closed (their peers see the failure), new ones flow.
    public func heal() {
        let cut = lock.withLock { () -> [Int32] in
            severed = false
            defer { heldWhileSevered = [] }
            return Array(sockets) + heldWhileSevered
        }
        let held = Set(lock.withLock { heldWhileSevered })
        for fd in cut { shutdown(fd, Int32(SHUT_RDWR)) }
        _ = held
    }

    /// Stops listening and closes every connection.
    public func stop() {
        let all = lock.withLock { () -> [Int32] in
            stopped = true
            return Array(sockets) + heldWhileSevered
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in all { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private static func address(_ host: String, port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        return address
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if lock.withLock({ stopped }) { return }
                continue
            }
            let hold = lock.withLock { () -> Bool in
                if severed { heldWhileSevered.append(client) }
                return severed
            }
            if hold { continue }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.address(upstreamHost, port: UInt16(upstreamPort))
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                close(upstream)
                close(client)
                continue
            }
            lock.withLock {
                sockets.insert(client)
                sockets.insert(upstream)
            }
            let finished = ConnectionEnd()
            Thread.detachNewThread { [self] in pump(from: client, to: upstream, end: finished, delayed: true) }
            Thread.detachNewThread { [self] in pump(from: upstream, to: client, end: finished, delayed: false) }
        }
    }

    /// Copies bytes one way until either side closes; while severed, holds them back (and keeps
    /// reading nothing), so the peers see a silent link.
    private func pump(from source: Int32, to destination: Int32, end: ConnectionEnd, delayed: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        loop: while true {
            while lock.withLock({ severed && !stopped }) { usleep(20_000) }
            var pfd = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 50)
            if ready == 0 { continue }
            if lock.withLock({ severed }) { continue }
            let n = read(source, &buffer, buffer.count)
            if n <= 0 { break }
            if delayed {
                let hold = lock.withLock { delay }
                if hold > .zero { Thread.sleep(forTimeInterval: Double(hold.components.seconds) + Double(hold.components.attoseconds) / 1e18) }
            }
            var sent = 0
            while sent < n {
                // MSG_NOSIGNAL: a peer that went away is an error here, not a SIGPIPE that ends the process.
                let w = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + sent, n - sent, Int32(MSG_NOSIGNAL)) }
                if w <= 0 { break loop }
                sent += w
            }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
        if end.finishOne() {
            lock.withLock {
                sockets.remove(source)
                sockets.remove(destination)
            }
            close(source)
            close(destination)
        }
    }
}

/// Counts the two directions of one connection; the second to finish closes the sockets.
private final class ConnectionEnd: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining = 2
    func finishOne() -> Bool { lock.withLock { remaining -= 1; return remaining == 0 } }
}

public struct ProxyError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
