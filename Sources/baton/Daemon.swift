import BatonAgent
import Logging
import ServiceLifecycle

/// How the long-running commands run: their service until SIGTERM or SIGINT, beside the trimmer that
/// keeps their resident code to what they run.
enum Daemon {
    static func run(_ service: some Service, logger: Logger) async throws {
        try await ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service), .init(service: ResidentCodeTrimmer(logger: logger), successTerminationBehavior: .ignore)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        ).run()
    }
}
