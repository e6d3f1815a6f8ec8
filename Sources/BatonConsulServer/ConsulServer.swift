import ConsulAPI
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The embedded, single-node, Consul-compatible server: Consul's HTTP API v1 (the subset in
/// consul-api.md) with Consul's semantics, durable in its data directory.
public final class ConsulServer: Sendable {
    public let settings: ServerSettings
    /// The address the server listens on (the actual port when 0 was asked for).
    public let localAddress: (host: String, port: Int)
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup
    private let checkRunner: CheckRunner
    private let store: Store
    private let logger: Logger

    /// Opens the data directory (recovering from a crash if needed), then listens.
    /// - Parameters:
    ///   - host: the address to listen on, e.g. `127.0.0.1`.
    ///   - port: the port; 0 picks a free one (see ``localAddress``).
    ///   - dataDirectory: where the log and snapshot live; `nil` keeps everything in memory (tests only).
    /// - Throws: ``DataDirectoryError`` when the directory is unusable or in use; a socket error when
    ///   the address cannot be bound.
    public init(host: String, port: Int, dataDirectory: String?, settings: ServerSettings, logger: Logger) async throws {
        self.settings = settings
        self.logger = logger
        let now = ContinuousClock.now
        var state = State()
        var log: WriteAheadLog? = nil
        if let dataDirectory {
            let wal = try WriteAheadLog(directory: dataDirectory)
            let (recovered, note) = try wal.recover(now: now)
            if let note { logger.warning("Recovered the data directory", metadata: ["consul.recovery": "\(note)"]) }
            state = recovered
            log = wal
        }
        let fresh = state.index == 0
        if fresh { state.index = State.bootIndex - 1 }
        let nodeID = ConsulServer.nodeID(dataDirectory: dataDirectory)
        // Start every run from a fresh snapshot, so the log holds only this run's writes.
        if let log, !fresh { try log.compact(state) }
        let store = Store(log: log, initial: state)
        if fresh {
            let serf = CheckRecord(
                id: "serfHealth", name: "Serf Health Status", status: "passing", notes: "", output: "Agent alive and reachable",
                serviceID: "", serviceName: "", kind: .serf, interval: nil, timeout: nil, deregisterCriticalServiceAfter: nil,
                createIndex: State.bootIndex, modifyIndex: State.bootIndex)
            _ = try await store.write { _, _, _ in Plan([.checkPut(serf)], ()) }
        }
        self.store = store
        let runner = CheckRunner(store: store)
        self.checkRunner = runner
        let api = HTTPAPI(store: store, settings: settings, nodeID: nodeID, checkRunner: runner)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let maxBody = settings.maxValueSize + 64 * 1024
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
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true)
                        try channel.pipeline.syncOperations.addHandler(HTTPHandler(api: api, maxBody: maxBody))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        localAddress = (host, channel.localAddress?.port ?? port)
        runner.start()
        let index = (try? store.read { $0.index }) ?? 0
        logger.info(
            "Consul-compatible server listening",
            metadata: [
                "consul.address": "\(host):\(localAddress.port)", "consul.node": "\(settings.nodeName)",
                "consul.data_dir": "\(dataDirectory ?? "(memory)")", "consul.index": "\(index)",
                "consul.session_ttl_min": "\(settings.sessionTTLMin)",
            ])
    }

    /// Stops listening and stops the timers. Acknowledged writes are already on disk.
    public func shutdown() async {
        checkRunner.stop()
        try? await channel.close()
        try? await group.shutdownGracefully()
        store.close()
    }

    /// Waits until the listening socket closes.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }

    /// A node ID that stays the same across restarts with the same data directory.
    private static func nodeID(dataDirectory: String?) -> String {
        guard let dataDirectory else { return UUID().uuidString.lowercased() }
        let path = dataDirectory + "/node-id"
        if let existing = try? String(contentsOfFile: path, encoding: .utf8), UUID(uuidString: existing.trimmingCharacters(in: .whitespacesAndNewlines)) != nil {
            return existing.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let id = UUID().uuidString.lowercased()
        try? id.write(toFile: path, atomically: true, encoding: .utf8)
        return id
    }
}

extension State {
    /// The index of the node's own registration; user writes come after it.
    static let bootIndex: UInt64 = 5
}

/// Collects one HTTP request, hands it to the API on a task, and writes the answer back in order.
private final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: HTTPAPI
    private let maxBody: Int
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    private var inFlight: Task<Void, Never>?

    init(api: HTTPAPI, maxBody: Int) {
        self.api = api
        self.maxBody = maxBody
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            tooLarge = false
        case .body(var buffer):
            if body.count + buffer.readableBytes > maxBody {
                tooLarge = true
            } else if let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            if tooLarge {
                let response = APIResponse.text(
                    413, "Request body(\(head.headers.first(name: "content-length") ?? "?") bytes) too large, max size: \(api.settings.maxValueSize) bytes.")
                write(response, keepAlive: false, version: head.version, context: context)
                return
            }
            let request = APIRequest(
                method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name.lowercased(), $0.value) }, body: body)
            body = []
            let promise = context.eventLoop.makePromise(of: APIResponse.self)
            let api = self.api
            inFlight = Task { promise.succeed(await api.handle(request)) }
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
        headers.replaceOrAdd(name: "Date", value: HTTPHandler.httpDate())
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlushPromise()
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            done.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client went away: stop the blocked query it was waiting on.
        inFlight?.cancel()
        inFlight = nil
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

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise() -> EventLoopPromise<Void> { eventLoop.makePromise() }
}
