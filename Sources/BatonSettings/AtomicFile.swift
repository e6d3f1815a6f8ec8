import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writes generated files the safe way: only when the content changes, through a temporary file in the
/// same directory that is fsync'd and renamed over the target, with a tight mode and owner.
public enum AtomicFile {
    /// Why a file could not be written.
    public struct WriteError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Writes `contents` to `path` unless it already holds exactly that.
    /// - Parameters:
    ///   - mode: the file's permission bits (e.g. 0o600 for secrets, 0o644 for configs).
    ///   - owner: an OS user to own the file when running as root (PostgreSQL's files belong to it).
    ///   - durable: whether to fsync the file and its directory. Only for files that mean nothing after
    ///     a crash of the machine (the monitor's heartbeat file): readers still see the old or the new
    ///     content, never a mix, but a power loss may leave either — or an empty file.
    /// - Returns: whether the file changed.
    @discardableResult
    public static func write(_ contents: String, to path: String, mode: mode_t, owner: String? = nil, durable: Bool = true) throws -> Bool {
        try write(Data(contents.utf8), to: path, mode: mode, owner: owner, durable: durable)
    }

    /// Writes `data` to `path` unless it already holds exactly that (see the text form).
    @discardableResult
    public static func write(_ data: Data, to path: String, mode: mode_t, owner: String? = nil, durable: Bool = true) throws -> Bool {
        if let existing = FileManager.default.contents(atPath: path), existing == data {
            try applyOwnership(path, mode: mode, owner: owner)
            return false
        }
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temporary = directory + "/." + (path as NSString).lastPathComponent + ".baton-tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw WriteError(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        var ok = data.withUnsafeBytes { buffer -> Bool in
            var written = 0
            while written < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + written, buffer.count - written)
                if n < 0 { if errno == EINTR { continue }; return false }
                written += n
            }
            return true
        }
        ok = ok && fchmod(fd, mode) == 0 && (!durable || fsync(fd) == 0)
        close(fd)
        guard ok else {
            unlink(temporary)
            throw WriteError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        try applyOwnership(temporary, mode: mode, owner: owner)
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw WriteError(description: "cannot replace \(path): \(String(cString: strerror(errno)))")
        }
        guard durable else { return true }
        let dir = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { fsync(dir); close(dir) }
        return true
    }

    static func applyOwnership(_ path: String, mode: mode_t, owner: String?) throws {
        chmod(path, mode)
        guard let owner, getuid() == 0 else { return }
        guard let entry = getpwnam(owner) else { throw WriteError(description: "OS user \(owner) does not exist") }
        guard chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
            throw WriteError(description: "cannot give \(path) to \(owner): \(String(cString: strerror(errno)))")
        }
    }

    /// Creates `path` (and parents) owned by `owner` with `mode`, if missing.
    public static func ensureDirectory(_ path: String, mode: mode_t, owner: String?) throws {
        if !FileManager.default.fileExists(atPath: path) {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        try applyOwnership(path, mode: mode, owner: owner)
    }
}
