import BatonTestSupport
import Foundation
import Testing

/// Every `baton …` command shown in README and docs/ names a command `baton` has, with options it
/// takes: the documentation cannot drift from the command line (issue 25).
@Suite("documented commands")
struct DocumentedCommandsTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    /// A command of `baton --experimental-dump-help`: its long options and subcommands.
    struct Command {
        var options: Set<String>
        var subcommands: [String: Command]

        init(_ json: [String: Any]) {
            let arguments = json["arguments"] as? [[String: Any]] ?? []
            options = Set(arguments.flatMap { ($0["names"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String == "long" ? $0["name"] as? String : nil } })
            options.formUnion(["help", "version"])
            var subs: [String: Command] = [:]
            for sub in json["subcommands"] as? [[String: Any]] ?? [] { if let name = sub["commandName"] as? String { subs[name] = Command(sub) } }
            subcommands = subs
        }
    }

    /// The shell lines of the ```sh blocks of a Markdown text, continuation lines joined, comments cut.
    static func shellLines(_ markdown: String) -> [String] {
        var lines: [String] = []
        var inShell = false
        var pending = ""
        for raw in markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if raw.hasPrefix("```") {
                inShell = !inShell && (raw == "```sh" || raw == "```bash" || raw == "```")
                continue
            }
            guard inShell else { continue }
            var line = raw
            if let hash = line.range(of: " #") ?? (line.hasPrefix("#") ? line.range(of: "#") : nil) { line = String(line[..<hash.lowerBound]) }
            if line.hasSuffix("\\") {
                pending += line.dropLast() + " "
                continue
            }
            lines.append(pending + line)
            pending = ""
        }
        return lines
    }

    /// The inline code spans of a Markdown text outside its code blocks that start with `baton `.
    static func inlineCommands(_ markdown: String) -> [String] {
        var spans: [String] = []
        var inBlock = false
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") { inBlock.toggle(); continue }
            guard !inBlock else { continue }
            let parts = line.split(separator: "`", omittingEmptySubsequences: false)
            for (i, part) in parts.enumerated() where i % 2 == 1 && part.hasPrefix("baton ") { spans.append(String(part)) }
        }
        return spans
    }

    /// Each `baton …` invocation in a shell line: its words up to the next `|`, `&&`, `;` or `)`.
    static func invocations(_ line: String) -> [[String]] {
        var out: [[String]] = []
        for piece in line.replacingOccurrences(of: "&&", with: "|").replacingOccurrences(of: ";", with: "|").replacingOccurrences(of: "$(", with: "|")
            .split(separator: "|")
        {
            var words = piece.split(separator: " ").map { String($0).trimmingCharacters(in: CharacterSet(charactersIn: "[]()")) }.filter { !$0.isEmpty }
            while let first = words.first, first == "sudo" || first.contains("=") && !first.hasPrefix("-") { words.removeFirst() }
            guard let first = words.first, first == "baton" || first.hasSuffix("/baton") || first == "\"$baton\"" else { continue }
            out.append(Array(words.dropFirst()))
        }
        return out
    }

    @Test("every baton command in README and docs/ exists, with the options it is shown with")
    func documentedCommandsExist() async throws {
        let help = try await runCommand(BatonProcess.executable, ["--experimental-dump-help"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(help.output.utf8)) as? [String: Any])
        let baton = Command(try #require(json["command"] as? [String: Any]))
        let docs = try FileManager.default.contentsOfDirectory(atPath: Self.repository + "/docs").filter { $0.hasSuffix(".md") }.map { "docs/" + $0 }
        var checked = 0
        for file in ["README.md"] + docs {
            let text = try String(contentsOfFile: Self.repository + "/" + file, encoding: .utf8)
            for line in Self.shellLines(text) + Self.inlineCommands(text) {
                for words in Self.invocations(line) {
                    var command = baton
                    var path: [String] = []
                    var rest = words[...]
                    while let word = rest.first, let sub = command.subcommands[word] {
                        command = sub
                        path.append(word)
                        rest = rest.dropFirst()
                    }
                    #expect(!path.isEmpty || rest.first?.hasPrefix("--") == true, "\(file): `baton \(words.joined(separator: " "))`: no such command")
                    for word in rest where word.hasPrefix("--") && word.count > 2 {
                        let name = String(word.dropFirst(2).prefix { $0 != "=" })
                        #expect(command.options.contains(name), "\(file): `baton \(path.joined(separator: " "))` has no --\(name) (in: \(line.trimmingCharacters(in: .whitespaces)))")
                    }
                    checked += 1
                }
            }
        }
        #expect(checked >= 40, "only \(checked) documented baton commands found")
        print("checked \(checked) documented baton commands")
    }
}
