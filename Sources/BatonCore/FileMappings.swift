/// The mappings of a process, read from `/proc/PID/smaps`, as far as trimming its resident code needs them.
public struct FileMapping: Equatable, Sendable {
    public var start: UInt
    public var end: UInt
    public var permissions: String
    public var path: String
    /// Pages of the mapping that are the process's own copies (written, or relocated): kB.
    public var anonymousKB: Int
    public var residentKB: Int
    public var locked: Bool

    /// Whether the process may drop its resident pages of this mapping without losing anything: a private,
    /// read-only mapping of a file that holds no page of its own (no relocated or written page) and is not
    /// locked. Its pages are the file's; dropping them only unmaps them here, the next access maps them
    /// again from the page cache.
    public var mayBeDropped: Bool {
        let p = Array(permissions)
        return p.count == 4 && p[0] == "r" && p[1] == "-" && p[3] == "p" && path.hasPrefix("/") && anonymousKB == 0 && !locked
    }

    /// Parses smaps text; mappings whose header or counters cannot be read are left out.
    public static func parse(smaps: String) -> [FileMapping] {
        var mappings: [FileMapping] = []
        for line in smaps.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if let dash = first.firstIndex(of: "-"), fields.count >= 5,
                let start = UInt(first[..<dash], radix: 16), let end = UInt(first[first.index(after: dash)...], radix: 16)
            {
                let path = fields.count >= 6 ? fields[5...].joined(separator: " ") : ""
                mappings.append(
                    FileMapping(start: start, end: end, permissions: String(fields[1]), path: path, anonymousKB: -1, residentKB: 0, locked: false))
                continue
            }
            guard !mappings.isEmpty, fields.count >= 2 else { continue }
            switch first {
            case "Anonymous:": mappings[mappings.count - 1].anonymousKB = Int(fields[1]) ?? -1
            case "Rss:": mappings[mappings.count - 1].residentKB = Int(fields[1]) ?? 0
            case "Locked:": mappings[mappings.count - 1].locked = (Int(fields[1]) ?? 1) != 0 || mappings[mappings.count - 1].locked
            case "VmFlags:": if fields.contains("lo") { mappings[mappings.count - 1].locked = true }
            default: break
            }
        }
        // A mapping without an Anonymous line was not fully read: keep it out of anything that trims.
        return mappings.filter { $0.anonymousKB >= 0 }
    }
}
