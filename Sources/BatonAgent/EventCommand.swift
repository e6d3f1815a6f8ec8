import BatonCore
import BatonPostgres
import Foundation
import Logging

/// Runs the node's `event-command` with each event the monitor records, like repmgr's
/// event_notification_command, without ever holding up the monitor: events queue (at most
/// ``capacity``; beyond that the oldest waiting one is dropped and logged) and ``run()`` — a child task
/// of the monitor — runs them in order, each killed after `timeout` (10 s unless told). The program
/// gets the event as separate arguments — `KIND NODE TIME DETAIL` — and in `BATON_*` variables; no
/// shell ever parses them.
public final class EventCommand: Sendable {
    public static let capacity = 32

    private let events: AsyncStream<ClusterEvent>
    private let continuation: AsyncStream<ClusterEvent>.Continuation
    private let logger: Logger
    private let program: String
    private let cluster: ClusterName
    private let timeout: Duration
    private let runner: CommandRunner

    public init(program: String, cluster: ClusterName, logger: Logger, timeout: Duration = .seconds(10), runner: CommandRunner = CommandRunner()) {
        (events, continuation) = AsyncStream<ClusterEvent>.makeStream(bufferingPolicy: .bufferingNewest(Self.capacity))
        self.logger = logger
        self.program = program
        self.cluster = cluster
        self.timeout = timeout
        self.runner = runner
    }

    /// Runs the queued events one at a time until ``finish()`` (then what is queued) or cancellation.
    public func run() async {
        for await event in events {
            let arguments = Self.arguments(event)
            let environment = [
                "BATON_CLUSTER": cluster.value, "BATON_EVENT_KIND": arguments[0], "BATON_EVENT_NODE": arguments[1],
                "BATON_EVENT_TIME": arguments[2], "BATON_EVENT_DETAIL": arguments[3],
            ]
            do {
                let result = try await runner.run(program, arguments, environment: environment, timeout: timeout)
                if !result.succeeded {
                    logger.warning(
                        "The event command failed", metadata: ["event.kind": "\(event.kind)", "exit": "\(result.status)", "output": "\(result.output.suffix(500))"])
                }
            } catch {
                logger.warning("Cannot run the event command", metadata: ["event.kind": "\(event.kind)", "error": "\(error)"])
            }
        }
    }

    /// Queues the event; returns at once.
    public func submit(_ event: ClusterEvent) {
        if case .dropped(let oldest) = continuation.yield(event) {
            logger.warning("Event command queue full; dropped the oldest event", metadata: ["event.kind": "\(oldest.kind)", "event.time": "\(oldest.time)"])
        }
    }

    /// No more events: ``run()`` returns once it ran what is queued.
    public func finish() {
        continuation.finish()
    }

    /// The program's arguments: kind, node, time, and the detail with control characters replaced, so
    /// that a scripted reader sees one line per field.
    public static func arguments(_ event: ClusterEvent) -> [String] {
        let detail = String(String.UnicodeScalarView(event.detail.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : $0 }))
        return [event.kind, event.node.value, event.time, detail]
    }
}
