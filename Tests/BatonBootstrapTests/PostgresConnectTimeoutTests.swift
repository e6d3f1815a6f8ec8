import BatonPostgres
import BatonTestSupport
import Foundation
import Testing

@Suite("PostgreSQL connections bounded in time")
struct PostgresConnectTimeoutTests {
    /// A listening socket that never accepts: the kernel completes TCP handshakes into its backlog and
    /// nothing ever answers the startup packet — a frozen machine, as a client sees it.
    final class SilentListener {
        let fd: Int32
        let port: Int
        init() throws {
            port = try FreePort.pick()
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard FreePort.bindLoopback(fd, port: port), listen(fd, 16) == 0 else { throw TestSupportError("cannot listen on 127.0.0.1:\(port)") }
        }
        deinit { close(fd) }
    }

    @Test("a server that accepts TCP but never answers: connect(timeout:) gives up after its timeout, under libpq's 2 s minimum, and says so (SQLSTATE 08001)")
    func silentServer() async throws {
        let listener = try SilentListener()
        let conninfo = ConnInfo.make([("host", "127.0.0.1"), ("port", String(listener.port)), ("user", "nobody"), ("dbname", "postgres")])
        let started = ContinuousClock.now
        do {
            _ = try await PostgresConnection.connect(conninfo, timeout: .milliseconds(300))
            Issue.record("a server that never answers let the connection in")
        } catch let error as PostgresError {
            #expect(error.sqlState == "08001", "\(error)")
            #expect(error.message.contains("within"), "\(error)")
        }
        let took = ContinuousClock.now - started
        // Not a speed figure: whether the bound is this call's and not libpq's (2 s at least).
        #expect(took >= .milliseconds(300) && took < .milliseconds(1900), "gave up after \(took)")
    }

    @Test("nothing listening: connect(timeout:) fails at once with libpq's own message, not as a timeout")
    func refused() async throws {
        let port = try FreePort.pick()
        let conninfo = ConnInfo.make([("host", "127.0.0.1"), ("port", String(port)), ("user", "nobody"), ("dbname", "postgres")])
        do {
            _ = try await PostgresConnection.connect(conninfo, timeout: .seconds(5))
            Issue.record("connected to a port nobody listens on")
        } catch let error as PostgresError {
            #expect(error.sqlState == nil, "\(error)")
            #expect(error.message.contains("refused"), "\(error)")
        }
    }
}
