import ArgumentParser

@main
struct Baton: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "PostgreSQL high availability: one writable primary, and a baton passed on when it fails.",
        version: "0.1.0",
        subcommands: [BootstrapCommand.self, MonitorCommand.self, StatusCommand.self, ExplainCommand.self, EventsCommand.self, PauseCommand.self, ResumeCommand.self, SwitchoverCommand.self, FailoverCommand.self, RestartCommand.self, ReloadCommand.self, ReinitCommand.self, RemoveCommand.self, NodeTagCommand.self, ConfigCommand.self, ReportCommand.self, BackupCommand.self, BackupsCommand.self, CloneCommand.self, NotifyCommand.self, CheckCommand.self, PgBouncerAgentCommand.self, ConsulCommand.self]
    )
}
