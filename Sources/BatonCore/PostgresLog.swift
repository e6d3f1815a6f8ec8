/// What a PostgreSQL server log says about why the server stopped, for an error message.
public enum PostgresLog {
    /// The last FATAL or PANIC lines (the reason; the lines after them only say that it shut down) and
    /// then the log's last lines, each once, joined with ` | `.
    public static func reason(_ log: String, lines count: Int = 2) -> String {
        let lines = log.split(separator: "\n").map(String.init)
        let fatal = lines.filter { $0.contains("FATAL:") || $0.contains("PANIC:") }.suffix(count)
        var seen = Set<String>()
        return (fatal + lines.suffix(count)).filter { seen.insert($0).inserted }.joined(separator: " | ")
    }
}
