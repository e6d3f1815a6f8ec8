import BatonConsul
import BatonConsulStore
import BatonHTTP
import ConsulAPI
import Logging

/// The embedded server without a listener: its API, store and timers in this process, in memory,
/// answering a ``ConsulClient`` as its ``ConsulTransport`` — no socket, no libcurl, no port to pick.
///
/// Every request goes through the server's own request handling (routing, validation, ``Operations``,
/// blocking queries, session timers), so a daemon's shell run against it meets the same Consul as over
/// HTTP, and the client's own code (request building, error mapping, retries of a 500) runs too.
/// ``faults`` plays Consul's everyday trouble (an election, a hang, slow answers, an agent restart) on
/// request. What tests of the monitor's shell run against; the daemons use ``CurlTransport``.
public final class InProcessConsul: ConsulTransport {
    public let settings: ServerSettings
    /// Consul's trouble on request (``FaultControl``): none until asked.
    public let faults: FaultControl
    private let api: HTTPAPI
    private let store: Store
    private let checkRunner: CheckRunner

    public init(settings: ServerSettings = ServerSettings(), logger: Logger) async throws {
        self.settings = settings
        let store = try await Store.open(dataDirectory: nil, logger: logger)
        self.store = store
        let runner = CheckRunner(store: store)
        self.checkRunner = runner
        let faults = FaultControl(store: store)
        self.faults = faults
        self.api = HTTPAPI(store: store, settings: settings, nodeID: "00000000-0000-0000-0000-000000000000", checkRunner: runner, faults: faults)
        runner.start()
    }

    /// Stops the timers; later requests are refused (writes) or answered from what is in memory.
    public func shutdown() {
        checkRunner.stop()
        store.close()
    }

    /// A client whose requests this server answers, giving up on each after `requestTimeout`.
    public func client(requestTimeout: Duration = .seconds(10)) -> ConsulClient {
        let configuration = ConsulConfiguration(addresses: [Self.address], token: settings.aclToken.map(Secret.init), requestTimeout: requestTimeout)
        return ConsulClient(configuration, transport: self)
    }

    /// The address requests name (never dialled).
    static let address = try! ConsulAddress(parsing: "http://in-process:8500")

    /// Hands `request` to the server's API and returns its answer, or gives up after its timeout as a
    /// network client would (the server's work for it is cancelled).
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard let scheme = request.url.range(of: "://"), let path = request.url[scheme.upperBound...].firstIndex(of: "/") else {
            throw TransportError(message: "\(request.url) is not an http URL with a path", timedOut: false)
        }
        let call = APIRequest(
            method: request.method, uri: String(request.url[path...]), headers: request.headers.map { ($0.0.lowercased(), $0.1) },
            body: request.body ?? [])
        let api = self.api
        let answer: APIResponse? = try await withThrowingTaskGroup(of: APIResponse?.self) { group in
            group.addTask { await api.handle(call) }
            group.addTask {
                try await Task.sleep(for: request.timeout)
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
        guard let answer else {
            throw TransportError(message: "the in-process Consul did not answer within \(request.timeout)", timedOut: true)
        }
        var headers: [String: String] = [:]
        for (name, value) in answer.headers { headers[name.lowercased()] = value }
        return HTTPResponse(status: answer.status, headers: headers, body: answer.body)
    }
}
