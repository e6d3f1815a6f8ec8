import BatonHTTP
import BatonConsulStore
import ConsulAPI
import Foundation
import Logging

/// The embedded, single-node, Consul-compatible server: Consul's HTTP API v1 (the subset in
/// consul-api.md) with Consul's semantics, durable in its data directory.
public final class ConsulServer: Sendable {
    public let settings: ServerSettings
    /// The address the server listens on (the actual port when 0 was asked for).
    public let localAddress: (host: String, port: Int)
    private let http: HTTPServer
    /// The fault-control listener (``FaultControl``), when asked for.
    private let faultHTTP: HTTPServer?
    /// The faults this server plays on request (nil unless started with a fault-control address).
    public let faults: FaultControl?
    /// Where the fault-control listener listens (the actual port when 0 was asked for).
    public let faultControlAddress: (host: String, port: Int)?
    let checkRunner: CheckRunner
    private let store: Store
    private let logger: Logger

    /// Opens the data directory (recovering from a crash if needed), then listens.
    /// - Parameters:
    ///   - host: the address to listen on, e.g. `127.0.0.1`.
    ///   - port: the port; 0 picks a free one (see ``localAddress``).
    ///   - dataDirectory: where the log and snapshot live; `nil` keeps everything in memory (tests only).
    ///   - faultControl: a loopback address (host, port) for the fault-control API (``FaultControl``);
    ///     nil serves none.
    /// - Throws: ``DataDirectoryError`` when the directory is unusable or in use; a socket error when
    ///   the address cannot be bound; ``FaultControlAddressError`` for a fault-control address that is
    ///   not loopback.
    public init(
        host: String, port: Int, dataDirectory: String?, settings: ServerSettings, faultControl: (host: String, port: Int)? = nil, logger: Logger
    ) async throws {
        if let faultControl, !FaultControlAddressError.isLoopback(faultControl.host) { throw FaultControlAddressError(host: faultControl.host) }
        self.settings = settings
        self.logger = logger
        let store = try await Store.open(dataDirectory: dataDirectory, logger: logger)
        let nodeID = ConsulServer.nodeID(dataDirectory: dataDirectory)
        self.store = store
        let runner = CheckRunner(store: store)
        self.checkRunner = runner
        let faults = faultControl.map { _ in FaultControl(store: store) }
        self.faults = faults
        let api = HTTPAPI(store: store, settings: settings, nodeID: nodeID, checkRunner: runner, faults: faults)
        let maxValueSize = settings.maxValueSize
        let limits = HTTPServer.Limits(
            maxBody: maxValueSize + 64 * 1024,
            tooLarge: { length in
                APIResponse.text(413, "Request body(\(length ?? "?") bytes) too large, max size: \(maxValueSize) bytes.")
            })
        http = try await HTTPServer(host: host, port: port, limits: limits, logger: logger) { await api.handle($0) }
        localAddress = http.localAddress
        if let faultControl, let faults {
            let control = try await HTTPServer(host: faultControl.host, port: faultControl.port, limits: HTTPServer.Limits(maxBody: 4096), logger: logger) {
                await faults.handle($0)
            }
            faultHTTP = control
            faultControlAddress = control.localAddress
            logger.warning("Fault control is on: this server misbehaves on request", metadata: ["consul.fault_control": "\(faultControl.host):\(control.localAddress.port)"])
        } else {
            faultHTTP = nil
            faultControlAddress = nil
        }
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
        await faultHTTP?.shutdown()
        await http.shutdown()
        store.close()
    }

    /// Waits until the listening socket closes.
    public func waitUntilClosed() async { await http.waitUntilClosed() }

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

/// A fault-control address that is not loopback: faults on request are for drills on one machine.
public struct FaultControlAddressError: Error, CustomStringConvertible {
    public var host: String
    public var description: String {
        "the fault-control address \(host) is not a loopback address; give 127.0.0.1:PORT (or [::1]:PORT): nobody off this machine may make Consul misbehave"
    }

    public static func isLoopback(_ host: String) -> Bool {
        host == "::1" || host == "localhost" || host.split(separator: ".").first == "127" && host.split(separator: ".").count == 4
    }
}

extension State {
    /// The index of the node's own registration; user writes come after it.
    static let bootIndex: UInt64 = 5
}

extension Store {
    /// The store of a data directory, recovered after a crash if need be (`nil`: in memory, empty),
    /// with the node's own health check written on first start.
    static func open(dataDirectory: String?, logger: Logger) async throws -> Store {
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
        return store
    }
}
