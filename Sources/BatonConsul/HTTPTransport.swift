import CCurl
import Foundation
import Synchronization

/// One HTTP request, as the Consul client sends it.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    /// The whole exchange must finish within this time (a blocking query's `wait` plus slack).
    public var timeout: Duration

    public init(method: String, url: String, headers: [(String, String)] = [], body: [UInt8]? = nil, timeout: Duration) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// An HTTP answer: status, headers (names lower-cased) and body.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]

    public init(status: Int, headers: [String: String], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? { headers[name.lowercased()] }
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Certificates for HTTPS, as CONSUL_CACERT, CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY give them.
public struct TLSFiles: Sendable, Equatable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// Why a request got no HTTP answer.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var timedOut: Bool
    public var description: String { message }

    public init(message: String, timedOut: Bool) {
        self.message = message
        self.timedOut = timedOut
    }
}

/// Carries one request to Consul and brings its answer back: libcurl over the network (``CurlTransport``,
/// what every daemon and command uses), or the embedded server's own API in this process, no socket
/// (BatonConsulServer's `InProcessConsul`, what tests of the monitor's shell run against).
public protocol ConsulTransport: Sendable {
    /// Sends `request` and waits for the whole answer.
    /// - Throws: ``TransportError`` when no answer came within `request.timeout`; `CancellationError`
    ///   when the calling task was cancelled.
    func send(_ request: HTTPRequest) async throws -> HTTPResponse
}

/// An HTTP/1.1 client on libcurl's multi interface: one thread drives every transfer, so a hundred
/// blocked long-polls cost no thread each, connections are kept alive and reused, and a cancelled
/// Swift task aborts its transfer at once.
public final class CurlTransport: ConsulTransport {
    private let engine: CurlEngine
    private let tls: TLSFiles

    public init(tls: TLSFiles = TLSFiles()) {
        self.engine = CurlEngine.shared
        self.tls = tls
    }

    /// Sends `request` and waits for the whole answer.
    /// - Throws: ``TransportError`` when no answer came (refused, reset, timed out, TLS failure);
    ///   `CancellationError` when the calling task was cancelled.
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        let transfer = try Transfer(request: request, tls: tls)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                transfer.continuation = continuation
                engine.submit(.add(transfer))
            }
        } onCancel: {
            engine.submit(.cancel(transfer))
        }
    }
}

/// The state of one transfer. Touched by the submitting task until `submit`, then only by the engine
/// thread, so it needs no lock.
private final class Transfer: @unchecked Sendable {
    let easy: UnsafeMutableRawPointer
    var headerList: UnsafeMutablePointer<curl_slist>?
    var continuation: CheckedContinuation<HTTPResponse, any Error>?
    var body: [UInt8] = []
    var headers: [String: String] = [:]
    let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return buffer
    }()
    let url: String

    init(request: HTTPRequest, tls: TLSFiles) throws {
        guard let easy = curl_easy_init() else { throw TransportError(message: "libcurl could not start a transfer", timedOut: false) }
        self.easy = easy
        self.url = request.url
        baton_curl_setopt_string(easy, CURLOPT_URL, request.url)
        baton_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        baton_curl_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        let ms = request.timeout.millisecondCount
        baton_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(max(ms, 1)))
        baton_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(min(max(ms, 1), 3000)))
        switch request.method {
        case "GET":
            baton_curl_setopt_long(easy, CURLOPT_HTTPGET, 1)
        case "HEAD":
            baton_curl_setopt_long(easy, CURLOPT_NOBODY, 1)
        default:
            baton_curl_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method)
            let payload = request.body ?? []
            baton_curl_setopt_long(easy, CURLOPT_POSTFIELDSIZE, payload.count)
            payload.withUnsafeBufferPointer { buffer in
                // COPYPOSTFIELDS copies, so the bytes need not outlive this call; an empty body still
                // needs a valid pointer.
                let empty: [CChar] = [0]
                if buffer.count == 0 {
                    empty.withUnsafeBufferPointer { _ = baton_curl_setopt_string(easy, CURLOPT_COPYPOSTFIELDS, $0.baseAddress) }
                } else {
                    buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                        _ = baton_curl_setopt_string(easy, CURLOPT_COPYPOSTFIELDS, $0)
                    }
                }
            }
        }
        var list: UnsafeMutablePointer<curl_slist>? = nil
        var sawContentType = false
        for (name, value) in request.headers {
            if name.lowercased() == "content-type" { sawContentType = true }
            list = curl_slist_append(list, "\(name): \(value)")
        }
        // curl would otherwise label bodies as a form and wait for 100-continue on large ones.
        if !sawContentType { list = curl_slist_append(list, "Content-Type:") }
        list = curl_slist_append(list, "Expect:")
        headerList = list
        baton_curl_setopt_slist(easy, CURLOPT_HTTPHEADER, list)
        if let ca = tls.caFile { baton_curl_setopt_string(easy, CURLOPT_CAINFO, ca) }
        if let cert = tls.certFile { baton_curl_setopt_string(easy, CURLOPT_SSLCERT, cert) }
        if let key = tls.keyFile { baton_curl_setopt_string(easy, CURLOPT_SSLKEY, key) }
        baton_curl_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer)
        let me = Unmanaged.passUnretained(self).toOpaque()
        baton_curl_setopt_pointer(easy, CURLOPT_WRITEDATA, me)
        baton_curl_setopt_datafn(easy, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
            let n = size * count
            data!.withMemoryRebound(to: UInt8.self, capacity: n) {
                transfer.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: n))
            }
            return n
        }
        baton_curl_setopt_pointer(easy, CURLOPT_HEADERDATA, me)
        baton_curl_setopt_datafn(easy, CURLOPT_HEADERFUNCTION) { data, size, count, context in
            let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
            let n = size * count
            let line = data!.withMemoryRebound(to: UInt8.self, capacity: n) {
                String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self)
            }
            if line.hasPrefix("HTTP/") {
                transfer.headers = [:]  // a new response (after a 100 Continue or a redirect)
            } else if let colon = line.firstIndex(of: ":") {
                let name = line[..<colon].lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
                transfer.headers[name] = value
            }
            return n
        }
    }

    func errorText(_ code: CURLcode) -> String {
        let detail = String(cString: errorBuffer)
        return detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
    }

    func cleanup() {
        curl_easy_cleanup(easy)
        curl_slist_free_all(headerList)
        headerList = nil
    }

    deinit { errorBuffer.deallocate() }
}

private enum EngineCommand: @unchecked Sendable {
    case add(Transfer)
    case cancel(Transfer)
}

/// The thread that drives libcurl's multi handle.
private final class CurlEngine: @unchecked Sendable {
    // @unchecked: `multi` and `active` are touched only by the engine thread; `pending` is guarded by
    // its Mutex, and curl_multi_wakeup is documented as callable from any thread.
    static let shared = CurlEngine()

    private let multi: UnsafeMutableRawPointer
    private let pending = Mutex<[EngineCommand]>([])
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]

    private init() {
        curl_global_init(Int(CURL_GLOBAL_ALL))
        multi = curl_multi_init()
        let thread = Thread { [self] in self.loop() }
        thread.name = "baton.curl"
        thread.start()
    }

    func submit(_ command: EngineCommand) {
        pending.withLock { $0.append(command) }
        curl_multi_wakeup(multi)
    }

    private func loop() {
        while true {
            let commands = pending.withLock { queue -> [EngineCommand] in
                defer { queue.removeAll() }
                return queue
            }
            for command in commands {
                switch command {
                case .add(let transfer):
                    active[transfer.easy] = transfer
                    curl_multi_add_handle(multi, transfer.easy)
                case .cancel(let transfer):
                    guard active.removeValue(forKey: transfer.easy) != nil else { continue }
                    curl_multi_remove_handle(multi, transfer.easy)
                    transfer.cleanup()
                    transfer.continuation?.resume(throwing: CancellationError())
                    transfer.continuation = nil
                }
            }
            var running: Int32 = 0
            curl_multi_perform(multi, &running)
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle,
                    let transfer = active.removeValue(forKey: easy)
                else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, easy)
                if code == CURLE_OK {
                    var status = 0
                    baton_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
                    transfer.continuation?.resume(
                        returning: HTTPResponse(status: status, headers: transfer.headers, body: transfer.body))
                } else {
                    transfer.continuation?.resume(
                        throwing: TransportError(
                            message: transfer.errorText(code), timedOut: code == CURLE_OPERATION_TIMEDOUT))
                }
                transfer.continuation = nil
                transfer.cleanup()
            }
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
    }
}
