import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// One HTTP request, whole.
public struct APIRequest: Sendable {
    public var method: String
    /// The request target as sent: path and query, still percent-encoded.
    public var uri: String
    /// Header names lower-cased.
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(method: String, uri: String, headers: [(String, String)], body: [UInt8]) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }

    /// The path, without the query.
    public var path: String { String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "") }

    /// The raw query string (after `?`), or "".
    public var query: String {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        return parts.count > 1 ? String(parts[1]) : ""
    }
}

/// One HTTP answer.
public struct APIResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ status: Int, _ message: String, headers: [(String, String)] = []) -> APIResponse {
        APIResponse(status: status, headers: headers + [("Content-Type", "text/plain; charset=utf-8")], body: Array(message.utf8))
    }

    public static let empty = APIResponse(status: 200, headers: [], body: [])
}

/// A small HTTP/1.1 server on SwiftNIO (its codec parses; nothing here does): keep-alive and
/// pipelining, a bound on the request body and on open connections — a request over the bound gets
/// 413, a connection over the bound gets 503 and is closed, and the server keeps serving — and
/// optional TLS with client-certificate verification. The embedded Consul server and the node API both
/// run on it.
public final class HTTPServer: Sendable {
    public struct Limits: Sendable {
        /// The largest request body accepted.
        public var maxBody: Int
        /// Open connections beyond this are answered 503 and closed.
        public var maxConnections: Int
        /// The answer to a request whose body is too large (given its Content-Length, if any).
        public var tooLarge: @Sendable (String?) -> APIResponse

        public init(maxBody: Int, maxConnections: Int = 4096, tooLarge: (@Sendable (String?) -> APIResponse)? = nil) {
            self.maxBody = maxBody
            self.maxConnections = maxConnections
            self.tooLarge = tooLarge ?? { _ in APIResponse.text(413, "request body too large: at most \(maxBody) bytes\n") }
        }
    }

    /// TLS: the server's certificate chain and key (PEM files), and, to verify clients, the CA their
    /// certificates must be signed by.
    public struct TLSFiles: Sendable, Equatable {
        public var certificate: String
        public var key: String
        public var clientCA: String?

        public init(certificate: String, key: String, clientCA: String?) {
            self.certificate = certificate
            self.key = key
            self.clientCA = clientCA
        }
    }

    /// The address the server listens on (the actual port when 0 was asked for).
    public let localAddress: (host: String, port: Int)
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup
    private let connections: Connections

    /// Listens and serves every request with `handler`.
    /// - Throws: when the TLS files cannot be read, or the address cannot be bound.
    public init(
        host: String, port: Int, limits: Limits, tls: TLSFiles? = nil, logger: Logger,
        handler: @escaping @Sendable (APIRequest) async -> APIResponse
    ) async throws {
        let sslContext: NIOSSLContext?
        if let tls {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(tls.certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.key, format: .pem)))
            if let ca = tls.clientCA {
                configuration.trustRoots = .file(ca)
                configuration.certificateVerification = .noHostnameVerification
            }
            sslContext = try NIOSSLContext(configuration: configuration)
        } else {
            sslContext = nil
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let open = Connections(limit: limits.maxConnections)
        connections = open
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // TCP_NODELAY at the TCP level: `.socketOption(.tcp_nodelay)` would set SOL_SOCKET's
                // option 1 (SO_DEBUG), which only root may set — every connection of a non-root
                // server was closed at accept.
                .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let sslContext { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext)) }
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true)
                        let admitted = open.admit(channel)
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPHandler(handler: handler, limits: limits, admitted: admitted, connections: open))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            try? await group.shutdownGracefully()  // ignored: the bind error is the one to report
            throw error
        }
        localAddress = (host, channel.localAddress?.port ?? port)
    }

    /// Stops listening, closes every connection, waits for the requests in flight to end (a closed
    /// connection cancels its request), and only then stops the event loop their answers are sent on.
    public func shutdown() async {
        try? await channel.close()  // ignored: closing a closed channel
        await connections.drain()
        try? await group.shutdownGracefully()  // ignored: nothing to do about a failed shutdown
    }

    /// Waits until the listening socket closes.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()  // ignored: closed either way
    }
}

/// The open connections, counted against the limit, and the requests they run, so that shutdown can
/// close the ones and wait for the others.
final class Connections: Sendable {
    struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var tasks: [UInt64: Task<Void, Never>] = [:]
        /// Requests that finished before their task was recorded (answered without suspending).
        var finishedEarly: Set<UInt64> = []
        var nextTask: UInt64 = 0
    }
    let limit: Int
    private let state = Mutex(State())
    init(limit: Int) { self.limit = limit }

    /// Counts one more; whether it is within the limit.
    func admit(_ channel: any Channel) -> Bool {
        state.withLock {
            $0.channels[ObjectIdentifier(channel)] = channel
            return $0.channels.count <= limit
        }
    }

    func leave(_ channel: any Channel) { state.withLock { _ = $0.channels.removeValue(forKey: ObjectIdentifier(channel)) } }

    /// Runs a request's work on a task that shutdown waits for. The task starts at once on the calling
    /// thread (the event loop): a request answered without waiting (a read, a renewal) costs no hop to
    /// another thread and back; one that waits (a write's sync, a blocking query) continues on the
    /// global executor from its first suspension.
    func spawn(_ work: @escaping @Sendable () async -> Void) -> Task<Void, Never> {
        let id = state.withLock { s in
            defer { s.nextTask += 1 }
            return s.nextTask
        }
        let task = Task.immediate {
            await work()
            self.state.withLock { s in
                if s.tasks.removeValue(forKey: id) == nil { s.finishedEarly.insert(id) }
            }
        }
        state.withLock { s in
            if s.finishedEarly.remove(id) == nil { s.tasks[id] = task }
        }
        return task
    }

    /// Closes every connection and waits until no request runs.
    func drain() async {
        for channel in state.withLock({ Array($0.channels.values) }) {
            try? await channel.close()  // ignored: a channel closed meanwhile
        }
        while let task = state.withLock({ $0.tasks.values.first }) {
            await task.value
        }
    }
}

/// Collects one HTTP request, hands it to the handler on a task, and writes the answer back in order.
private final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let handler: @Sendable (APIRequest) async -> APIResponse
    private let limits: HTTPServer.Limits
    private let admitted: Bool
    private let connections: Connections
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    private var inFlight: Task<Void, Never>?

    init(handler: @escaping @Sendable (APIRequest) async -> APIResponse, limits: HTTPServer.Limits, admitted: Bool, connections: Connections) {
        self.handler = handler
        self.limits = limits
        self.admitted = admitted
        self.connections = connections
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            tooLarge = false
        case .body(var buffer):
            if body.count + buffer.readableBytes > limits.maxBody {
                tooLarge = true
            } else if let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            guard admitted else {
                write(
                    .text(503, "too many connections: at most \(connections.limit) at once; try again\n", headers: [("Retry-After", "1")]),
                    keepAlive: false, version: head.version, context: context)
                return
            }
            if tooLarge {
                write(limits.tooLarge(head.headers.first(name: "content-length")), keepAlive: false, version: head.version, context: context)
                return
            }
            let request = APIRequest(
                method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name.lowercased(), $0.value) }, body: body)
            body = []
            let promise = context.eventLoop.makePromise(of: APIResponse.self)
            let handler = self.handler
            inFlight = connections.spawn { promise.succeed(await handler(request)) }
            let version = head.version
            promise.futureResult.assumeIsolated().whenSuccess { [self] response in
                self.inFlight = nil
                self.write(response, keepAlive: keepAlive, version: version, context: context)
            }
        }
    }

    private func write(_ response: APIResponse, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        headers.replaceOrAdd(name: "Vary", value: "Accept-Encoding")
        headers.replaceOrAdd(name: "Date", value: Self.httpDate())
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            done.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client went away: stop what it was waiting for (a blocked query).
        inFlight?.cancel()
        inFlight = nil
        connections.leave(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private static func httpDate() -> String {
        var t = time(nil)
        var tmValue = tm()
        gmtime_r(&t, &tmValue)
        var buffer = [UInt8](repeating: 0, count: 64)
        let length = buffer.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { strftime($0, b.count, "%a, %d %b %Y %H:%M:%S GMT", &tmValue) }
        }
        return String(decoding: buffer[..<length], as: UTF8.self)
    }
}
