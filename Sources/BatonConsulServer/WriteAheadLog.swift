import BatonConsulStore
import ConsulAPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why the server's data directory cannot be used.
public struct DataDirectoryError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The server's durable storage: a snapshot plus an append-only log of writes.
///
/// Each record is `length (u32 LE) | CRC-32 (u32 LE) | JSON`, written and fsync'd before the write is
/// acknowledged. A record torn by a crash can only be the last one: it is detected by its length or
/// checksum and cut off on start-up, never loaded in part. A bad record followed by good ones is not a
/// torn write but damage, and the server refuses to start rather than drop acknowledged writes.
final class WriteAheadLog {
    private let directory: URL
    private var logFD: Int32 = -1
    private var lockFD: Int32 = -1
    private(set) var logSize: Int = 0
    /// Compact the log into a snapshot once it grows past this many bytes.
    let compactionThreshold = 32 << 20

    private var logPath: String { directory.appendingPathComponent("raft.log").path }
    private var snapshotPath: String { directory.appendingPathComponent("state.snapshot").path }

    init(directory: String) throws {
        self.directory = URL(fileURLWithPath: directory)
        do {
            try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DataDirectoryError(message: "cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        lockFD = open(self.directory.appendingPathComponent("LOCK").path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw DataDirectoryError(message: "cannot open \(directory)/LOCK: \(String(cString: strerror(errno)))") }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(lockFD)
            throw DataDirectoryError(message: "another server is already using the data directory \(directory); stop it or choose another --data-dir")
        }
    }

    deinit { close() }

    /// Closes the log and releases the data directory's lock.
    func close() {
        if logFD >= 0 { Glibc.close(logFD) }
        if lockFD >= 0 { Glibc.close(lockFD) }
        logFD = -1
        lockFD = -1
    }

    /// Loads the snapshot and replays the log. Returns the state and a note on any torn tail cut off.
    func recover(now: ContinuousClock.Instant) throws -> (State, String?) {
        var state = State()
        if let data = FileManager.default.contents(atPath: snapshotPath) {
            let bytes = [UInt8](data)
            guard case .record(let payload, _) = WriteAheadLog.readRecord(bytes, at: 0) else {
                throw DataDirectoryError(message: "the snapshot \(snapshotPath) is damaged; restore the data directory from a backup or move it aside to start empty")
            }
            state = try ChangeCoding.restore(snapshot: try JSONValue.parse(payload), now: now)
        }
        var note: String? = nil
        let bytes = [UInt8](FileManager.default.contents(atPath: logPath) ?? Data())
        var offset = 0
        loop: while offset < bytes.count {
            switch WriteAheadLog.readRecord(bytes, at: offset) {
            case .record(let payload, let next):
                let (index, changes) = try ChangeCoding.decode(try JSONValue.parse(payload))
                if index > state.index { state.apply(changes, index: index, now: now) }
                offset = next
            case .torn:
                note = "cut off a write torn by a crash at the end of the log (\(bytes.count - offset) bytes at offset \(offset)); it was never acknowledged"
                break loop
            case .damaged:
                throw DataDirectoryError(message: "the log \(logPath) is damaged at offset \(offset) with good records after it; restore the data directory from a backup")
            }
        }
        logFD = open(logPath, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard logFD >= 0 else { throw DataDirectoryError(message: "cannot open \(logPath): \(String(cString: strerror(errno)))") }
        if offset < bytes.count {
            guard ftruncate(logFD, off_t(offset)) == 0, fsync(logFD) == 0 else {
                throw DataDirectoryError(message: "cannot cut the torn tail off \(logPath): \(String(cString: strerror(errno)))")
            }
        }
        lseek(logFD, off_t(offset), SEEK_SET)
        logSize = offset
        return (state, note)
    }

    /// Appends one write and makes it durable.
    func append(_ record: JSONValue) throws {
        let framed = WriteAheadLog.frame(record.serializedBytes())
        try framed.withUnsafeBytes { buffer in
            var written = 0
            while written < buffer.count {
                let n = write(logFD, buffer.baseAddress! + written, buffer.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw DataDirectoryError(message: "cannot write the log: \(String(cString: strerror(errno)))")
                }
                written += n
            }
        }
        guard fdatasync(logFD) == 0 else { throw DataDirectoryError(message: "cannot sync the log: \(String(cString: strerror(errno)))") }
        logSize += framed.count
    }

    /// Replaces the snapshot with `state` and empties the log, each step durable before the next.
    func compact(_ state: State) throws {
        let temporary = snapshotPath + ".tmp"
        let framed = WriteAheadLog.frame(ChangeCoding.snapshot(of: state).serializedBytes())
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DataDirectoryError(message: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        let ok = framed.withUnsafeBytes { buffer -> Bool in
            var written = 0
            while written < buffer.count {
                let n = write(fd, buffer.baseAddress! + written, buffer.count - written)
                if n < 0 { if errno == EINTR { continue }; return false }
                written += n
            }
            return fsync(fd) == 0
        }
        guard ok, rename(temporary, snapshotPath) == 0 else {
            throw DataDirectoryError(message: "cannot write the snapshot: \(String(cString: strerror(errno)))")
        }
        let dir = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { fsync(dir); Glibc.close(dir) }
        // Records already in the snapshot are skipped on replay, so a crash before this truncation is safe.
        guard ftruncate(logFD, 0) == 0, fsync(logFD) == 0 else {
            throw DataDirectoryError(message: "cannot empty the log after a snapshot: \(String(cString: strerror(errno)))")
        }
        lseek(logFD, 0, SEEK_SET)
        logSize = 0
    }

    static func frame(_ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 8)
        let length = UInt32(payload.count)
        let crc = CRC32.checksum(payload)
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: length >> UInt32(shift))) }
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        out += payload
        return out
    }

    enum ReadResult: Equatable {
        case record(payload: [UInt8], next: Int)
        /// An incomplete or bad last record: a write torn by a crash.
        case torn
        /// A bad record with more data after it.
        case damaged
    }

    static func readRecord(_ bytes: [UInt8], at offset: Int) -> ReadResult {
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << UInt32(8 * $1) } }
        guard offset + 8 <= bytes.count else { return .torn }
        let length = Int(u32(offset))
        let crc = u32(offset + 4)
        let end = offset + 8 + length
        guard end <= bytes.count else { return .torn }
        let payload = Array(bytes[offset + 8..<end])
        if length > 0, CRC32.checksum(payload) == crc { return .record(payload: payload, next: end) }
        // A bad record is a torn write if nothing but it (or zeros a crash left) follows.
        let rest = bytes[end...]
        if rest.isEmpty || rest.allSatisfy({ $0 == 0 }) { return .torn }
        if length == 0 && bytes[offset...].allSatisfy({ $0 == 0 }) { return .torn }
        return .damaged
    }
}

/// CRC-32 (IEEE 802.3), the checksum of each log record.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
