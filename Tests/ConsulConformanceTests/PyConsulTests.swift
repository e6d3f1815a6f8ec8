import BatonConsul
import BatonTestSupport
import ConsulAPI
import Foundation
import Testing

/// A Consul client written by others, used unchanged: py-consul from PyPI (the library Patroni uses).
@Suite("Third-party client")
struct PyConsulTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("PyConsul/py_consul_client.py").path

    static var pyConsulInstalled: Bool {
        (try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import consul"]).status) == 0
    }

    @Test(
        "py-consul does KV, CAS, blocking, session, lock and health calls against `baton consul serve`",
        .enabled(
            if: pyConsulInstalled || ProcessInfo.processInfo.environment["CI"] != nil,
            "py-consul is not installed (pip install py-consul; .ci/run installs it)"))
    func pyConsul() async throws {
        let host: String
        let port: Int
        var server: BatonProcess? = nil
        let directory = Harness.temporaryDirectory()
        defer {
            server?.terminate()
            try? FileManager.default.removeItem(atPath: directory)
        }
        if let real = Target.realConsulAddress {
            let address = try ConsulAddress(parsing: real)
            (host, port) = (address.host, address.port)
        } else {
            port = try FreePort.pick()
            host = "127.0.0.1"
            server = try BatonProcess.start(["consul", "serve", "--listen", "127.0.0.1:\(port)", "--data-dir", directory])
            let client = ConsulClient(ConsulConfiguration(addresses: [try ConsulAddress(parsing: "127.0.0.1:\(port)")]))
            #expect(await eventually { (try? await client.leader()) != nil }, "server did not start: \(server?.output ?? "")")
        }
        let (status, output) = try await runCommand("/usr/bin/env", ["python3", Self.script, host, String(port)])
        #expect(status == 0, "py-consul failed:\n\(output)\nserver log:\n\(server?.output ?? "")")
    }
}
