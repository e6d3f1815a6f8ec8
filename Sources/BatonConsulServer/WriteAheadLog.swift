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
/// The log starts with the line `BATON-WAL 2`; each record is `length (u32 LE) | CRC-32 of the JSON
/// (u32 LE) | CRC-32 of those eight bytes (u32 LE) | JSON`, written and fsync'd before the write is
/// acknowledged. A record torn by a crash can only be the last one: it is detected by its length or
/// checksum and cut off on start-up, never loaded in part. A bad record followed by good ones is not a
/// torn write but damage, and the server refuses to start rather than drop acknowledged writes — the
/// header's own checksum makes a damaged length field damage too, where it once read as a torn tail
/// and cut off every write after it (issue 23, finding 11). Logs and snapshots of the first format
/// (no magic line, no header checksum) are still read.
final class WriteAheadLog {
    private let directory: URL
    private var logFD: Int32 = -1
    private var lockFD: Int32 = -1
    private(set) var logSize: Int = 0
    /// Compact the log into a snapshot once it grows past this many bytes.
    let compactionThreshold = 32 << 20

    /// Whether the log on disk is of the first format (written by an earlier Baton): appended to in it.
    private var legacyLog = false
    private var logPath: String { directory.appendingPathComponent("raft.log").path }
    private var snapshotPath: String { directory.appendingPathComponent("state.snapshot").path }

    init(directory: String) throws {
        self.directory = URL(fileURLWithPath: directory)
        do {
            try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DataDirectoryError(message: "cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        // The directory's own entry made durable, as the log's is once it is created.
        Self.syncDirectory(self.directory.deletingLastPathComponent().path)
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
            let format = Format(of: bytes)
            guard case .record(let payload, _) = WriteAheadLog.readRecord(bytes, at: format.start, format: format) else {
                throw DataDirectoryError(message: "the snapshot \(snapshotPath) is damaged; restore the data directory from a backup or move it aside to start empty")
            }
            state = try ChangeCoding.restore(snapshot: try JSONValue.parse(payload), now: now)
        }
        var note: String? = nil
        let existed = FileManager.default.fileExists(atPath: logPath)
        let bytes = [UInt8](FileManager.default.contents(atPath: logPath) ?? Data())
        let format = Format(of: bytes)
        legacyLog = format == .first && !bytes.isEmpty
        var offset = format.start
        loop: while offset < bytes.count {
            switch WriteAheadLog.readRecord(bytes, at: offset, format: format) {
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
        if !existed { Self.syncDirectory(directory.path) }
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
        let format: Format = legacyLog ? .first : .second
        let framed = (logSize == 0 ? format.magic : []) + WriteAheadLog.frame(record.serializedBytes(), format: format)
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
        let framed = Format.second.magic + WriteAheadLog.frame(ChangeCoding.snapshot(of: state).serializedBytes(), format: .second)
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
        Self.syncDirectory(directory.path)
        // Records already in the snapshot are skipped on replay, so a crash before this truncation is safe.
        guard ftruncate(logFD, 0) == 0, fsync(logFD) == 0 else {
            throw DataDirectoryError(message: "cannot empty the log after a snapshot: \(String(cString: strerror(errno)))")
        }
        lseek(logFD, 0, SEEK_SET)
        logSize = 0
        legacyLog = false
    }

    /// Makes a directory's entries durable (a file created or renamed in it).
    static func syncDirectory(_ path: String) {
        let dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { return }
        fsync(dir)
        Glibc.close(dir)
    }

    /// The two record formats: the first (`length | CRC`) and the second, whose header has a checksum
    /// of its own, announced by a magic line at the start of the file.
    enum Format: Equatable {
        case first, second

        static let magicLine = Array("BATON-WAL 2\n".utf8)

        init(of bytes: [UInt8]) {
            self = bytes.starts(with: Self.magicLine) ? .second : .first
        }

        var magic: [UInt8] { self == .second ? Self.magicLine : [] }
        var start: Int { magic.count }
        var headerSize: Int { self == .second ? 12 : 8 }
    }

    static func frame(_ payload: [UInt8], format: Format) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + format.headerSize)
        func append(_ value: UInt32) {
            for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
        }
        append(UInt32(payload.count))
        append(CRC32.checksum(payload))
        if format == .second { append(CRC32.checksum(out)) }
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

    static func readRecord(_ bytes: [UInt8], at offset: Int, format: Format) -> ReadResult {
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << UInt32(8 * $1) } }
        let headerSize = format.headerSize
        guard offset + headerSize <= bytes.count else { return .torn }
        if format == .second, CRC32.checksum(Array(bytes[offset..<offset + 8])) != u32(offset + 8) {
            // A header torn by a crash is the last bytes of the file, or zeros the crash left.
            return bytes[offset...].allSatisfy({ $0 == 0 }) ? .torn : .damaged
        }
        let length = Int(u32(offset))
        let crc = u32(offset + 4)
        let end = offset + headerSize + length
        guard end <= bytes.count else { return .torn }
        let payload = Array(bytes[offset + headerSize..<end])
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
