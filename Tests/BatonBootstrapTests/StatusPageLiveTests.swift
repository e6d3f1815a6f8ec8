import BatonCore
import BatonTestSupport
import Foundation
import Testing

extension MonitorLiveTests {
    /// Debian's chromium (`.ci/run` installs it), headless.
    static let chromiumPath = "/usr/bin/chromium"

    /// Runs headless Chromium on `url` with `arguments` (`--dump-dom`, `--screenshot=…`), bounded to 60 s.
    func browse(_ c: LiveCluster, _ arguments: [String], _ url: String) async throws -> (status: Int32, output: String) {
        try await runCommand(
            "/usr/bin/timeout",
            ["60", Self.chromiumPath, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + c.root + "/chromium", "--no-first-run"] + arguments + [url])
    }

    @Test("the status page (GET /) in a real browser: it renders the leader and the verdict, and follows a failover")
    func statusPageInABrowser() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.chromiumPath), "chromium is missing: apt-get install chromium (.ci/run does)")
        try await LiveCluster.with { c in
            let nodes = try await threeNodes(c)
            let url = "http://127.0.0.1:\(c.apiPort("pg2"))/"
            let leading = await eventually(timeout: .seconds(15)) {
                guard await apiStatus(c, "pg1", "/primary") == 200 else { return false }
                return (try? await c.leader()) == "pg1"
            }
            #expect(leading)
            let before = try await browse(c, ["--dump-dom"], url)
            #expect(before.output.contains(#"<span id="leader-name">pg1</span>"#), "\(before.output.suffix(3000))")
            #expect(before.output.contains(#"<tr class="leader" data-node="pg1">"#) && before.output.contains("would take over"))
            // The screenshot stays with the test's output.
            let screenshot = FileManager.default.temporaryDirectory.appendingPathComponent("baton-status-page.png").path
            let shot = try await browse(c, ["--screenshot=" + screenshot, "--window-size=1400,900", "--hide-scrollbars"], url)
            let size = (try? FileManager.default.attributesOfItem(atPath: screenshot)[.size] as? Int) ?? 0
            #expect(size > 10_000, "no screenshot: \(shot.output.suffix(2000))")
            print("status page screenshot: \(screenshot) (\(size) bytes)")

            kill(try postmasterPID(c, "pg1"), SIGKILL)
            let newLeader = try #require(await newWritableLeader(c, nodes, replacing: "pg1"))
            let followed = await eventually(timeout: .seconds(15)) {
                let after = try? await browse(c, ["--dump-dom"], "http://127.0.0.1:\(c.apiPort(newLeader == "pg2" ? "pg3" : "pg2"))/")
                return after?.output.contains(#"<span id="leader-name">\#(newLeader)</span>"#) == true && after?.output.contains("<td>promote</td>") == true
            }
            #expect(followed, "the page never showed \(newLeader) leading")
        }
    }
}
