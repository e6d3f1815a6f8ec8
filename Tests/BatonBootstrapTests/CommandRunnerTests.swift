import BatonPostgres
import Foundation
import Synchronization
import Testing

struct CommandRunnerTests {
    /// The runner's temporary files in the temporary directory.
    func leftovers() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("baton-cmd-") }
    }

    @Test("a command gets its input, its status and combined output come back; no temporary file is visible, even while it runs")
    func runsWithoutLeftovers() async throws {
        let before = Set(try leftovers())
        async let running = CommandRunner().run("/bin/sh", ["-c", "cat; echo to-stderr >&2; sleep 1; exit 3"], input: "from-stdin\n")
        try await Task.sleep(for: .milliseconds(300))
        // A monitor killed (kill -9) while it waits for a command must not leave its files behind.
        #expect(Set(try leftovers()).subtracting(before).isEmpty, "files visible while the command runs")
        let result = try await running
        #expect(result.status == 3)
        #expect(result.output == "from-stdin\nto-stderr\n")
        #expect(Set(try leftovers()).subtracting(before).isEmpty)
    }

    @Test("a long command's output lines are heard as they come, before it ends, and all of them")
    func progressAsItComes() async throws {
        // The command goes on only once its first line was heard: it never ends unless lines stream.
        let go = NSTemporaryDirectory() + "baton-go-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: go) }
        let heard = Mutex<[String]>([])
        let result = try await CommandRunner().run(
            "/bin/sh", ["-c", "echo one; while [ ! -e \(go) ]; do sleep 0.05; done; printf 'two\\nthree'"], timeout: .seconds(30)
        ) { line in
            heard.withLock { $0.append(line) }
            if line == "one" { FileManager.default.createFile(atPath: go, contents: nil) }
        }
        #expect(result.succeeded, "the command waited for a line nobody heard (status \(result.status))")
        #expect(heard.withLock { $0 } == ["one", "two", "three"])
    }

    @Test("only the last 64 KiB of a long output are kept")
    func keepsTheTail() async throws {
        let result = try await CommandRunner().run("/bin/sh", ["-c", "head -c 100000 /dev/zero | tr '\\0' a; echo END"])
        #expect(result.succeeded)
        #expect(result.output.utf8.count == 64 << 10)
        #expect(result.output.hasSuffix("aaaEND\n"))
    }
}
