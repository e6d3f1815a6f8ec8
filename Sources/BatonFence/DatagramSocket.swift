#if canImport(Glibc)
    import Glibc
#endif

/// CLOCK_MONOTONIC, which every process on the machine shares (Swift's clocks may use another).
public enum MonotonicClock {
    public static func nanoseconds() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    /// The kernel's ID of this boot of the machine, which tells this clock's readings from those of a
    /// previous boot; nil where it cannot be read.
    public static func bootID() -> String? {
        guard let text = SmallFile.read("/proc/sys/kernel/random/boot_id") else { return nil }
        let id = text.filter { !$0.isWhitespace }
        return id.isEmpty ? nil : id
    }
}

/// A Unix datagram socket: each message arrives whole or not at all, and the receiver learns who sent
/// it, which is all the monitor and its watchdog need to talk. Owned by one thread at a time.
public final class DatagramSocket {
    public let descriptor: Int32

    /// A socket bound to a name in the abstract namespace (nothing on disk to clean up).
    public convenience init(abstractName: String) throws(SocketError) {
        try self.init(address: UnixAddress(abstract: abstractName), mode: nil)
    }

    /// A socket bound to `path` (an old socket file there is replaced), readable and writable by its
    /// owner only.
    public convenience init(path: String) throws(SocketError) {
        unlink(path)
        try self.init(address: UnixAddress(path: path), mode: 0o600)
        chmod(path, 0o600)
    }

    /// A socket bound to no name, for sending only (to systemd's notification socket).
    public init() throws(SocketError) {
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw SocketError("socket: \(String(cString: strerror(errno)))") }
    }

    private init(address: UnixAddress?, mode: mode_t?) throws(SocketError) {
        guard let address else { throw SocketError("the socket name is too long") }
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw SocketError("socket: \(String(cString: strerror(errno)))") }
        let bound = address.withPointer { bind(descriptor, $0, $1) }
        guard bound == 0 else {
            let message = String(cString: strerror(errno))
            close(descriptor)
            throw SocketError("bind \(address.description): \(message)")
        }
    }

    deinit { close(descriptor) }

    /// Sends `text` to the socket bound at `path`; false when nobody listens there.
    public func send(_ text: String, toPath path: String) -> Bool {
        guard let address = UnixAddress(path: path) else { return false }
        return send(text, to: address)
    }

    public func send(_ text: String, to address: UnixAddress) -> Bool {
        let bytes = Array(text.utf8)
        let sent = address.withPointer { pointer, length in
            bytes.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), pointer, length) }
        }
        return sent == bytes.count
    }

    /// Waits up to `timeoutMilliseconds` for one message; nil when none came.
    public func receive(timeoutMilliseconds: Int32) -> (text: String, sender: UnixAddress)? {
        var pfd = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, max(0, timeoutMilliseconds)) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 512)
        var storage = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let count = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(descriptor, &buffer, buffer.count, 0, $0, &length) }
        }
        guard count > 0 else { return nil }
        return (String(decoding: buffer[0..<count], as: UTF8.self), UnixAddress(storage: storage, length: length))
    }
}

/// A Unix socket address: a path, or a name in the abstract namespace.
public struct UnixAddress: Sendable, CustomStringConvertible {
    private var bytes: [UInt8]

    public init?(path: String) {
        let utf8 = Array(path.utf8)
        guard !utf8.isEmpty, utf8.count < 108 else { return nil }
        bytes = utf8 + [0]
    }

    public init?(abstract name: String) {
        let utf8 = Array(name.utf8)
        guard utf8.count < 107 else { return nil }
        bytes = [0] + utf8
    }

    init(storage: sockaddr_un, length: socklen_t) {
        let pathLength = max(0, Int(length) - MemoryLayout<sa_family_t>.size)
        var copy = storage
        bytes = withUnsafeBytes(of: &copy.sun_path) { Array($0.prefix(pathLength)) }
    }

    public var description: String {
        bytes.first == 0 ? "@" + String(decoding: bytes.dropFirst(), as: UTF8.self) : String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    func withPointer<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.prefix(raw.count).enumerated() { raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}

public struct SocketError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
