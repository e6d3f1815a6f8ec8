import CBatonSpawn
import CLibPQ
import Dispatch
import Foundation

/// Why a PostgreSQL call failed. Never contains a password: conninfo strings are not echoed.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// The server's SQLSTATE, when the server answered.
    public var sqlState: String?
    public var message: String
    public init(sqlState: String? = nil, _ message: String) {
        self.sqlState = sqlState
        self.message = message
    }
    public var description: String { message }
}

/// One libpq connection. libpq calls block, so every call runs on the connection's own serial queue
/// and the caller awaits it: a slow server never stalls Swift's cooperative threads (the Consul session
/// renewal among them).
public final class PostgresConnection: @unchecked Sendable {
    // @unchecked: `raw` is touched only on `queue`.
    private let queue: DispatchQueue
    private var raw: OpaquePointer?

    private init(raw: OpaquePointer, queue: DispatchQueue) {
        self.raw = raw
        self.queue = queue
    }

    /// Connects with a libpq connection string (keywords, e.g. `host=/run/postgresql port=5432
    /// user=postgres dbname=postgres connect_timeout=3`).
    /// - Throws: ``PostgresError`` with libpq's message when the connection fails.
    public static func connect(_ conninfo: String) async throws -> PostgresConnection {
        let queue = DispatchQueue(label: "baton.pq")
        return try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: established(PQconnectdb(conninfo), queue: queue)) }
        }
    }

    /// Connects like ``connect(_:)`` but gives up after `timeout`, which may be under a second (libpq's
    /// own `connect_timeout` is whole seconds, at least 2): a server that accepts TCP but never answers
    /// — a frozen machine — costs no more than `timeout`. The error then has SQLSTATE 08001 and says so;
    /// a server that answered with a refusal gives its own message.
    public static func connect(_ conninfo: String, timeout: Duration) async throws -> PostgresConnection {
        let queue = DispatchQueue(label: "baton.pq")
        return try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: polledConnect(conninfo, deadline: ContinuousClock.now + timeout, timeout: timeout, queue: queue)) }
        }
    }

    /// libpq's non-blocking connect (PQconnectStart, then PQconnectPoll whenever the socket is ready)
    /// with a deadline of the caller's.
    private static func polledConnect(_ conninfo: String, deadline: ContinuousClock.Instant, timeout: Duration, queue: DispatchQueue) -> Result<PostgresConnection, Error> {
        guard let conn = PQconnectStart(conninfo) else { return .failure(PostgresError("libpq could not allocate a connection")) }
        guard PQstatus(conn) != CONNECTION_BAD else { return established(conn, queue: queue) }
        var state = PGRES_POLLING_WRITING  // libpq's documented first step after PQconnectStart
        while state != PGRES_POLLING_OK, state != PGRES_POLLING_FAILED {
            let left = deadline - ContinuousClock.now
            var pfd = pollfd(fd: PQsocket(conn), events: Int16(state == PGRES_POLLING_READING ? POLLIN : POLLOUT), revents: 0)
            guard left > .zero, pfd.fd >= 0 else {
                PQfinish(conn)
                return .failure(PostgresError(sqlState: "08001", "PostgreSQL did not let this connection in within \(timeout)"))
            }
            let milliseconds = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000
            // Not ready yet (or interrupted): the deadline is looked at again.
            guard poll(&pfd, 1, Int32(max(1, min(milliseconds, 1000)))) > 0 else { continue }
            state = PQconnectPoll(conn)
        }
        return established(conn, queue: queue)
    }

    /// Connects over a Unix socket with the peer credentials of `uid` instead of this process's
    /// (pgbouncer lets its own OS user into the admin console without a password): the connecting
    /// thread alone takes that effective user ID for the call, then returns to its own.
    public static func connect(_ conninfo: String, asUID uid: uid_t) async throws -> PostgresConnection {
        guard geteuid() == 0, uid != geteuid() else { return try await connect(conninfo) }
        let queue = DispatchQueue(label: "baton.pq")
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                let switched = baton_thread_set_euid(uid)
                guard switched == 0 else {
                    continuation.resume(throwing: PostgresError("cannot take user ID \(uid) to connect: \(String(cString: strerror(-switched)))"))
                    return
                }
                let conn = PQconnectdb(conninfo)
                let restored = baton_thread_set_euid(0)
                precondition(restored == 0, "a thread could not return to root after connecting as another user")
                continuation.resume(with: established(conn, queue: queue))
            }
        }
    }

    /// The outcome of a PQconnectdb: the connection, or libpq's message (and the handle freed).
    private static func established(_ conn: OpaquePointer?, queue: DispatchQueue) -> Result<PostgresConnection, Error> {
        guard let conn else { return .failure(PostgresError("libpq could not allocate a connection")) }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
            PQfinish(conn)
            return .failure(PostgresError(message))
        }
        return .success(PostgresConnection(raw: conn, queue: queue))
    }

    /// Runs `sql` with the simple query protocol (no parameters): what pgbouncer's admin console
    /// speaks.
    @discardableResult
    public func simpleQuery(_ sql: String) async throws -> [[String?]] {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(
                    with: Result {
                        guard let raw = self.raw else { throw PostgresError("the connection is closed") }
                        return try Self.rows(PQexec(raw, sql), raw)
                    })
            }
        }
    }

    /// Waits until the server closes this (idle) connection or sends something on it unasked — a
    /// shutdown, a crash, a terminated backend — or until `cancelled` says stop (looked at every 250 ms).
    /// Never reads. On a thread of its own, not the connection's queue: a wait that lasts as long as
    /// PostgreSQL runs must not hold a worker of the dispatch pool every connection's queries share.
    public func waitUntilServerSpeaks(cancelled: @escaping @Sendable () -> Bool) async {
        let fd = queue.sync { raw.map { PQsocket($0) } ?? -1 }
        guard fd >= 0 else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                while !cancelled() {
                    pfd.revents = 0
                    if poll(&pfd, 1, 250) != 0 { break }
                }
                continuation.resume()
            }
        }
    }

    /// Asks the server to cancel what this connection is running (safe from any thread).
    public func cancel() {
        // `raw` may be read here while the queue runs a query: PQgetCancel is documented thread-safe.
        guard let raw, let handle = PQgetCancel(raw) else { return }
        var buffer = [CChar](repeating: 0, count: 256)
        _ = PQcancel(handle, &buffer, Int32(buffer.count))
        PQfreeCancel(handle)
    }

    /// Runs `sql` with text parameters ($1, $2, …) and returns the rows, each column as text or `nil`
    /// for NULL.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) async throws -> [[String?]] {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.blockingQuery(sql, parameters) })
            }
        }
    }

    /// Runs `sql` like ``query(_:_:)`` but gives up after `timeout` even when the server does not answer
    /// at all (stopped, stalled on I/O: its own statement_timeout cannot fire then). On timeout the
    /// query is cancelled and the connection closed; the error says so.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = [], timeout: Duration) async throws -> [[String?]] {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try self.boundedQuery(sql, parameters, deadline: ContinuousClock.now + timeout, timeout: timeout) })
            }
        }
    }

    /// ``query(_:_:timeout:)``, and when its answer arrived: the instant taken on the thread that received
    /// it, not when the awaiting task resumed (which, on a busy machine, can be much later).
    public func timedQuery(_ sql: String, _ parameters: [String?] = [], timeout: Duration) async throws
        -> (rows: [[String?]], arrived: ContinuousClock.Instant)
    {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(
                    with: Result {
                        let rows = try self.boundedQuery(sql, parameters, deadline: ContinuousClock.now + timeout, timeout: timeout)
                        return (rows, ContinuousClock.now)
                    })
            }
        }
    }

    /// The first column of the first row, or `nil`.
    public func scalar(_ sql: String, _ parameters: [String?] = []) async throws -> String? {
        try await query(sql, parameters).first?.first ?? nil
    }

    /// A password verifier computed by libpq on this side (SCRAM-SHA-256), so that the plaintext never
    /// reaches the server, its logs or its statistics.
    public func scramVerifier(password: String, role: String) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                guard let raw = self.raw, let encrypted = PQencryptPasswordConn(raw, password, role, "scram-sha-256") else {
                    continuation.resume(throwing: PostgresError("libpq could not compute a SCRAM verifier"))
                    return
                }
                let verifier = String(cString: encrypted)
                PQfreemem(encrypted)
                continuation.resume(returning: verifier)
            }
        }
    }

    /// Closes the connection.
    public func close() {
        queue.sync {
            if let raw { PQfinish(raw) }
            raw = nil
        }
    }

    deinit {
        if let raw { PQfinish(raw) }
    }

    /// ``simpleQuery(_:)`` bounded like ``query(_:_:timeout:)``: past `timeout` the query is cancelled
    /// and the connection closed, and the error (SQLSTATE 57014) says so.
    @discardableResult
    public func simpleQuery(_ sql: String, timeout: Duration) async throws -> [[String?]] {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(
                    with: Result { try self.bounded(deadline: ContinuousClock.now + timeout, timeout: timeout) { PQsendQuery($0, sql) } })
            }
        }
    }

    /// Whether the server still answers: `SELECT 1`, given up after `timeout` — then the connection
    /// is closed and the error (SQLSTATE 57014) says so. Unlike a bounded query it sends no cancel
    /// request on timeout: that opens a connection of its own and waits for the server's answer, which
    /// a machine that went silent never gives.
    public func ping(timeout: Duration) async throws {
        _ = try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(
                    with: Result { try self.bounded(deadline: ContinuousClock.now + timeout, timeout: timeout, cancelling: false) { PQsendQuery($0, "SELECT 1") } })
            }
        }
    }

    /// Sends the query, then waits on the socket until the whole answer is in or the deadline passes.
    private func boundedQuery(_ sql: String, _ parameters: [String?], deadline: ContinuousClock.Instant, timeout: Duration) throws -> [[String?]] {
        let cStrings: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        return try bounded(deadline: deadline, timeout: timeout) { raw in
            cStrings.withUnsafeBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buffer.count, 1)) { values in
                    PQsendQueryParams(raw, sql, Int32(parameters.count), nil, parameters.isEmpty ? nil : values, nil, nil, 0)
                }
            }
        }
    }

    /// Sends with `send`, then waits on the socket until the whole answer is in or the deadline passes.
    private func bounded(deadline: ContinuousClock.Instant, timeout: Duration, cancelling: Bool = true, send: (OpaquePointer) -> Int32) throws -> [[String?]] {
        guard let raw else { throw PostgresError("the connection is closed") }
        let sent = send(raw)
        guard sent == 1 else { throw PostgresError(String(cString: PQerrorMessage(raw)).trimmingCharacters(in: .whitespacesAndNewlines)) }
        var pfd = pollfd(fd: PQsocket(raw), events: Int16(POLLIN), revents: 0)
        while PQisBusy(raw) == 1 {
            let left = deadline - ContinuousClock.now
            guard left > .zero else {
                // Nothing more may come: cancel what runs (the server may be alive) and drop the session.
                if cancelling { cancel() }
                PQfinish(raw)
                self.raw = nil
                throw PostgresError(sqlState: "57014", "PostgreSQL did not answer within \(timeout)")
            }
            pfd.revents = 0
            let milliseconds = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000
            _ = poll(&pfd, 1, Int32(max(1, min(milliseconds, 1000))))
            guard PQconsumeInput(raw) == 1 else {
                throw PostgresError(String(cString: PQerrorMessage(raw)).trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        var outcome: Result<[[String?]], Error> = .failure(PostgresError("the query returned no result"))
        while let result = PQgetResult(raw) {
            outcome = Result { try Self.rows(result, raw) }
        }
        return try outcome.get()
    }

    private func blockingQuery(_ sql: String, _ parameters: [String?]) throws -> [[String?]] {
        guard let raw else { throw PostgresError("the connection is closed") }
        let cStrings: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        let result: OpaquePointer? = cStrings.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buffer.count, 1)) { values in
                PQexecParams(raw, sql, Int32(parameters.count), nil, parameters.isEmpty ? nil : values, nil, nil, 0)
            }
        }
        return try Self.rows(result, raw)
    }

    private static func rows(_ result: OpaquePointer?, _ raw: OpaquePointer) throws -> [[String?]] {
        guard let result else {
            throw PostgresError(String(cString: PQerrorMessage(raw)).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
            var rows: [[String?]] = []
            let columns = PQnfields(result)
            for r in 0..<PQntuples(result) {
                var row: [String?] = []
                for c in 0..<columns {
                    row.append(PQgetisnull(result, r, c) == 1 ? nil : String(cString: PQgetvalue(result, r, c)))
                }
                rows.append(row)
            }
            return rows
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let message = String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
            throw PostgresError(sqlState: state, message.isEmpty ? "query failed" : message)
        }
    }
}

/// Builds libpq connection strings with every value quoted, so that no value can add a keyword.
public enum ConnInfo {
    /// `key='value'` pairs in order, each value quoted and escaped as libpq requires.
    public static func make(_ pairs: [(String, String)]) -> String {
        pairs.map { key, value in
            "\(key)='" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        }.joined(separator: " ")
    }
}
